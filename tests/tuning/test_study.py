"""Studies on a real local Ray (one Ray start for the module): Hyperband stops trials early and
returns the best; a trial that crashes once completes from its checkpoint; an interrupted study
on S3 (SeaweedFS) resumes without re-running finished trials."""

import math

import pytest

from tasks.models.config import ModelConfig, TrainingConfig
from tasks.settings import load_settings
from tasks.store.config import StoreConfig
from tasks.tuning.config import TuningConfig
from tasks.tuning.report import bracket_rows
from tasks.tuning.search import StudyInterrupted, apply_best_config, run_study

SPACE = {
    "lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2},
    "width": {"type": "choice", "values": [16, 32]},
    "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
}
MODEL = ModelConfig(arch="mlp", depth=1)
TRAINING = TrainingConfig(num_threads=1)


@pytest.fixture(scope="module")
def crash_study(local_ray, small_splits, tmp_path_factory):
    """max_t=3, eta=3, 5 samples: Ray's bracket s=0 takes 2 trials to 3 epochs, bracket s=1 starts
    3 at 1 epoch and keeps ceil(3/3)=1. The first trial to reach epoch 2 crashes once."""
    root = tmp_path_factory.mktemp("tune")
    cfg = TuningConfig(max_t=3, eta=3, num_samples=5, search_space=SPACE, max_failures=2)
    marker = root / "crashed-once"
    seen = []
    study = run_study(
        cfg,
        small_splits,
        seed=11,
        store=StoreConfig(uri=str(root / "store")),
        model=MODEL,
        training=TRAINING,
        crash_once_marker=marker,
        progress=seen.append,
    )
    study.progress_seen = seen  # for test_progress_is_reported_as_trials_finish
    return study, cfg, root, marker


def test_hyperband_stops_some_trials_early_and_returns_the_best(crash_study):
    study, cfg, _, _ = crash_study
    assert study.finished and len(study.trials) == 5
    stopped = [t for t in study.trials if t.status == "stopped"]
    completed = [t for t in study.trials if t.status == "completed"]
    # Bracket s=1 keeps 1 of its 3 trials after 1 epoch: 2 stopped there, 3 trials reach 3 epochs.
    assert len(stopped) == 2 and all(t.epochs == 1 for t in stopped)
    assert len(completed) == 3 and all(t.epochs == 3 for t in completed)
    assert all(len(t.val_accuracy) == t.epochs for t in study.trials)
    assert study.total_epochs == sum(t.epochs for t in study.trials) == 11
    # Every trial keeps its bracket, the one retried after its crash included.
    assert sorted(t.bracket for t in study.trials) == [0, 0, 1, 1, 1]
    # The best is the highest validation accuracy seen at any epoch of any trial.
    best = max(v for t in study.trials for v in t.val_accuracy)
    assert study.best_metric == pytest.approx(best) and study.best_metric > 0.3
    winner = next(t for t in study.trials if t.trial_id == study.best_trial_id)
    assert winner.val_accuracy[study.best_epoch - 1] == pytest.approx(best)
    assert set(study.best_params) == set(SPACE)
    assert study.best_model["width"] == study.best_params["width"] and study.best_model["arch"] == "mlp"
    assert study.best_training["lr"] == pytest.approx(study.best_params["lr"])
    settings = apply_best_config(load_settings(), study.best_params)
    assert settings.model.width == study.best_params["width"]
    assert settings.training.optimizer == study.best_params["optimizer"]
    assert 0 < study.train_seconds < study.wall_seconds
    # The bracket table accounts for every trial once in its first rung.
    rows = bracket_rows(study)
    assert sum(r["trials"] for r in rows if r["rung"] == 0) == 5
    assert sum(r["stopped"] for r in rows) == len(stopped)


def test_trials_report_only_where_hyperband_decides_and_curves_stay_per_epoch(crash_study):
    # max_t=3, eta=3: the brackets' milestones are epochs 1 and 3; epoch 2 travels in the epoch-3
    # report's curve (the Hyperband decisions, and so the study, are those of per-epoch reports).
    import json
    from pathlib import Path

    study, _, _, _ = crash_study
    exp = Path(study.storage_uri)
    for t in study.trials:
        (d,) = [d for d in exp.iterdir() if d.is_dir() and f"_{t.trial_id}_" in d.name]
        rows = [json.loads(x) for x in (d / "result.json").read_text().splitlines() if x.strip()]
        assert {r["epoch"] for r in rows} <= {1, 3}, (t.trial_id, [r["epoch"] for r in rows])
        assert [e for r in rows for e in r["curve_epoch"]][-t.epochs :] == list(range(1, t.epochs + 1)) or t.failures
        assert t.val_accuracy[-1] == pytest.approx(rows[-1]["val_accuracy"])
        assert len(t.val_accuracy) == len(t.val_loss) == t.epochs
    # No TensorBoard copy of the results. progress.csv stays: when a paused trial resumes, Tune 2.55.1
    # may start its result.json afresh (it finds no uploaded copy yet), and the CSV keeps the first rows.
    assert not list(exp.rglob("events.out.tfevents*")) and list(exp.rglob("progress.csv"))


def test_crashed_trial_completes_from_its_checkpoint(crash_study):
    study, _, _, marker = crash_study
    assert marker.exists()  # the crash happened
    crashed = [t for t in study.trials if t.failures]
    assert len(crashed) == 1 and crashed[0].failures == 1
    t = crashed[0]
    assert t.status in ("completed", "stopped") and t.error is None
    assert t.resumes >= 1 and len(t.val_accuracy) == t.epochs >= 2
    assert all(math.isfinite(v) for v in t.val_accuracy)
    assert not [x for x in study.trials if x.status == "error"]


def test_running_a_finished_study_again_trains_nothing(crash_study, small_splits):
    study, cfg, root, _ = crash_study
    again = run_study(
        cfg, small_splits, seed=11, store=StoreConfig(uri=str(root / "store")), model=MODEL, training=TRAINING
    )
    assert again.resumed and again.study_name == study.study_name
    assert again.epochs_this_session == 0
    assert again.best_metric == pytest.approx(study.best_metric) and again.best_params == study.best_params


# A few seconds; a scheduler that leaves a trial paused for ever would hang it (900 s in CI once).
@pytest.mark.timeout(300)
def test_interrupted_study_on_s3_resumes_without_rerunning_finished_trials(local_ray, small_splits, s3_store_config):
    # max_t=3, eta=3: bracket s=0 takes 2 trials to 3 epochs; s=1 starts 3 at 1 epoch, keeps 1.
    cfg = TuningConfig(max_t=3, eta=3, num_samples=5, search_space=SPACE)
    with pytest.raises(StudyInterrupted, match="run the same study again") as exc:
        run_study(
            cfg, small_splits, seed=3, store=s3_store_config, model=MODEL, training=TRAINING, interrupt_after_trials=2
        )
    first = exc.value.partial
    assert first.storage_uri.startswith(f"s3://{s3_store_config.uri[5:]}/tuning/")
    done_first = {t.trial_id: t.epochs for t in first.trials if t.status in ("completed", "stopped")}
    assert len(done_first) >= 2 and any(t.status == "unfinished" for t in first.trials)

    second = run_study(cfg, small_splits, seed=3, store=s3_store_config, model=MODEL, training=TRAINING)
    assert second.resumed and second.finished and second.study_name == first.study_name
    by_id = {t.trial_id: t for t in second.trials}
    assert set(by_id) == {t.trial_id for t in first.trials}
    for tid, epochs in done_first.items():  # finished before the interruption: not trained again
        assert by_id[tid].epochs_this_session == 0 and by_id[tid].epochs == epochs
    assert second.epochs_this_session > 0
    assert all(t.status in ("completed", "stopped") for t in second.trials)
    # Uninterrupted, bracket s=1 stops 2 of its 3 trials. Ray 2.55.1 does not save the
    # scheduler's halving state, and depending on where the interruption lands the restored
    # bracket may halve late or not at all: its trials then run to max_t (a known limit of
    # resuming a Hyperband study: extra epochs, never a re-run of a finished trial). At most the
    # uninterrupted decisions, never more stops than they make:
    stopped = [t for t in second.trials if t.status == "stopped"]
    assert len(stopped) <= 2 and all(t.epochs == 1 for t in stopped)
    assert second.total_epochs <= 5 * 3


def test_progress_is_reported_as_trials_finish(crash_study):
    study, _, _, _ = crash_study
    seen = study.progress_seen
    assert seen, "the progress reporter was never called"
    finished = [p.finished for p in seen]
    assert finished == sorted(finished) and finished[-1] == 5  # counts only go up, to every trial
    last = seen[-1]
    assert (last.total, last.stopped_early, last.errored, last.running) == (5, 2, 0, 0)
    assert last.epochs == study.total_epochs and last.best == pytest.approx(study.best_metric)
    assert max(p.running for p in seen) == 2  # two trials at once on 2 CPUs
    assert any(p.paused for p in seen)  # Hyperband paused trials at the rung, and said so
    assert "5/5 trials finished (2 stopped early)" in last.line() and "best val_accuracy" in last.line()


def test_bohb_runs_a_study(local_ray, small_splits, tmp_path):
    """tuning.scheduler=bohb: HyperBandForBOHB + TuneBOHB (hpbandster, ConfigSpace: the dev extra)."""
    cfg = TuningConfig(scheduler="bohb", max_t=3, eta=3, num_samples=5, search_space=SPACE)
    study = run_study(cfg, small_splits, seed=5, store=StoreConfig(uri=str(tmp_path)), model=MODEL, training=TRAINING)
    assert study.finished and study.scheduler == "bohb" and len(study.trials) == 5
    assert all(t.status in ("completed", "stopped") for t in study.trials)
    assert any(t.status == "stopped" for t in study.trials)  # its Hyperband stopped some early
    assert set(study.best_params) == set(SPACE) and study.best_metric > 0.3
    assert all(1e-3 <= t.config["lr"] <= 3e-2 and t.config["width"] in (16, 32) for t in study.trials)


# 30-70 s end to end: in the full suite, not in the quick `-m "not slow"` run.
@pytest.mark.slow
def test_a_hung_trial_is_stopped_and_retried_from_its_checkpoint(local_ray, small_splits, tmp_path):
    """The first trial to reach epoch 2 goes silent (sleeps for an hour); the stall guard kills its
    worker after tuning.trial_stall_s and Tune retries it from its epoch-1 checkpoint."""
    cfg = TuningConfig(
        max_t=3, eta=3, num_samples=2, search_space=SPACE, max_failures=1, trial_stall_s=20, checkpoint_every=1
    )
    marker = tmp_path / "hung-once"
    study = run_study(
        cfg,
        small_splits,
        seed=5,
        store=StoreConfig(uri=str(tmp_path / "store")),
        model=MODEL,
        training=TRAINING,
        crash_once_marker=marker,
        crash_mode="hang",
    )
    assert marker.exists()
    assert study.finished and len(study.stalled) == 1
    hung_id, silent = study.stalled[0]
    assert 20 <= silent < 120
    hung = next(t for t in study.trials if t.trial_id == hung_id)
    assert hung.failures == 1 and hung.resumes >= 1 and hung.status in ("completed", "stopped")
    assert len(hung.val_accuracy) == hung.epochs and all(math.isfinite(v) for v in hung.val_accuracy)
