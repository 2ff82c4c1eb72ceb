"""What every ``driftloop`` command shares: the common options, loading the settings, JSON output,
and the one place where driftloop's errors become exit codes (:func:`exits`).

Exit codes: 0 success; 1 the work ran and failed (a batch failed validation, a flow failed, a server
refused, an object is missing); 2 bad usage or configuration (unknown flow, malformed config, bad
parameter, no server to talk to); 3 ``run drift-check`` ran but quarantined some batches.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, TypeVar

import typer

from tasks.errors import ConfigError, DriftloopError

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML or YAML config file (DRIFTLOOP_CONFIG also works).")
ParamOpt = typer.Option(
    None, "--param", "-p", help="Override a config key: -p training.epochs=5 (value parsed as JSON)."
)
SmokeOpt = typer.Option(False, "--smoke", help="Use the smoke profile: tiny budgets, finishes in well under a minute.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON output.")


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print ``error: msg`` in red on stderr and exit with ``code``."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def exits(usage: int = 2, failure: int = 1, usage_errors: tuple[type[Exception], ...] = ()) -> Callable[[F], F]:
    """Decorate a command so driftloop's errors end it with a message and an exit code, not a traceback.

    A :class:`ConfigError` (and any of ``usage_errors``, e.g. "no server to deploy to") exits ``usage``;
    any other :class:`DriftloopError` exits ``failure``. Commands whose configuration errors surface
    only while doing the work (reading a store, a registry) pass ``usage=1``, as they always did.
    ``typer.Exit`` and unexpected exceptions pass through. ``functools.wraps`` keeps the signature,
    which is what Typer reads the options from.
    """

    usage_types: tuple[type[Exception], ...] = (ConfigError, *usage_errors)

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except usage_types as e:
                fail(str(e), usage)
            except DriftloopError as e:
                fail(str(e), failure)

        command.exit_codes = {"usage": usage, "failure": failure}  # type: ignore[attr-defined]  # for tests
        return command  # type: ignore[return-value]

    return wrap


def parse_params(params: list[str] | None) -> dict[str, Any]:
    """``--param key.path=value`` pairs as overrides; a value is JSON when it parses, else a string."""
    out: dict[str, Any] = {}
    for p in params or []:
        if "=" not in p:
            fail(f"--param {p!r}: expected key.path=value, e.g. --param training.epochs=5")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def load(config: Optional[Path], params: list[str] | None, smoke: bool = False):
    """The typed settings from --config, --param and --smoke; a bad configuration exits 2 (every command)."""
    from tasks.settings import load_settings

    try:
        return load_settings(config_file=config, profile="smoke" if smoke else None, overrides=parse_params(params))
    except ConfigError as e:
        fail(str(e))


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))
