"""The Ray runtime of a study: where its state goes (local directory or S3 through pyarrow), how it
reaches Ray (a local Ray it starts, or a cluster at ``tuning.ray_address``), what each trial
asks for, and which scheduler runs. Imports Ray only inside functions."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any, Mapping, TypeGuard
from urllib.parse import urlparse

from tasks.errors import ConfigError
from tasks.ray_security import warn_if_token_auth_off
from tasks.seeding import derive_seed
from tasks.store.config import StoreConfig
from tasks.tuning.config import TuningConfig


def s3_filesystem(store: StoreConfig):
    """A ``pyarrow.fs.S3FileSystem`` for the store's endpoint (scheme http/https from its URL)."""
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {}
    if store.endpoint_url:
        ep = urlparse(store.endpoint_url)
        if ep.scheme not in ("http", "https") or not ep.netloc:
            raise ConfigError(f"store.endpoint_url must be http(s)://host[:port], got {store.endpoint_url!r}")
        kwargs.update(endpoint_override=ep.netloc, scheme=ep.scheme)
    if store.region:
        kwargs["region"] = store.region
    if store.access_key_id is not None and store.secret_access_key is not None:
        kwargs.update(
            access_key=store.access_key_id.get_secret_value(), secret_key=store.secret_access_key.get_secret_value()
        )
    return pafs.S3FileSystem(**kwargs)


def tune_storage(store: StoreConfig, subpath: str):
    """(storage_path, pyarrow filesystem or None, URI for humans) of Tune's results in the store.

    Uses ``tasks.store.backends.pyarrow_filesystem`` when the store package provides it, else
    builds the S3 filesystem here (same contract).
    """
    if any(part in ("", ".", "..") for part in subpath.strip("/").split("/")):
        # Also checked by TuningConfig; repeated here for configurations built with model_copy.
        raise ConfigError(
            f"tuning.storage_subpath {subpath!r} must be a relative path inside the store "
            "(no '.', '..' or empty segments)"
        )
    uri = store.uri
    if uri.startswith("s3://"):
        try:
            from tasks.store.backends import pyarrow_filesystem  # the store's own adapter, when present
        except ImportError:
            parsed = urlparse(uri)
            if not parsed.netloc:
                raise ConfigError(f"store.uri {uri!r}: no bucket name") from None
            path = "/".join(p for p in (parsed.netloc, parsed.path.strip("/"), subpath.strip("/")) if p)
            fs = s3_filesystem(store)
        else:
            fs, path = pyarrow_filesystem(store, subpath)
        return path, fs, f"s3://{path}"
    if uri.startswith("file://"):
        uri = urlparse(uri).path
    elif "://" in uri:
        raise ConfigError(f"store.uri {store.uri!r}: use a local path, file:// or s3://")
    local = Path(uri).expanduser().resolve() / subpath
    local.mkdir(parents=True, exist_ok=True)
    return str(local), None, str(local)


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast, naming ``tuning.ray_address``, when a cluster address does not answer on TCP."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"gcs://{address}")
    default_port = 10001 if parsed.scheme == "ray" else 6379
    try:
        host, port = parsed.hostname, parsed.port or default_port
    except ValueError as e:
        raise ConfigError(f"tuning.ray_address {address!r} is malformed: {e}") from None
    if not host:
        raise ConfigError(f"tuning.ray_address {address!r} has no host")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigError(
            f"tuning.ray_address {address!r} is unreachable ({host}:{port}: {e}); "
            "start the cluster or unset tuning.ray_address to run a local Ray"
        ) from None


def connect_ray(cfg: TuningConfig) -> bool:
    """Connect to ``tuning.ray_address`` or start a local Ray; True when this call initialised Ray
    (the caller then shuts it down). An already initialised Ray is reused as is."""
    import ray

    if ray.is_initialized():
        return False
    if is_remote(cfg.ray_address):
        check_ray_address(cfg.ray_address)
        try:
            ray.init(address=cfg.ray_address, log_to_driver=False)
        except Exception as e:  # ConnectionError, AuthenticationError: report it as the config's fault
            raise connect_error(cfg.ray_address, e) from None
        try:
            check_cluster(cfg.ray_address)
        except BaseException:
            ray.shutdown()
            raise
        return True
    # Local Ray: every CPU and GPU of this machine; no dashboard, no Ray Client server, and token
    # authentication when the process set it up before importing Ray (tasks/ray_security.py).
    # address="local" always starts a new instance: without it ray.init joins whatever RAY_ADDRESS
    # or Ray's ray_current_cluster file (left in /tmp/ray by any `ray start` on the machine, also a
    # long-dead one) names.
    warn_if_token_auth_off()
    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
    )
    return True


def is_remote(address: str | None) -> TypeGuard[str]:
    """Whether ``tuning.ray_address`` names a cluster (its nodes do not share this machine's disk)."""
    return bool(address) and address != "local"


AUTH_HELP = (
    "Ray token authentication must agree between the cluster and this driver: for a cluster "
    "started with RAY_AUTH_MODE=token (recommended), set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to "
    "the cluster's token here (the `driftloop` command otherwise makes up a token for a local Ray); "
    "for a cluster without token authentication, set RAY_AUTH_MODE=disabled here"
)


def connect_error(address: str, err: BaseException) -> ConfigError:
    """A failed ``ray.init(address)`` as a ConfigError that says what to set.

    Called after :func:`check_ray_address` found the GCS port answering, so a refused connection
    is almost always authentication: Ray 2.55 then raises "Failed to connect to Ray cluster" after
    ~20 s and logs "Unauthenticated: InvalidAuthToken" only to stderr.
    """
    text = str(err).strip()
    first = (text.splitlines() or [type(err).__name__])[0][:300]
    if isinstance(err, ConnectionError) or "Unauthenticated" in text or "authentication" in text.lower():
        return ConfigError(
            f"tuning.ray_address {address!r}: the cluster refused this driver's Ray token, or it has "
            f"none ({first}; its port answers, so the token is the usual cause). {AUTH_HELP}"
        )
    return ConfigError(f"tuning.ray_address {address!r}: cannot connect: {text[:500]}")


def check_cluster(address: str, timeout: float = 60.0) -> None:
    """Before the first trial: start one tiny actor on the cluster and call it.

    A driver with token authentication on a cluster without it is accepted by the GCS and can run
    tasks, but every actor it creates (each trial is one) is cancelled before it runs ("The actor
    never ran"); a node image without driftloop fails the same probe with an ImportError. Both are
    reported here, naming what to set, instead of as failed trials.
    """
    import ray

    class _Probe:
        def ping(self) -> str:
            import tasks.tuning.trainable  # noqa: F401  the trials' code must be importable on the nodes

            return ray.get_runtime_context().get_node_id()

    # Ray's actor handles are not typed for mypy (their methods' .remote), hence Any.
    probe: Any = ray.remote(num_cpus=0)(_Probe)
    actor = probe.remote()
    try:
        ray.get(actor.ping.remote(), timeout=timeout)
    except ray.exceptions.ActorDiedError:
        from tasks.ray_security import token_auth_active

        mode = "with" if token_auth_active() else "without"
        raise ConfigError(
            f"tuning.ray_address {address!r}: the cluster accepted this driver (running {mode} "
            "token authentication) but cancelled its actors, which is what Ray does when the "
            f"cluster's authentication mode differs from the driver's. {AUTH_HELP}"
        ) from None
    except ray.exceptions.RayTaskError as e:
        raise ConfigError(
            f"tuning.ray_address {address!r}: the cluster's nodes cannot run driftloop's trials "
            f"({str(e).strip().splitlines()[-1][:300]}); install driftloop in the node image "
            "(infra/ray/README.md)"
        ) from None
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(
            f"tuning.ray_address {address!r}: a probe actor needing no resources did not start within "
            f"{timeout:.0f} s; check that the cluster's nodes are alive (`ray status`)"
        ) from None
    finally:
        ray.kill(actor)


def trial_resources(cfg: TuningConfig, cluster: Mapping[str, float], local: bool) -> dict[str, float]:
    """CPU and GPU per trial. ``gpu: "auto"`` gives 1/k of a GPU (k trials run at once, k from
    the CPUs or max_concurrent_trials) when the cluster has GPUs, else none."""
    cpu = float(cfg.resources_per_trial.cpu)
    gpus, cpus = float(cluster.get("GPU", 0.0)), float(cluster.get("CPU", 0.0))
    gpu = cfg.resources_per_trial.gpu
    if gpu == "auto":
        if gpus > 0:
            concurrent = max(1, int(cpus // cpu) if cpus else 1)
            if cfg.max_concurrent_trials:
                concurrent = min(concurrent, cfg.max_concurrent_trials)
            share = min(1.0, gpus / concurrent)
            gpu = 1.0 / math.ceil(1.0 / share)  # a share that divides a GPU evenly
        else:
            gpu = 0.0
    gpu = float(gpu)
    if local:  # on a local Ray nothing autoscales: a request larger than the machine never runs
        if cpu > cpus:
            raise ConfigError(f"tuning.resources_per_trial.cpu={cpu} but this machine's Ray has {cpus:g} CPUs")
        if gpu > gpus:
            raise ConfigError(f"tuning.resources_per_trial.gpu={gpu} but this machine's Ray has {gpus:g} GPUs")
    return {"cpu": cpu, "gpu": gpu}


def _make_scheduler(cfg: TuningConfig, seed: int, configurations: list[dict] | None = None):
    """(scheduler, search algorithm) for ``tuning.scheduler``; time is counted in ``epoch``.
    ``configurations`` are tried first, in order (Tune's ``points_to_evaluate``)."""
    points = [dict(c) for c in configurations] if configurations else None
    if cfg.scheduler == "hyperband":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        from tasks.tuning.ray_hooks import BracketTaggingHyperBand

        return (
            BracketTaggingHyperBand(time_attr="epoch", max_t=cfg.max_t, reduction_factor=cfg.eta),
            BasicVariantGenerator(random_state=derive_seed(seed, "tune", "sampler"), points_to_evaluate=points),
        )
    if cfg.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return (
            ASHAScheduler(time_attr="epoch", max_t=cfg.max_t, grace_period=1, reduction_factor=cfg.eta, brackets=1),
            BasicVariantGenerator(random_state=derive_seed(seed, "tune", "sampler"), points_to_evaluate=points),
        )
    if cfg.scheduler == "bohb":
        from ray.tune.search.bohb import TuneBOHB

        from tasks.tuning.ray_hooks import SnapshotSafeBOHB

        return (
            SnapshotSafeBOHB(time_attr="epoch", max_t=cfg.max_t, reduction_factor=cfg.eta),
            TuneBOHB(seed=derive_seed(seed, "tune", "sampler"), points_to_evaluate=points),
        )
    raise ConfigError(f"tuning.scheduler: unknown scheduler {cfg.scheduler!r}")
