"""The Ray Tune trainable: a thin adapter (ARCHITECTURE.md rule 5) around the plain
``tasks.models.train.train_one_epoch`` + ``evaluate``, reporting to Tune only where the scheduler
makes a decision (see :func:`report_epochs`), each report carrying the per-epoch curve since the
previous one.

Checkpoints (model and optimizer state dicts, ``torch.save``; read back with ``weights_only=True``)
are written only at the epochs where the scheduler may pause the trial (Hyperband's rung
milestones), plus every ``tuning.checkpoint_every`` epochs when set: a checkpoint every epoch cost
more than the training on small models (each one is copied into the study's storage and forces
experiment-state snapshots). Restored from ``tune.get_checkpoint()`` when Hyperband resumes a
paused trial or Tune retries a failed one. Data goes in with ``tune.with_parameters``.

Seeds: trial seed ``derive_seed(seed, "trial", <hash of the sampled config>)`` (model init);
epoch ``e`` shuffles with ``derive_seed(trial_seed, "epoch", e)`` as ``tasks.models.train.fit``
does and draws dropout masks from ``derive_seed(trial_seed, "torch", e)``, so a trial paused and
resumed (or retried, from any earlier checkpoint) trains exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.models.config import ModelConfig, TrainingConfig
from tasks.seeding import derive_seed
from tasks.tuning.space import _plain, apply_params, trial_seed

STATE_FILE = "state.pt"
# The per-epoch figures a report carries for every epoch since the previous report, as lists
# ``curve_<key>`` (``tasks.tuning.study`` expands them back into one row per epoch).
CURVE_KEYS = ("epoch", "val_accuracy", "val_loss", "train_loss", "train_seconds")
META_FILE = "meta.json"


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
    # Epochs after which the trial saves a checkpoint: where the scheduler may pause it (see
    # pause_epochs) and every tuning.checkpoint_every epochs. Elsewhere it reports metrics only.
    checkpoint_epochs: tuple[int, ...] = ()
    # Epochs after which the trial reports to Tune (see report_epochs): where the scheduler decides,
    # plus checkpoints and max_t; each report carries the per-epoch curve since the previous one.
    # Empty: every epoch.
    report_epochs: tuple[int, ...] = ()
    crash_once_marker: str | None = None
    crash_at_epoch: int = 2
    # "raise": InjectedCrash; "kill": SIGKILL of the trial's own worker process; "hang": the trial
    # stops reporting (sleeps for an hour), as a wedged worker does
    crash_mode: str = "raise"


class InjectedCrash(RuntimeError):
    """Raised once by a trial when a crash marker is configured (fault-tolerance tests)."""


def _crash(setup: TrialSetup, epoch: int) -> None:
    """The injected fault (``setup.crash_mode``): SIGKILL of this trial's worker process (a real
    death: no exception, no cleanup, Tune sees the actor die), a silent hang, or :class:`InjectedCrash`."""
    if setup.crash_mode == "kill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if setup.crash_mode == "hang":
        time.sleep(3600)
    raise InjectedCrash(f"injected crash at epoch {epoch} (marker {setup.crash_once_marker})")


def train_trial(config: dict, data: dict | None = None, setup: TrialSetup | None = None) -> None:
    """The Ray Tune trainable: ``train_one_epoch`` + ``evaluate`` per epoch; a report only at
    ``setup.report_epochs`` (the epochs where the scheduler decides), checkpoint epochs and max_t.

    Each report has the figures of its epoch: ``epoch``, ``val_accuracy``, ``val_loss``,
    ``train_loss``, ``train_seconds`` (time inside the train and evaluate functions, summed over the
    trial's life, restored epochs included), ``restored_from_epoch`` (0 for a fresh start),
    ``trial_seed``, ``session`` (the ``run_study`` call that trained the epoch), where it ran,
    ``next_report_epoch``, and ``curve_<key>`` lists (:data:`CURVE_KEYS`) for every epoch trained
    since the previous report. A report is a round trip to the driver (result processing,
    callbacks, loggers, experiment snapshots): once per epoch it cost as much as training small
    models.
    """
    import torch
    from ray import tune

    from tasks.models.standardize import fit_standardization
    from tasks.models.train import evaluate, make_optimizer, select_device, train_one_epoch
    from tasks.models.zoo import build_model
    from tasks.seeding import seed_everything

    assert data is not None and setup is not None, "train_trial is called through tune.with_parameters"
    params = {k: config[k] for k in config}
    model_cfg, train_cfg = apply_params(ModelConfig(**setup.model), TrainingConfig(**setup.training), params)
    seed = trial_seed(setup.seed, params)
    # One intra-op thread per CPU of the trial: on 2 cores two trials with torch's default of all
    # cores each would oversubscribe the machine.
    torch.set_num_threads(setup.threads)
    placement = trial_placement()
    seed_everything(seed)
    device = select_device(train_cfg.device)
    x_tr, y_tr, x_va, y_va = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    # Trials see inputs standardized as the trained model will (its first layer, train-split statistics).
    model = build_model(model_cfg, tuple(x_tr.shape[1:]), setup.num_classes, fit_standardization(x_tr)).to(device)
    opt = make_optimizer(model, train_cfg.optimizer, train_cfg.lr, train_cfg.weight_decay, train_cfg.momentum)

    start, train_seconds = 0, 0.0
    # Every epoch's curve values so far, saved with each checkpoint: the first report after a
    # restore carries the restored epochs again, so the study's curves stay whole even when Tune
    # 2.55.1 starts a resumed trial's result.json afresh (it had not uploaded the earlier rows yet).
    history: dict[str, list] = {k: [] for k in CURVE_KEYS}
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=True)
            meta = json.loads((Path(d) / META_FILE).read_text())
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, train_seconds = int(meta["epoch"]), float(meta["train_seconds"])
        history = {k: list((meta.get("history") or {}).get(k, [])) for k in CURVE_KEYS}

    reports = set(setup.report_epochs or range(1, setup.max_t + 1)) | set(setup.checkpoint_epochs) | {setup.max_t}
    curve: dict[str, list] = {k: list(v) for k, v in history.items()}
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
        train_loss = train_one_epoch(
            model, opt, x_tr, y_tr, train_cfg.batch_size, derive_seed(seed, "epoch", epoch), device
        )
        ev = evaluate(model, x_va, y_va, device, setup.num_classes)
        train_seconds += time.perf_counter() - t0
        for k, v in zip(CURVE_KEYS, (epoch, ev.accuracy, ev.loss, train_loss, train_seconds)):
            curve[k].append(v)
            history[k].append(v)
        if epoch not in reports:
            continue
        metrics = {
            "epoch": epoch,
            "val_accuracy": ev.accuracy,
            "val_loss": ev.loss,
            "train_loss": train_loss,
            "train_seconds": train_seconds,
            "restored_from_epoch": start,
            "trial_seed": seed,
            "session": setup.session,
            **placement,
            "next_report_epoch": min((e for e in reports if e > epoch), default=epoch),
            **{f"curve_{k}": v for k, v in curve.items()},
        }
        curve = {k: [] for k in CURVE_KEYS}
        if epoch not in setup.checkpoint_epochs:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory(prefix="driftloop-ckpt-") as d:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, Path(d) / STATE_FILE)
            (Path(d) / META_FILE).write_text(
                json.dumps(
                    {
                        "epoch": epoch,
                        "train_seconds": train_seconds,
                        "config": {k: _plain(v) for k, v in params.items()},
                        "history": history,
                    }
                )
            )
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def trial_placement() -> dict[str, str]:
    """Where this trial runs: the Ray node id and the GPU ids Ray assigned to it (comma-joined,
    empty without a GPU share); reported with every result, shown in the study report."""
    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids())}


def pause_epochs(scheduler: str, max_t: int, eta: int, every: int | None = None) -> tuple[int, ...]:
    """The epochs after which a trial checkpoints: every rung milestone below ``max_t`` of any
    Hyperband/BOHB bracket (the only reports after which the synchronous scheduler pauses a trial,
    and Tune's pause keeps the checkpoint of the report that triggered it), plus multiples of
    ``every`` (for retries and node loss mid-rung). ASHA stops trials but never pauses them."""
    from tasks.tuning.plan import ray_bracket_sizes, ray_rung_milestones

    out: set[int] = set()
    if scheduler in ("hyperband", "bohb"):
        for s, _, _ in ray_bracket_sizes(max_t, eta):
            out.update(m for m in ray_rung_milestones(max_t, eta, s) if m < max_t)
    if every:
        out.update(range(every, max_t + 1, every))
    return tuple(sorted(out))


def report_epochs(scheduler: str, max_t: int, eta: int) -> tuple[int, ...]:
    """The epochs after which a trial reports to Tune: where ``scheduler`` makes a decision about it,
    and max_t. Both count time in ``epoch`` (``tasks.tuning.runtime._make_scheduler``), so a report
    between them changes nothing: Hyperband/BOHB compare a bracket's trials at its rung milestones
    (every bracket's, as the trial does not know its bracket), ASHA at its rungs
    (``asha_milestones``). Checkpoint epochs (:func:`pause_epochs`) report too."""
    from tasks.tuning.plan import ray_bracket_sizes, ray_rung_milestones
    from tasks.tuning.results import asha_milestones

    out: set[int] = {max_t}
    if scheduler in ("hyperband", "bohb"):
        for s, _, _ in ray_bracket_sizes(max_t, eta):
            out.update(ray_rung_milestones(max_t, eta, s))
    else:
        out.update(asha_milestones(max_t, eta))
    return tuple(sorted(e for e in out if 1 <= e <= max_t))
