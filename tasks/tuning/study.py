"""The study: ``run_study`` validates, connects to Ray, runs (or resumes) the Tuner and turns Tune's
results into a :class:`tasks.tuning.results.StudyResult`.

Ray 2.55.1's HyperBandScheduler needs help to pause, retry and restore safely; see
``tasks.tuning.ray_hooks.BracketTaggingHyperBand`` (the scheduler used for ``hyperband``). With the
synchronous HyperBandScheduler a study is reproducible (ASHA's decisions depend on timing); the
sampler is seeded from ``derive_seed(seed, "tune", "sampler")``.

Nothing here imports prefect; the Prefect task is ``tasks.tuning.steps.tune_hyperparameters``.

Over 400 lines (``ruff format`` layout): one function runs the Tuner and the rest turns its results
into a StudyResult; they change together.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
import uuid
from typing import TYPE_CHECKING, Mapping

from tasks.data.dataset import Splits, fingerprint
from tasks.errors import ConfigError, DriftloopError
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.store.config import StoreConfig
from tasks.tuning.config import TuningConfig
from tasks.tuning.plan import ray_hyperband_plan
from tasks.tuning.results import StudyInterrupted, StudyResult, TrialRecord, asha_milestones
from tasks.tuning.runtime import (
    _make_scheduler,
    check_ray_address,
    connect_ray,
    is_remote,
    trial_resources,
    tune_storage,
)
from tasks.tuning.space import _plain, apply_params, param_space, validate_tuning
from tasks.tuning.trainable import CURVE_KEYS, TrialSetup, pause_epochs, report_epochs, train_trial

if TYPE_CHECKING:
    from tasks.tuning.progress import Reporter


def study_name_for(
    cfg: TuningConfig, seed: int, model: ModelConfig, training: TrainingConfig, data_fingerprint: str
) -> str:
    """The default study name: a hash of what determines the study's outcome, so the same study
    re-run resumes. Where it runs (address, resources, storage) does not enter the hash."""
    ident = cfg.model_dump(
        mode="json",
        exclude={
            "ray_address",
            "resources_per_trial",
            "max_failures",
            "max_concurrent_trials",
            "storage_subpath",
            "study_name",
            "resume",
            "checkpoints_to_keep",
            "checkpoint_every",
            "enabled",
            "trial_stall_s",
        },
    )
    blob = json.dumps(
        {
            "tuning": ident,
            "seed": seed,
            "model": model.model_dump(mode="json"),
            "training": training.model_dump(mode="json", exclude={"device", "num_threads"}),
            "data": data_fingerprint,
        },
        sort_keys=True,
    )
    return f"{cfg.scheduler}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def run_study(
    cfg: TuningConfig,
    splits: Splits,
    *,
    seed: int,
    store: StoreConfig,
    model: ModelConfig | None = None,
    training: TrainingConfig | None = None,
    num_classes: int | None = None,
    crash_once_marker: str | os.PathLike | None = None,
    crash_mode: str = "raise",
    interrupt_after_trials: int | None = None,
    progress: Reporter | None = None,
    configurations: list[dict] | None = None,
) -> StudyResult:
    """Run (or resume) a hyperparameter study on Ray Tune and return its :class:`StudyResult`.

    Validates the configuration (errors name the ``tuning.*`` key) and the Ray address before
    anything starts; starts a local Ray (this machine's CPUs and GPUs, bound to 127.0.0.1) unless
    ``tuning.ray_address`` names a cluster, and shuts down what it started. Results and
    checkpoints go under ``<store.uri>/<tuning.storage_subpath>/<study name>`` (S3 through
    ``pyarrow.fs.S3FileSystem``). When that experiment exists and ``tuning.resume`` is on, it is
    resumed with ``Tuner.restore``: finished trials are not re-run, unfinished and errored ones
    continue from their checkpoints.

    ``crash_once_marker`` (fault-tolerance tests): the first trial to reach epoch 2 creates this
    file and raises once; with ``crash_mode="kill"`` it SIGKILLs its own worker process instead (a
    real death of the trial mid-study, after its epoch-1 checkpoint), with ``"hang"`` it goes silent
    (the stall guard, ``tuning.trial_stall_s``, stops it). ``interrupt_after_trials`` (resume tests, benchmarks):
    after that many
    trials have ended, the study is interrupted the way Ctrl+C does (SIGUSR1 to this process;
    Tune saves its state and returns), leaving an unfinished experiment behind.

    ``progress`` is called with a :class:`tasks.tuning.progress.StudyProgress` as trials start,
    pause and finish (the tune stage passes a live terminal line plus a Prefect progress artifact).
    ``configurations`` (searched parameters; benchmarks, warm starts) are tried first, in order,
    before the sampler draws the rest of ``tuning.num_samples``.
    """
    model = model or ModelConfig()
    training = training or TrainingConfig()
    validate_tuning(cfg, model, training)
    from tasks.compat import require

    require("ray")  # tasks.tuning.ray_hooks and _add_session_callback rely on Tune's private names
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise DriftloopError("tuning needs non-empty train and validation splits")
    n_classes = int(num_classes or int(max(splits.train.y.max(), splits.val.y.max())) + 1)
    name = cfg.study_name or study_name_for(cfg, seed, model, training, fingerprint(splits.train))
    if is_remote(cfg.ray_address):
        check_ray_address(cfg.ray_address)
        if not store.uri.startswith("s3://"):
            # Checked before tune_storage creates anything: the refused study leaves nothing behind.
            raise ConfigError(
                f"tuning.ray_address {cfg.ray_address!r} is a cluster, but store.uri {store.uri!r} is a "
                "local directory: the cluster's nodes do not share this machine's disk, so trials could "
                "neither save nor restore their checkpoints. Use an S3-compatible store that every node "
                "reaches (store.uri=s3://BUCKET/PREFIX with store.endpoint_url), or unset "
                "tuning.ray_address to tune on this machine"
            )
    storage_path, fs, storage_uri = tune_storage(store, cfg.storage_subpath)

    # Quiet about what is expected: Tune warns on forced experiment snapshots (num_to_keep set),
    # prints a configuration box and a TensorBoard hint even with verbose=0 under its new output
    # engine (the legacy reporter at verbose=0 prints nothing), and Ray warns at init about a
    # future change to CUDA_VISIBLE_DEVICES for num_gpus=0 that driftloop does not rely on.
    # Progress goes through the ``progress`` reporter instead.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import warnings

    import ray
    from ray import tune

    t_start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*override accelerator visible devices.*", category=FutureWarning)
        started = connect_ray(cfg)
    ray_start_seconds = time.perf_counter() - t_start
    try:
        resources = trial_resources(cfg, ray.cluster_resources(), local=not is_remote(cfg.ray_address))
        session = uuid.uuid4().hex[:12]
        setup = TrialSetup(
            model=model.model_dump(mode="json"),
            training=training.model_dump(mode="json"),
            seed=seed,
            max_t=cfg.max_t,
            num_classes=n_classes,
            session=session,
            threads=max(1, int(resources["cpu"])),
            checkpoint_epochs=pause_epochs(cfg.scheduler, cfg.max_t, cfg.eta, cfg.checkpoint_every),
            report_epochs=report_epochs(cfg.scheduler, cfg.max_t, cfg.eta),
            crash_once_marker=str(crash_once_marker) if crash_once_marker else None,
            crash_mode=crash_mode,
        )
        data = {"x_train": splits.train.x, "y_train": splits.train.y, "x_val": splits.val.x, "y_val": splits.val.y}
        trainable = tune.with_resources(tune.with_parameters(train_trial, data=data, setup=setup), resources)
        exp_path = f"{storage_path.rstrip('/')}/{name}"
        resumed = bool(cfg.resume and tune.Tuner.can_restore(exp_path, storage_filesystem=fs))
        if resumed:
            tuner = tune.Tuner.restore(
                exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=fs
            )
        else:
            scheduler, searcher = _make_scheduler(cfg, seed, configurations)
            from tasks.tuning.ray_hooks import BracketTagger, NoTBXLogger

            # No CSV or TensorBoard copy of every result (the JSON logger, which the results are
            # read from, stays).
            callbacks = [BracketTagger(), NoTBXLogger()]
            # reuse_actors: on one machine a trial's actor (a Python process with torch imported,
            # seconds to start on 2 cores) serves the next trial and the resumption of paused
            # ones. Not on a cluster: an idle cached actor may sit on a node that has since been
            # lost, and Tune 2.55.1 treats the failed reuse (the trial is still PENDING) as a
            # final ERROR, never as a retry within tuning.max_failures.
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(cfg.search_space),
                tune_config=tune.TuneConfig(
                    metric=cfg.metric,
                    mode=cfg.mode,
                    scheduler=scheduler,
                    search_alg=searcher,
                    num_samples=cfg.num_samples,
                    max_concurrent_trials=cfg.max_concurrent_trials,
                    reuse_actors=not is_remote(cfg.ray_address),
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=storage_path,
                    storage_filesystem=fs,
                    verbose=0,
                    callbacks=callbacks,
                    failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
                ),
            )
        from tasks.tuning.callbacks import StallGuard

        guard = StallGuard(cfg.trial_stall_s)
        _add_session_callback(tuner, guard)
        if progress is not None:
            from tasks.tuning.callbacks import ProgressCallback

            _add_session_callback(
                tuner,
                ProgressCallback(progress, total=cfg.num_samples, max_t=cfg.max_t, metric=cfg.metric, mode=cfg.mode),
            )
        if interrupt_after_trials is not None:
            from tasks.tuning.callbacks import InterruptAfter

            _add_session_callback(tuner, InterruptAfter(interrupt_after_trials))
        with _quiet_tune_logs():
            grid = tuner.fit()
        wall = time.perf_counter() - t_start
        # Trial statuses as saved in the experiment snapshot: after an interruption Tune marks the
        # in-memory trials TERMINATED on cleanup, but the snapshot keeps PENDING/PAUSED/RUNNING.
        from ray.tune import ExperimentAnalysis

        saved = {t.trial_id: t.status for t in ExperimentAnalysis(exp_path, storage_filesystem=fs).trials}
        result = _collect(
            grid,
            cfg,
            name,
            f"{storage_uri.rstrip('/')}/{name}",
            session,
            model,
            training,
            wall,
            ray_start_seconds,
            resumed,
            resources,
            saved,
        )
        result.stalled = list(guard.stalled)
        if not result.finished:
            left = sum(r.status == "unfinished" for r in result.trials)
            raise StudyInterrupted(
                f"tuning study {name!r} was interrupted with {left} trials unfinished; "
                f"its state is saved at {result.storage_uri}: run the same study again "
                "(tuning.resume on) to resume it",
                result,
            )
        return result
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def _quiet_tune_logs():
    """Tune's INFO lines (where results were written, trials paused and resumed by Hyperband) are
    expected events, not news: keep ray.tune at WARNING while the study runs."""
    log = logging.getLogger("ray.tune")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def _add_session_callback(tuner, callback) -> None:
    """Add a callback to this ``fit`` only: after the Tuner pickled its run config into the
    experiment, so a resumed study does not inherit it (and it need not be picklable)."""
    internal = tuner._local_tuner
    internal._run_config.callbacks = list(internal._run_config.callbacks or []) + [callback]


def _checkpoint_starts(restored_from: list[float]) -> int:
    """How many times a trial started from a checkpoint, from its reports' ``restored_from_epoch``
    in time order: each change to a non-zero value. The first report counts too: Tune 2.55.1 may
    start a resumed trial's result.json afresh, and the reports from before the restart are gone."""
    starts, previous = 0, 0.0
    for value in restored_from:
        if value and value != previous:
            starts += 1
        previous = value
    return starts


def _collect(
    grid,
    cfg: TuningConfig,
    name: str,
    uri: str,
    session: str,
    model: ModelConfig,
    training: TrainingConfig,
    wall: float,
    ray_start: float,
    resumed: bool,
    resources: dict[str, float],
    saved_status: Mapping[str, str],
) -> StudyResult:
    """Turn Tune's ResultGrid into a StudyResult (curves read from each trial's progress)."""
    sign = 1.0 if cfg.mode == "max" else -1.0
    records: list[TrialRecord] = []
    best: tuple[float, int, TrialRecord] | None = None
    # ResultGrid lists its results in the order of the analysis' Trial objects (which carry
    # the failure counts the Result lacks).
    for trial, res in zip(grid._experiment_analysis.trials, grid):
        df = _expand_curves(res.metrics_dataframe)
        params = {k: _plain(v) for k, v in (res.config or {}).items()}
        tid = str(trial.trial_id)
        failures = int(trial.num_failures)
        trial_status = saved_status.get(tid, trial.status)
        if df is None or df.empty or "epoch" not in df:
            never_ran = trial_status in ("PENDING", "PAUSED", "RUNNING")  # interrupted before its first epoch
            records.append(
                TrialRecord(
                    tid,
                    params,
                    "unfinished" if never_ran else "error",
                    0,
                    [],
                    [],
                    0.0,
                    failures=failures,
                    error=None if never_ran else (_error_text(res.error) or "no result reported"),
                )
            )
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
        resumes = _checkpoint_starts(df["restored_from_epoch"].fillna(0).tolist()) if "restored_from_epoch" in df else 0
        rec = TrialRecord(
            trial_id=str(tid),
            config=params,
            status=status,
            epochs=epochs,
            val_accuracy=[float(v) for v in per_epoch["val_accuracy"]],
            val_loss=[float(v) for v in per_epoch["val_loss"]],
            train_seconds=float(per_epoch["train_seconds"].iloc[-1]),
            band=band,
            bracket=bracket,
            resumes=resumes,
            failures=failures,
            epochs_this_session=int((df["session"] == session).sum()) if "session" in df else 0,
            error=_error_text(res.error),
            node_id=_last_str(df, "node_id"),
            gpu_ids=_last_str(df, "gpu_ids"),
            nodes=_distinct_str(df, "node_id"),
        )
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
    plan = (
        ray_hyperband_plan(cfg.max_t, cfg.eta).as_dict()
        if cfg.scheduler in ("hyperband", "bohb")
        else {
            "source": "ray.tune.schedulers.ASHAScheduler (ray 2.55.1), one bracket",
            "rung_milestones": asha_milestones(cfg.max_t, cfg.eta),
        }
    )
    return StudyResult(
        study_name=name,
        storage_uri=uri,
        scheduler=cfg.scheduler,
        metric=cfg.metric,
        mode=cfg.mode,
        max_t=cfg.max_t,
        eta=cfg.eta,
        best_params=dict(best_rec.config),
        best_model=bm.model_dump(mode="json"),
        best_training=bt.model_dump(mode="json"),
        best_metric=float(best_value),
        best_epoch=int(best_epoch),
        best_trial_id=best_rec.trial_id,
        trials=records,
        total_epochs=sum(r.epochs for r in records),
        epochs_this_session=sum(r.epochs_this_session for r in records),
        wall_seconds=wall,
        train_seconds=sum(r.train_seconds for r in records),
        ray_start_seconds=ray_start,
        resumed=resumed,
        resources_per_trial=resources,
        finished=all(r.status != "unfinished" for r in records),
        plan=plan,
    )


def _expand_curves(df):
    """One row per epoch trained: a report carries the epochs since the previous one as
    ``curve_<key>`` lists (``tasks.tuning.trainable``); each becomes a row with the report's other
    columns (session, node, restored_from_epoch, bracket tag, timestamp). Rows without lists (no
    curve: reported every epoch) stay as they are."""
    cols = [f"curve_{k}" for k in CURVE_KEYS]
    if df is None or df.empty or cols[0] not in df:
        return df
    import pandas as pd

    rows = []
    for rec in df.to_dict("records"):
        epochs = rec.get(cols[0])
        if not isinstance(epochs, list) or not epochs:
            rows.append(rec)
            continue
        restored = rec.get("restored_from_epoch") or 0
        for i in range(len(epochs)):
            row = dict(rec)
            row.update({k: rec[c][i] for k, c in zip(CURVE_KEYS, cols)})
            # The first report after a restore carries the checkpoint's epochs again: trained in
            # an earlier session, kept only where Tune lost the report that first carried them.
            row["_carried"] = bool(restored and row["epoch"] <= restored)
            if row["_carried"]:
                row["session"] = None
            rows.append(row)
    out = pd.DataFrame(rows).drop(columns=cols, errors="ignore")
    if "_carried" in out:
        carried = out["_carried"].fillna(False).astype(bool)
        out = out[~(carried & out["epoch"].isin(set(out.loc[~carried, "epoch"])))].drop(columns="_carried")
    return out


def _last_str(df, col: str) -> str | None:
    """The column's last value as text ("" for an empty one, which CSV reads back as NaN)."""
    if col not in df or not len(df):
        return None
    v = df[col].iloc[-1]
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _distinct_str(df, col: str) -> list[str]:
    if col not in df:
        return []
    return list(dict.fromkeys(str(v) for v in df[col].dropna()))


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
