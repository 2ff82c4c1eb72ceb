"""Token authentication for the local Ray instances driftloop starts (Ray Tune, Flower simulation).

Ray runs arbitrary code for anyone who reaches its ports, and a local Ray 2.55 cannot be confined
to loopback: ``ray.init`` turns ``127.0.0.1`` into the machine's address
(``ray._private.services.resolve_ip_for_localhost``) and the GCS, raylet and worker gRPC servers
listen on every interface. What it does offer since 2.52 is token authentication: with
``RAY_AUTH_MODE=token`` every gRPC call must carry ``RAY_AUTH_TOKEN``. driftloop therefore puts a
fresh random token into the environment of each process that may start a local Ray, *before*
that process imports Ray (Ray reads ``RAY_AUTH_MODE`` once, at import): ``driftloop``'s entry point
(:func:`flows.cli.prepare_environment`), the Flower simulation subprocess
(:func:`tasks.federated.engine.simulation_env`) and the test session. The Ray processes inherit
it; nothing writes it to disk or logs it. With no dashboard and no Ray Client server, a process
that does not hold the token cannot join the instance or submit work to it
(tests/reliability/test_security_defaults.py).

A remote cluster (``tuning.ray_address``) keeps its own authentication settings: these
functions are only for a Ray that driftloop starts itself. A token the user already set
(``RAY_AUTH_MODE`` in the environment) is respected as is.
"""

from __future__ import annotations

import os
import secrets
from typing import MutableMapping

AUTH_MODE_VAR = "RAY_AUTH_MODE"
AUTH_TOKEN_VAR = "RAY_AUTH_TOKEN"


def token_auth_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The variables that turn on token authentication for a Ray started with ``environ``:
    empty when the user configured Ray authentication already, else ``RAY_AUTH_MODE=token`` and
    a new 256-bit random token (never logged, never written to a file)."""
    environ = os.environ if environ is None else environ
    if environ.get(AUTH_MODE_VAR):
        return {}
    return {AUTH_MODE_VAR: "token", AUTH_TOKEN_VAR: secrets.token_hex(32)}


def enable_token_auth(environ: MutableMapping[str, str] | None = None) -> bool:
    """Put :func:`token_auth_env` into ``environ`` (this process's environment by default) before a
    local ``ray.init``; True when it turned authentication on here."""
    environ = os.environ if environ is None else environ
    extra = token_auth_env(environ)
    environ.update(extra)
    return bool(extra)


def token_auth_active() -> bool:
    """Whether Ray in this process runs with token authentication (fixed when Ray was imported)."""
    from ray._raylet import AuthenticationMode, get_authentication_mode  # type: ignore[attr-defined]  # Cython module

    return get_authentication_mode() == AuthenticationMode.TOKEN


def warn_if_token_auth_off() -> None:
    """Before a local ``ray.init``: say so when this process's Ray has no token authentication
    (Ray was imported before :func:`enable_token_auth` ran, or the user turned it off)."""
    import logging

    if not token_auth_active():
        logging.getLogger("driftloop.ray").warning(
            "starting a local Ray WITHOUT token authentication: any process that reaches its ports can run code "
            "in it. Set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN before Python imports ray (the `driftloop` command "
            "does this for you)."
        )
