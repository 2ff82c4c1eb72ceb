"""Hyperparameter search on Ray Tune: synchronous Hyperband by default (Li et al., JMLR 2018),
ASHA or BOHB by configuration.

The trainable is a thin adapter (ARCHITECTURE.md rule 5) around the plain
``tasks.models.train.train_one_epoch`` + ``evaluate``: one epoch per ``tune.report``, a
checkpoint (model and optimizer state dicts, ``torch.save``; read back with
``weights_only=True``) with every report, restored from ``tune.get_checkpoint()`` — Hyperband
pauses trials at rung boundaries and resumes the promoted ones, and a failing trial is retried
from its last checkpoint (``FailureConfig``). Data goes in with ``tune.with_parameters``.

Seeds: trial seed ``derive_seed(seed, "trial", <hash of the sampled config>)`` (model init);
epoch ``e`` shuffles with ``derive_seed(trial_seed, "epoch", e)`` as ``tasks.models.train.fit``
does and draws dropout masks from ``derive_seed(trial_seed, "torch", e)``, so a trial paused and
resumed (or retried) trains exactly as an uninterrupted one; the sampler is seeded from
``derive_seed(seed, "tune", "sampler")``. With the synchronous HyperBandScheduler a study is
reproducible (ASHA's decisions depend on timing).

Ray 2.55.1's HyperBandScheduler needs help to pause, retry and restore safely; see
``tasks.tuning.ray_hooks.BracketTaggingHyperBand`` (the scheduler used for ``hyperband``).

Nothing here imports prefect; the Prefect task is ``tasks.tuning.steps.tune_hyperparameters``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import numpy as np

from tasks.data.sources import Splits, fingerprint
from tasks.errors import ConfigError, DriftloopError
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.ray_security import warn_if_token_auth_off
from tasks.seeding import derive_seed
from tasks.store.config import StoreConfig
from tasks.tuning.config import TuningConfig
from tasks.tuning.plan import check_plan_args, ray_hyperband_plan, ray_rung_milestones

# Which section each searchable parameter belongs to.
MODEL_PARAMS = ("arch", "width", "depth", "dropout")
TRAINING_PARAMS = ("lr", "batch_size", "weight_decay", "optimizer", "momentum")
SPACE_TYPES = ("loguniform", "uniform", "randint", "choice")
SCHEDULERS = ("hyperband", "asha", "bohb")
METRICS = ("val_accuracy", "val_loss")

STATE_FILE = "state.pt"
META_FILE = "meta.json"


# --------------------------------------------------------------------------- validation


def validate_search_space(space: Mapping[str, Any], base_model: ModelConfig | None = None,
                          base_training: TrainingConfig | None = None) -> None:
    """Raise :class:`ConfigError` naming ``tuning.search_space.<param>`` for anything invalid.

    Checks: a non-empty mapping; known parameter names; known distribution types with their
    keys; ``low < high`` (``low > 0`` for loguniform); non-empty choices; and that the bounds and
    every choice are values the model/training configuration accepts.
    """
    base_model = base_model or ModelConfig()
    base_training = base_training or TrainingConfig()
    if not isinstance(space, Mapping) or not space:
        raise ConfigError("tuning.search_space is empty: give at least one parameter to search "
                          f"(any of {', '.join(MODEL_PARAMS + TRAINING_PARAMS)})")
    for name, spec in space.items():
        key = f"tuning.search_space.{name}"
        if name not in MODEL_PARAMS + TRAINING_PARAMS:
            raise ConfigError(f"{key}: unknown parameter; searchable are {', '.join(MODEL_PARAMS + TRAINING_PARAMS)}")
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ConfigError(f"{key}: must be a mapping with a 'type' ({', '.join(SPACE_TYPES)})")
        kind = spec["type"]
        if kind not in SPACE_TYPES:
            raise ConfigError(f"{key}.type: unknown distribution {kind!r}; use one of {', '.join(SPACE_TYPES)}")
        if kind == "choice":
            extra = set(spec) - {"type", "values"}
            values = spec.get("values")
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ConfigError(f"{key}.values: a choice needs a non-empty list of values")
            probes = list(values)
        else:
            extra = set(spec) - {"type", "low", "high"}
            lo, hi = spec.get("low"), spec.get("high")
            for bound, v in (("low", lo), ("high", hi)):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ConfigError(f"{key}.{bound}: must be a finite number, got {v!r}")
            if lo >= hi:
                raise ConfigError(f"{key}: low ({lo}) must be below high ({hi})")
            if kind == "loguniform" and lo <= 0:
                raise ConfigError(f"{key}.low: a loguniform range needs low > 0, got {lo}")
            if kind == "randint":
                if not (isinstance(lo, int) and isinstance(hi, int)):
                    raise ConfigError(f"{key}: randint bounds must be integers, got {lo!r}, {hi!r}")
                probes = [lo, hi - 1]  # high is excluded
            else:
                probes = [lo]  # a continuous range never draws `high` itself
                if name in ("width", "depth", "batch_size"):
                    raise ConfigError(f"{key}.type: {name} is an integer; use randint or choice, not {kind}")
        if extra:
            raise ConfigError(f"{key}: unexpected keys {sorted(extra)} for type {kind!r}")
        for v in probes:
            try:
                apply_params(base_model, base_training, {name: v})
            except ConfigError as e:
                raise ConfigError(f"{key}: value {v!r} is not accepted: {e}") from None


def validate_tuning(cfg: TuningConfig, base_model: ModelConfig | None = None,
                    base_training: TrainingConfig | None = None) -> None:
    """Every check that must pass before a study starts; each error names its ``tuning.*`` key."""
    if cfg.scheduler not in SCHEDULERS:
        raise ConfigError(f"tuning.scheduler: unknown scheduler {cfg.scheduler!r}; use one of {', '.join(SCHEDULERS)}")
    if cfg.metric not in METRICS:
        raise ConfigError(f"tuning.metric: unknown metric {cfg.metric!r}; the trainable reports {', '.join(METRICS)}")
    if cfg.mode not in ("max", "min"):
        raise ConfigError(f"tuning.mode: must be 'max' or 'min', got {cfg.mode!r}")
    check_plan_args(cfg.max_t, cfg.eta)
    if cfg.num_samples < 1:
        raise ConfigError(f"tuning.num_samples must be >= 1, got {cfg.num_samples}")
    validate_search_space(cfg.search_space, base_model, base_training)
    gpu = cfg.resources_per_trial.gpu
    if gpu != "auto" and (not isinstance(gpu, (int, float)) or gpu < 0):
        raise ConfigError(f"tuning.resources_per_trial.gpu: a number >= 0 or 'auto', got {gpu!r}")
    if cfg.scheduler == "bohb":
        missing = bohb_missing_packages()
        if missing:
            raise ConfigError("tuning.scheduler='bohb' needs packages that are not installed "
                              f"({', '.join(missing)}): pip install hpbandster ConfigSpace")


def bohb_missing_packages() -> list[str]:
    """The BOHB dependencies (Ray's TuneBOHB imports ConfigSpace and hpbandster) not importable here."""
    import importlib.util

    return [m for m in ("ConfigSpace", "hpbandster") if importlib.util.find_spec(m) is None]


# --------------------------------------------------------------------------- configs


def apply_params(model: ModelConfig, training: TrainingConfig,
                 params: Mapping[str, Any]) -> tuple[ModelConfig, TrainingConfig]:
    """The model and training configurations with the searched ``params`` put in their fields.

    Values are validated by the configuration models; an unknown name or a rejected value
    raises :class:`ConfigError`.
    """
    m_upd = {k: _plain(v) for k, v in params.items() if k in MODEL_PARAMS}
    t_upd = {k: _plain(v) for k, v in params.items() if k in TRAINING_PARAMS}
    unknown = set(params) - set(m_upd) - set(t_upd)
    if unknown:
        raise ConfigError(f"unknown searched parameters {sorted(unknown)}")
    from pydantic import ValidationError

    try:
        return (ModelConfig.model_validate({**model.model_dump(), **m_upd}),
                TrainingConfig.model_validate({**training.model_dump(), **t_upd}))
    except ValidationError as e:
        raise ConfigError("; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())) from None


def _plain(v: Any) -> Any:
    """numpy scalars (Ray's samplers return them) as Python numbers."""
    return v.item() if isinstance(v, np.generic) else v


def config_key(params: Mapping[str, Any]) -> str:
    """A stable hash of a sampled configuration: it names the trial's seed stream."""
    canon = json.dumps({k: _plain(params[k]) for k in sorted(params)}, sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def trial_seed(base_seed: int, params: Mapping[str, Any]) -> int:
    """The seed of the trial that trains ``params``: ``derive_seed(seed, "trial", config_key)``."""
    return derive_seed(base_seed, "trial", config_key(params))


def sample_config(space: Mapping[str, Mapping[str, Any]], gen: np.random.Generator) -> dict[str, Any]:
    """Draw one configuration from ``space`` with numpy (the sampler the benchmark's in-process
    Hyperband and random search share; parameters drawn in sorted name order)."""
    out: dict[str, Any] = {}
    for name in sorted(space):
        spec = space[name]
        kind = spec["type"]
        if kind == "choice":
            out[name] = _plain(spec["values"][int(gen.integers(len(spec["values"])))])
        elif kind == "uniform":
            out[name] = float(gen.uniform(spec["low"], spec["high"]))
        elif kind == "loguniform":
            out[name] = float(math.exp(gen.uniform(math.log(spec["low"]), math.log(spec["high"]))))
        elif kind == "randint":
            out[name] = int(gen.integers(spec["low"], spec["high"]))
        else:
            raise ConfigError(f"tuning.search_space.{name}.type: unknown distribution {kind!r}")
    return out


def param_space(space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The Ray Tune ``param_space`` for a validated search space."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "loguniform":
            out[name] = tune.loguniform(spec["low"], spec["high"])
        elif kind == "uniform":
            out[name] = tune.uniform(spec["low"], spec["high"])
        elif kind == "randint":
            out[name] = tune.randint(spec["low"], spec["high"])
        elif kind == "choice":
            out[name] = tune.choice(list(spec["values"]))
        else:
            raise ConfigError(f"tuning.search_space.{name}.type: unknown distribution {kind!r}")
    return out


# --------------------------------------------------------------------------- the trainable


@dataclass(frozen=True)
class TrialSetup:
    """What every trial needs besides its sampled config (handed over with tune.with_parameters)."""

    model: dict
    training: dict
    seed: int
    max_t: int
    num_classes: int
    session: str
    threads: int
    crash_once_marker: str | None = None
    crash_at_epoch: int = 2
    crash_kill: bool = False  # the crash is a SIGKILL of the trial's own worker process


class InjectedCrash(RuntimeError):
    """Raised once by a trial when a crash marker is configured (fault-tolerance tests)."""


def _crash(setup: TrialSetup, epoch: int) -> None:
    """The injected fault: SIGKILL of this trial's worker process (a real death: no exception, no
    cleanup, Tune sees the actor die) when ``setup.crash_kill``, else :class:`InjectedCrash`."""
    if setup.crash_kill:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedCrash(f"injected crash at epoch {epoch} (marker {setup.crash_once_marker})")


def train_trial(config: dict, data: dict | None = None, setup: TrialSetup | None = None) -> None:
    """The Ray Tune trainable: one ``train_one_epoch`` + ``evaluate`` per report, a checkpoint with each.

    Reports ``epoch``, ``val_accuracy``, ``val_loss``, ``train_loss``, ``train_seconds`` (time
    inside the train and evaluate functions, summed over the trial's life, restored epochs
    included), ``restored_from_epoch`` (0 for a fresh start), ``trial_seed`` and ``session`` (the
    ``run_study`` call that trained the epoch).
    """
    import torch
    from ray import tune

    from tasks.models.train import evaluate, make_optimizer, select_device, train_one_epoch
    from tasks.models.standardize import fit_standardization
    from tasks.models.zoo import build_model
    from tasks.seeding import seed_everything

    assert data is not None and setup is not None, "train_trial is called through tune.with_parameters"
    params = {k: config[k] for k in config}
    model_cfg, train_cfg = apply_params(ModelConfig(**setup.model), TrainingConfig(**setup.training), params)
    seed = trial_seed(setup.seed, params)
    torch.set_num_threads(setup.threads)
    seed_everything(seed)
    device = select_device(train_cfg.device)
    x_tr, y_tr, x_va, y_va = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    # Trials see inputs standardized as the trained model will (its first layer, train-split statistics).
    model = build_model(model_cfg, tuple(x_tr.shape[1:]), setup.num_classes, fit_standardization(x_tr)).to(device)
    opt = make_optimizer(model, train_cfg.optimizer, train_cfg.lr, train_cfg.weight_decay, train_cfg.momentum)

    start, train_seconds = 0, 0.0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=True)
            meta = json.loads((Path(d) / META_FILE).read_text())
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, train_seconds = int(meta["epoch"]), float(meta["train_seconds"])

    for epoch in range(start + 1, setup.max_t + 1):
        if setup.crash_once_marker and epoch == setup.crash_at_epoch:
            try:  # O_EXCL: exactly one attempt, of one trial, ever creates the marker and crashes
                os.close(os.open(setup.crash_once_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                _crash(setup, epoch)
        # Dropout masks from a per-epoch seed too: a trial resumed from a checkpoint then trains
        # exactly as an uninterrupted one (the global torch RNG is not in the checkpoint).
        torch.manual_seed(derive_seed(seed, "torch", epoch))
        t0 = time.perf_counter()
        train_loss = train_one_epoch(model, opt, x_tr, y_tr, train_cfg.batch_size,
                                     derive_seed(seed, "epoch", epoch), device)
        ev = evaluate(model, x_va, y_va, device, setup.num_classes)
        train_seconds += time.perf_counter() - t0
        metrics = {"epoch": epoch, "val_accuracy": ev.accuracy, "val_loss": ev.loss, "train_loss": train_loss,
                   "train_seconds": train_seconds, "restored_from_epoch": start, "trial_seed": seed,
                   "session": setup.session}
        with tempfile.TemporaryDirectory(prefix="driftloop-ckpt-") as d:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, Path(d) / STATE_FILE)
            (Path(d) / META_FILE).write_text(json.dumps({"epoch": epoch, "train_seconds": train_seconds,
                                                         "config": {k: _plain(v) for k, v in params.items()}}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


# --------------------------------------------------------------------------- results


@dataclass
class TrialRecord:
    """One trial as it ran: its config, per-epoch curves, how far it got and why it ended.

    ``status``: ``completed`` (reached max_t), ``stopped`` (stopped early by the scheduler),
    ``error``, or ``unfinished`` (the study was interrupted before the trial ended). ``band``/``bracket`` are Ray's Hyperband band index and bracket s (None for ASHA;
    with hyperband a trial retried after a failure keeps its bracket; ASHA/BOHB place it again). ``resumes`` counts starts from a checkpoint (Hyperband pausing and resuming, or a
    retry); ``failures`` the errors Tune retried (``FailureConfig``) or gave up on.
    ``epochs_this_session`` counts the epochs trained by this ``run_study`` call (0 for a trial
    that had finished before a resume).
    """

    trial_id: str
    config: dict[str, Any]
    status: str
    epochs: int
    val_accuracy: list[float]
    val_loss: list[float]
    train_seconds: float
    band: int | None = None
    bracket: int | None = None
    resumes: int = 0
    failures: int = 0
    epochs_this_session: int = 0
    error: str | None = None

    def curve(self, metric: str) -> list[float]:
        return self.val_accuracy if metric == "val_accuracy" else self.val_loss


class StudyInterrupted(DriftloopError):
    """The study stopped before every trial ended (Ctrl+C / SIGUSR1); running the same study
    again resumes it. ``partial`` holds what had been reached (a :class:`StudyResult`)."""

    def __init__(self, message: str, partial: "StudyResult"):
        super().__init__(message)
        self.partial = partial


@dataclass
class StudyResult:
    """What a study returns. ``best_params`` holds the searched fields; ``best_model`` and
    ``best_training`` are the full configurations with them applied (what the next stage uses).
    ``best_metric`` is the best value of ``metric`` seen at any epoch of any trial (Hyperband
    returns "the configuration with the smallest intermediate loss seen so far"), reached at
    ``best_epoch`` of ``best_trial_id``."""

    study_name: str
    storage_uri: str
    scheduler: str
    metric: str
    mode: str
    max_t: int
    eta: int
    best_params: dict[str, Any]
    best_model: dict[str, Any]
    best_training: dict[str, Any]
    best_metric: float
    best_epoch: int
    best_trial_id: str
    trials: list[TrialRecord]
    total_epochs: int
    epochs_this_session: int
    wall_seconds: float
    train_seconds: float
    ray_start_seconds: float
    resumed: bool
    resources_per_trial: dict[str, float]
    finished: bool = True
    plan: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def best_configs(self) -> tuple[ModelConfig, TrainingConfig]:
        return ModelConfig(**self.best_model), TrainingConfig(**self.best_training)


# --------------------------------------------------------------------------- Ray plumbing


def study_name_for(cfg: TuningConfig, seed: int, model: ModelConfig, training: TrainingConfig,
                   data_fingerprint: str) -> str:
    """The default study name: a hash of what determines the study's outcome, so the same study
    re-run resumes. Where it runs (address, resources, storage) does not enter the hash."""
    ident = cfg.model_dump(mode="json", exclude={"ray_address", "resources_per_trial", "max_failures",
                                                 "max_concurrent_trials", "storage_subpath", "study_name",
                                                 "resume", "checkpoints_to_keep", "enabled"})
    blob = json.dumps({"tuning": ident, "seed": seed, "model": model.model_dump(mode="json"),
                       "training": training.model_dump(mode="json", exclude={"device", "num_threads"}),
                       "data": data_fingerprint}, sort_keys=True)
    return f"{cfg.scheduler}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


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
        kwargs.update(access_key=store.access_key_id.get_secret_value(),
                      secret_key=store.secret_access_key.get_secret_value())
    return pafs.S3FileSystem(**kwargs)


def tune_storage(store: StoreConfig, subpath: str):
    """(storage_path, pyarrow filesystem or None, URI for humans) of Tune's results in the store.

    Uses ``tasks.store.backends.pyarrow_filesystem`` when the store package provides it, else
    builds the S3 filesystem here (same contract).
    """
    uri = store.uri
    if uri.startswith("s3://"):
        try:
            from tasks.store.backends import pyarrow_filesystem  # the store's own adapter, when present
        except ImportError:
            pyarrow_filesystem = None
        if pyarrow_filesystem is not None:
            fs, path = pyarrow_filesystem(store, subpath)
        else:
            parsed = urlparse(uri)
            if not parsed.netloc:
                raise ConfigError(f"store.uri {uri!r}: no bucket name")
            path = "/".join(p for p in (parsed.netloc, parsed.path.strip("/"), subpath.strip("/")) if p)
            fs = s3_filesystem(store)
        return path, fs, f"s3://{path}"
    if uri.startswith("file://"):
        uri = urlparse(uri).path
    elif "://" in uri:
        raise ConfigError(f"store.uri {store.uri!r}: use a local path, file:// or s3://")
    local = (Path(uri).expanduser().resolve() / subpath)
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
        raise ConfigError(f"tuning.ray_address {address!r} is unreachable ({host}:{port}: {e}); "
                          "start the cluster or unset tuning.ray_address to run a local Ray") from None


def connect_ray(cfg: TuningConfig) -> bool:
    """Connect to ``tuning.ray_address`` or start a local Ray; True when this call initialised Ray
    (the caller then shuts it down). An already initialised Ray is reused as is."""
    import ray

    if ray.is_initialized():
        return False
    if cfg.ray_address:
        check_ray_address(cfg.ray_address)
        try:
            ray.init(address=cfg.ray_address, log_to_driver=False)
        except Exception as e:  # ConnectionError, RuntimeError: report it as the config's fault
            raise ConfigError(f"tuning.ray_address {cfg.ray_address!r}: cannot connect: {e}") from e
        return True
    # Local Ray: every CPU and GPU of this machine; no dashboard, no Ray Client server, and token
    # authentication when the process set it up before importing Ray (tasks/ray_security.py).
    warn_if_token_auth_off()
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, dashboard_host="127.0.0.1",
             log_to_driver=False)
    return True


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


def _make_scheduler(cfg: TuningConfig, seed: int):
    """(scheduler, search algorithm) for ``tuning.scheduler``; time is counted in ``epoch``."""
    if cfg.scheduler == "hyperband":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        from tasks.tuning.ray_hooks import BracketTaggingHyperBand

        return (BracketTaggingHyperBand(time_attr="epoch", max_t=cfg.max_t, reduction_factor=cfg.eta),
                BasicVariantGenerator(random_state=derive_seed(seed, "tune", "sampler")))
    if cfg.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return (ASHAScheduler(time_attr="epoch", max_t=cfg.max_t, grace_period=1, reduction_factor=cfg.eta,
                              brackets=1),
                BasicVariantGenerator(random_state=derive_seed(seed, "tune", "sampler")))
    if cfg.scheduler == "bohb":
        from ray.tune.schedulers import HyperBandForBOHB
        from ray.tune.search.bohb import TuneBOHB

        return (HyperBandForBOHB(time_attr="epoch", max_t=cfg.max_t, reduction_factor=cfg.eta),
                TuneBOHB(seed=derive_seed(seed, "tune", "sampler")))
    raise ConfigError(f"tuning.scheduler: unknown scheduler {cfg.scheduler!r}")


# --------------------------------------------------------------------------- the study


def run_study(cfg: TuningConfig, splits: Splits, *, seed: int, store: StoreConfig,
              model: ModelConfig | None = None, training: TrainingConfig | None = None,
              num_classes: int | None = None, crash_once_marker: str | os.PathLike | None = None,
              crash_kill: bool = False, interrupt_after_trials: int | None = None) -> StudyResult:
    """Run (or resume) a hyperparameter study on Ray Tune and return its :class:`StudyResult`.

    Validates the configuration (errors name the ``tuning.*`` key) and the Ray address before
    anything starts; starts a local Ray (this machine's CPUs and GPUs, bound to 127.0.0.1) unless
    ``tuning.ray_address`` names a cluster, and shuts down what it started. Results and
    checkpoints go under ``<store.uri>/<tuning.storage_subpath>/<study name>`` (S3 through
    ``pyarrow.fs.S3FileSystem``). When that experiment exists and ``tuning.resume`` is on, it is
    resumed with ``Tuner.restore``: finished trials are not re-run, unfinished and errored ones
    continue from their checkpoints.

    ``crash_once_marker`` (fault-tolerance tests): the first trial to reach epoch 2 creates this
    file and raises once; with ``crash_kill`` it SIGKILLs its own worker process instead (a real
    death of the trial mid-study, after its epoch-1 checkpoint). ``interrupt_after_trials`` (resume tests, benchmarks): after that many
    trials have ended, the study is interrupted the way Ctrl+C does (SIGUSR1 to this process;
    Tune saves its state and returns), leaving an unfinished experiment behind.
    """
    model = model or ModelConfig()
    training = training or TrainingConfig()
    validate_tuning(cfg, model, training)
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise DriftloopError("tuning needs non-empty train and validation splits")
    n_classes = int(num_classes or int(max(splits.train.y.max(), splits.val.y.max())) + 1)
    name = cfg.study_name or study_name_for(cfg, seed, model, training, fingerprint(splits.train))
    storage_path, fs, storage_uri = tune_storage(store, cfg.storage_subpath)
    if cfg.ray_address:
        check_ray_address(cfg.ray_address)

    # Tune warns on every forced experiment snapshot (num_to_keep set, a checkpoint per epoch):
    # expected here, and noise in the flow's logs.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune

    t_start = time.perf_counter()
    started = connect_ray(cfg)
    ray_start_seconds = time.perf_counter() - t_start
    try:
        resources = trial_resources(cfg, ray.cluster_resources(), local=not cfg.ray_address)
        session = uuid.uuid4().hex[:12]
        setup = TrialSetup(model=model.model_dump(mode="json"), training=training.model_dump(mode="json"),
                           seed=seed, max_t=cfg.max_t, num_classes=n_classes, session=session,
                           threads=max(1, int(resources["cpu"])),
                           crash_once_marker=str(crash_once_marker) if crash_once_marker else None,
                           crash_kill=crash_kill)
        data = {"x_train": splits.train.x, "y_train": splits.train.y, "x_val": splits.val.x, "y_val": splits.val.y}
        trainable = tune.with_resources(tune.with_parameters(train_trial, data=data, setup=setup), resources)
        exp_path = f"{storage_path.rstrip('/')}/{name}"
        resumed = bool(cfg.resume and tune.Tuner.can_restore(exp_path, storage_filesystem=fs))
        if resumed:
            tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=True, storage_filesystem=fs)
        else:
            scheduler, searcher = _make_scheduler(cfg, seed)
            from tasks.tuning.ray_hooks import BracketTagger

            callbacks = [BracketTagger()]
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(cfg.search_space),
                tune_config=tune.TuneConfig(metric=cfg.metric, mode=cfg.mode, scheduler=scheduler,
                                            search_alg=searcher, num_samples=cfg.num_samples,
                                            max_concurrent_trials=cfg.max_concurrent_trials),
                run_config=tune.RunConfig(
                    name=name, storage_path=storage_path, storage_filesystem=fs, verbose=0,
                    callbacks=callbacks,
                    failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
                ),
            )
        if interrupt_after_trials is not None:
            _arm_interrupt(tuner, interrupt_after_trials)
        grid = tuner.fit()
        wall = time.perf_counter() - t_start
        # Trial statuses as saved in the experiment snapshot: after an interruption Tune marks the
        # in-memory trials TERMINATED on cleanup, but the snapshot keeps PENDING/PAUSED/RUNNING.
        from ray.tune import ExperimentAnalysis

        saved = {t.trial_id: t.status for t in ExperimentAnalysis(exp_path, storage_filesystem=fs).trials}
        result = _collect(grid, cfg, name, f"{storage_uri.rstrip('/')}/{name}", session, model, training,
                          wall, ray_start_seconds, resumed, resources, saved)
        if not result.finished:
            left = sum(r.status == "unfinished" for r in result.trials)
            raise StudyInterrupted(f"tuning study {name!r} was interrupted with {left} trials unfinished; "
                                   f"its state is saved at {result.storage_uri}: run the same study again "
                                   "(tuning.resume on) to resume it", result)
        return result
    finally:
        if started:
            ray.shutdown()


def _arm_interrupt(tuner, after: int) -> None:
    """Interrupt the study after ``after`` trials ended (see ``InterruptAfter``). The callback is
    added to this session only, after the Tuner pickled its run config, so a resume lacks it."""
    from tasks.tuning.ray_hooks import InterruptAfter

    internal = tuner._local_tuner
    internal._run_config.callbacks = list(internal._run_config.callbacks or []) + [InterruptAfter(after)]


def _collect(grid, cfg: TuningConfig, name: str, uri: str, session: str, model: ModelConfig,
             training: TrainingConfig, wall: float, ray_start: float, resumed: bool,
             resources: dict[str, float], saved_status: Mapping[str, str]) -> StudyResult:
    """Turn Tune's ResultGrid into a StudyResult (curves read from each trial's progress)."""
    sign = 1.0 if cfg.mode == "max" else -1.0
    records: list[TrialRecord] = []
    best: tuple[float, int, TrialRecord] | None = None
    # ResultGrid lists its results in the order of the analysis' Trial objects (which carry
    # the failure counts the Result lacks).
    for trial, res in zip(grid._experiment_analysis.trials, grid):
        df = res.metrics_dataframe
        params = {k: _plain(v) for k, v in (res.config or {}).items()}
        tid = str(trial.trial_id)
        failures = int(trial.num_failures)
        trial_status = saved_status.get(tid, trial.status)
        if df is None or df.empty or "epoch" not in df:
            never_ran = trial_status in ("PENDING", "PAUSED", "RUNNING")  # interrupted before its first epoch
            records.append(TrialRecord(tid, params, "unfinished" if never_ran else "error", 0, [], [], 0.0,
                                       failures=failures,
                                       error=None if never_ran else (_error_text(res.error) or "no result reported")))
            continue
        # A restarted or resumed trial may report an epoch twice; the last report wins.
        df = df.sort_values("timestamp" if "timestamp" in df else "epoch", kind="stable")
        per_epoch = df.drop_duplicates("epoch", keep="last").sort_values("epoch")
        epochs = int(per_epoch["epoch"].max())
        band = _int_or_none(df, "hb_band")
        bracket = _int_or_none(df, "hb_bracket")
        if trial_status == "ERROR":
            status = "error"
        elif trial_status != "TERMINATED":  # PENDING/PAUSED/RUNNING: the study was interrupted
            status = "unfinished"
        else:
            status = "completed" if epochs >= cfg.max_t else "stopped"
        resumes = int((df["restored_from_epoch"].diff().fillna(0) != 0).sum()) if "restored_from_epoch" in df else 0
        rec = TrialRecord(
            trial_id=str(tid), config=params, status=status, epochs=epochs,
            val_accuracy=[float(v) for v in per_epoch["val_accuracy"]],
            val_loss=[float(v) for v in per_epoch["val_loss"]],
            train_seconds=float(per_epoch["train_seconds"].iloc[-1]),
            band=band, bracket=bracket, resumes=resumes, failures=failures,
            epochs_this_session=int((df["session"] == session).sum()) if "session" in df else 0,
            error=_error_text(res.error))
        records.append(rec)
        curve = rec.curve(cfg.metric)
        for i, v in enumerate(curve):
            if math.isfinite(v) and (best is None or sign * v > sign * best[0]):
                best = (v, i + 1, rec)
    if best is None:
        errors = "; ".join(f"{r.trial_id}: {r.error}" for r in records if r.error)[:800]
        raise DriftloopError(f"tuning study {name!r}: no trial reported a finite {cfg.metric} ({errors})")
    records.sort(key=lambda r: r.trial_id)
    best_value, best_epoch, best_rec = best
    bm, bt = apply_params(model, training, best_rec.config)
    plan = ray_hyperband_plan(cfg.max_t, cfg.eta).as_dict() if cfg.scheduler in ("hyperband", "bohb") else {
        "source": "ray.tune.schedulers.ASHAScheduler (ray 2.55.1), one bracket",
        "rung_milestones": asha_milestones(cfg.max_t, cfg.eta)}
    return StudyResult(
        study_name=name, storage_uri=uri, scheduler=cfg.scheduler, metric=cfg.metric, mode=cfg.mode,
        max_t=cfg.max_t, eta=cfg.eta, best_params=dict(best_rec.config),
        best_model=bm.model_dump(mode="json"), best_training=bt.model_dump(mode="json"),
        best_metric=float(best_value), best_epoch=int(best_epoch), best_trial_id=best_rec.trial_id,
        trials=records, total_epochs=sum(r.epochs for r in records),
        epochs_this_session=sum(r.epochs_this_session for r in records), wall_seconds=wall,
        train_seconds=sum(r.train_seconds for r in records), ray_start_seconds=ray_start,
        resumed=resumed, resources_per_trial=resources,
        finished=all(r.status != "unfinished" for r in records), plan=plan)


def asha_milestones(max_t: int, eta: int, grace_period: int = 1) -> list[int]:
    """The rungs (cumulative epochs) of Ray's one-bracket ASHAScheduler: grace * eta^k below max_t, then max_t."""
    out, r = [], grace_period
    while r < max_t:
        out.append(r)
        r *= eta
    return out + [max_t]


def rung_milestones(scheduler: str, max_t: int, eta: int, bracket: int | None) -> list[int]:
    """The epochs at which a trial of ``bracket`` is compared (Hyperband/BOHB) or ASHA's rungs."""
    if scheduler in ("hyperband", "bohb") and bracket is not None:
        return ray_rung_milestones(max_t, eta, bracket)
    return asha_milestones(max_t, eta)


def _int_or_none(df, col: str) -> int | None:
    if col not in df:
        return None
    vals = df[col].dropna()
    return int(vals.iloc[-1]) if len(vals) else None


def _error_text(err) -> str | None:
    if err is None:
        return None
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:500]


def apply_best_config(settings, best_config: Mapping[str, Any]):
    """``settings`` (a :class:`tasks.settings.Settings`) with the study's best parameters put in
    its ``model`` and ``training`` sections; the next stages train with it."""
    model, training = apply_params(settings.model, settings.training, best_config)
    return settings.model_copy(update={"model": model, "training": training})
