"""Tuning scenario (issue 8): a synchronous-Hyperband study survives a trial's worker process dying
mid-trial and its driver being SIGKILLed, and ends with the same best configuration as an
uninterrupted run with the same seed.

* One uninterrupted study (module fixture) is the reference: its trial table and best config.
* Trial kill: the first trial to reach epoch 2 SIGKILLs its own Ray worker process (after its
  epoch-1 checkpoint); Tune retries it (``FailureConfig``) from that checkpoint.
* Driver kill: the study runs in a separate process (its own Ray, in its own process group); once
  a trial has finished, the whole group is SIGKILLed, then the study is restored here
  (``run_study`` -> ``Tuner.restore``).

The study (tests/reliability/tuning_driver.py): max_t=3, eta=3, 4 samples, 1 CPU per trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.tuning.search import config_key

from . import tuning_driver as study_def

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(study_def.__file__)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray (2 CPUs, no dashboard, token authentication) for the module; run_study reuses it."""
    import ray

    from tasks.ray_security import enable_token_auth

    enable_token_auth()  # as connect_ray does: Ray Tune runs under token authentication
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def splits():
    return study_def.study_splits()


@pytest.fixture(scope="module")
def clean_study(ray_local, splits, tmp_path_factory):
    """The uninterrupted study: the reference every faulty run is compared with."""
    study = study_def.run(tmp_path_factory.mktemp("tune-clean") / "store", splits)
    assert study.finished and not study.resumed and len(study.trials) == study_def.NUM_SAMPLES
    assert not any(t.failures for t in study.trials)
    return study


# --------------------------------------------------------------------------- helpers


def table(study) -> dict[str, tuple]:
    """Trial table keyed by config: (status, epochs, bracket, exact validation curve)."""
    return {config_key(t.config): (t.status, t.epochs, t.bracket, tuple(t.val_accuracy)) for t in study.trials}


def final_table(study) -> dict[str, tuple]:
    """Trial table keyed by config: (status, epochs, bracket, last validation accuracy). A restored
    driver's in-memory curve can miss results reported before the kill (they are in result.json)."""
    return {
        config_key(t.config): (t.status, t.epochs, t.bracket, t.val_accuracy[-1] if t.val_accuracy else None)
        for t in study.trials
    }


def trial_rows(study, trial_id: str) -> list[dict]:
    """Every result Tune recorded for a trial (result.json, one line per report, retries included)."""
    exp = Path(study.storage_uri)
    (trial_dir,) = [d for d in exp.iterdir() if d.is_dir() and f"_{trial_id}_" in d.name]
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def objects_lost(study) -> int:
    """Results and checkpoints of the study that do not read back (0: the store lost nothing)."""
    import torch

    from tasks.tuning.search import META_FILE, STATE_FILE

    exp = Path(study.storage_uri)
    lost = 0
    for t in study.trials:
        dirs = [d for d in exp.iterdir() if d.is_dir() and f"_{t.trial_id}_" in d.name]
        if len(dirs) != 1:
            lost += 1
            continue
        try:
            rows = trial_rows(study, t.trial_id)
            assert max(r["epoch"] for r in rows) == t.epochs
        except Exception:
            lost += 1
        ckpts = sorted(dirs[0].glob("checkpoint_*"))
        lost += not ckpts  # every trial ran at least one epoch, and checkpoints every epoch
        for c in ckpts:
            try:
                state = torch.load(c / STATE_FILE, map_location="cpu", weights_only=True)
                meta = json.loads((c / META_FILE).read_text())
                assert set(state) == {"model", "optimizer"} and 1 <= meta["epoch"] <= t.epochs
                assert meta["config"] == t.config
            except Exception:
                lost += 1
    return lost


def duplicates(study) -> int:
    """Trials beyond the first with the same id or the same sampled config."""
    ids = [t.trial_id for t in study.trials]
    keys = [config_key(t.config) for t in study.trials]
    return (len(ids) - len(set(ids))) + (len(keys) - len(set(keys)))


def saved_statuses(exp: Path) -> dict[str, str]:
    """trial id -> status in the newest experiment snapshot Tune wrote ({} while there is none or
    it is being written)."""
    files = sorted(exp.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return {}
    try:
        data = json.loads(files[-1].read_text())
        return {s["trial_id"]: s["status"] for s in (json.loads(td[0]) for td in data["trial_data"])}
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return {}


def session_pids(sid: int) -> list[int]:
    """Processes still alive in session ``sid`` (the killed driver's session)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getsid(int(p.name)) == sid:
                    out.append(int(p.name))
            except OSError:
                pass
    return out


# --------------------------------------------------------------------------- trial kill


def test_killed_trial_resumes_from_its_checkpoint_and_the_best_config_is_unchanged(
    clean_study, splits, tmp_path, figures
):
    marker = tmp_path / "killed-once"
    study = study_def.run(tmp_path / "store", splits, crash_once_marker=marker, crash_mode="kill")
    figures["faults_injected"] = int(marker.exists())
    figures["trials"] = len(study.trials)
    killed = [t for t in study.trials if t.failures]
    resumed_from = []
    for t in killed:
        rows = trial_rows(study, t.trial_id)
        # The reports of the retried worker: a new pid, restored from the last checkpoint before the kill.
        first_pid = rows[0]["pid"]
        retry = [r for r in rows if r["pid"] != first_pid]
        if retry:
            resumed_from.append(int(retry[0]["restored_from_epoch"]))
        figures["killed_trial"] = {
            "trial_id": t.trial_id,
            "pids": sorted({r["pid"] for r in rows}),
            "epochs_reported": [r["epoch"] for r in rows],
        }
    figures["trials_resumed_from_checkpoint"] = sum(1 for e in resumed_from if e > 0)
    figures["resumed_from_epoch"] = resumed_from
    figures["best_config_clean"] = clean_study.best_params
    figures["best_config_faulty"] = study.best_params
    figures["best_config_equal"] = study.best_params == clean_study.best_params
    figures["trial_tables_equal"] = table(study) == table(clean_study)
    figures["duplicate_trials"] = duplicates(study)
    figures["runs_completed"] = int(study.finished)
    figures["objects_lost"] = objects_lost(study)
    figures["wall_seconds"] = round(study.wall_seconds, 1)

    assert marker.exists(), "no trial reached epoch 2: the fault was not injected"
    assert len(killed) == 1 and killed[0].failures == 1
    t = killed[0]
    error = (
        Path(study.storage_uri)
        / next(d.name for d in Path(study.storage_uri).iterdir() if f"_{t.trial_id}_" in d.name)
        / "error.txt"
    ).read_text()
    assert "actor died" in error.lower()  # a real process death, not an exception in the trial
    # Resumed from its epoch-1 checkpoint (not from epoch 0), by a new worker process.
    assert resumed_from == [1] and len(figures["killed_trial"]["pids"]) == 2
    assert t.status in ("completed", "stopped") and t.error is None and t.resumes >= 1
    assert study.finished and not [x for x in study.trials if x.status == "error"]
    # Same trials, same Hyperband decisions, bitwise the same curves, hence the same best.
    assert table(study) == table(clean_study)
    assert study.best_params == clean_study.best_params
    assert study.best_metric == clean_study.best_metric and study.best_epoch == clean_study.best_epoch
    assert figures["duplicate_trials"] == 0 and figures["objects_lost"] == 0


# --------------------------------------------------------------------------- driver kill


def test_killed_driver_restored_study_has_no_duplicate_trials_and_the_same_best(clean_study, splits, tmp_path, figures):
    store = tmp_path / "store"
    exp = study_def.experiment_dir(store, splits)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PYTHONPATH"] = str(ROOT)
    # Tune snapshots the experiment state to the store every max(10 s, 19 x save time) by default
    # ("auto"): what a driver kill loses is the progress since the last snapshot (trials that had
    # finished after it are resumed from the checkpoint it records). A short period lets the kill
    # land right after a snapshot that records a finished trial, in the ~5 s before the next wave.
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "0"
    log = open(tmp_path / "driver.log", "wb")
    # A new session: the driver leads the process group of its Ray (GCS, raylet, workers).
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(store), "1"],  # one trial at a time: they finish one by one
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            statuses = saved_statuses(exp)
            if any(s == "TERMINATED" for s in statuses.values()):
                break
            time.sleep(0.1)
        running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert running, f"the driver ended before it could be killed:\n{(tmp_path / 'driver.log').read_text()[-3000:]}"
    finished_at_kill = {tid for tid, s in statuses.items() if s == "TERMINATED"}
    assert finished_at_kill and set(statuses.values()) != {"TERMINATED"}, (
        f"the kill did not land mid-study ({statuses}):\n{(tmp_path / 'driver.log').read_text()[-3000:]}"
    )
    # Nothing of the killed driver's Ray survives it (fate-sharing and the process group).
    for _ in range(50):
        leaked = session_pids(proc.pid)
        if not leaked:
            break
        time.sleep(0.1)
    for pid in leaked:  # ours (the killed driver's session): do not leave them behind
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    before = saved_statuses(exp)
    epochs_before, ckpt_before = {}, {}
    for d in exp.iterdir():
        if d.is_dir() and d.name.startswith("train_trial_"):
            tid = next((tid for tid in before if f"_{tid}_" in d.name), None)
            if tid is None:  # a trial Tune created after its last snapshot: the restore does not know it
                continue
            rows = (
                [json.loads(x) for x in (d / "result.json").read_text().splitlines() if x.strip()]
                if (d / "result.json").exists()
                else []
            )
            epochs_before[tid] = max((r["epoch"] for r in rows), default=0)
            ckpt_before[tid] = max(
                (
                    json.loads((c / "meta.json").read_text())["epoch"]
                    for c in d.glob("checkpoint_*")
                    if (c / "meta.json").exists()
                ),
                default=0,
            )

    study = study_def.run(store, splits)  # run_study finds the experiment: Tuner.restore
    by_id = {t.trial_id: t for t in study.trials}
    restore_rows = {t.trial_id: [r for r in trial_rows(study, t.trial_id)] for t in study.trials}
    session = next(rows[-1]["session"] for tid, rows in restore_rows.items() if by_id[tid].epochs_this_session)
    resumed_from = {
        tid: rows_s[0]["restored_from_epoch"]
        for tid, rows in restore_rows.items()
        if (rows_s := [r for r in rows if r["session"] == session])
    }
    figures["faults_injected"] = 1
    figures["trials"] = len(study.trials)
    figures["trials_at_kill"] = before
    figures["trials_finished_at_kill"] = sorted(finished_at_kill)
    figures["epochs_at_kill"] = epochs_before
    figures["checkpoint_epoch_at_kill"] = ckpt_before
    figures["leaked_processes"] = len(leaked)
    figures["trials_resumed_from_checkpoint"] = sum(1 for e in resumed_from.values() if e > 0)
    figures["resumed_from_epoch"] = resumed_from
    figures["best_config_clean"] = clean_study.best_params
    figures["best_config_faulty"] = study.best_params
    figures["best_config_equal"] = study.best_params == clean_study.best_params
    figures["trial_tables_equal"] = table(study) == table(clean_study)
    figures["duplicate_trials"] = (
        duplicates(study)
        + sum(1 for d in exp.iterdir() if d.is_dir() and d.name.startswith("train_trial_"))
        - len(study.trials)
    )
    figures["runs_completed"] = int(study.finished)
    figures["objects_lost"] = objects_lost(study)
    figures["epochs_after_restore"] = study.epochs_this_session

    assert leaked == [], f"processes of the killed driver's Ray outlived it: {leaked}"
    assert study.resumed and study.finished
    # The plan's trials, each once: no trial id, config or trial directory twice.
    assert len(study.trials) == study_def.NUM_SAMPLES == len(clean_study.trials)
    assert figures["duplicate_trials"] == 0
    assert set(before) == set(by_id)
    # Trials finished before the kill are not run again.
    for tid in finished_at_kill:
        assert by_id[tid].epochs_this_session == 0 and by_id[tid].epochs == epochs_before[tid]
        assert tid not in resumed_from
    # Trials run by the restore continued from a checkpoint written before the kill (or from epoch
    # 0 when they had none), never from past it.
    assert study.epochs_this_session > 0
    for tid, e in resumed_from.items():
        assert e <= ckpt_before.get(tid, 0)
    assert all(t.status in ("completed", "stopped") for t in study.trials)
    assert final_table(study) == final_table(clean_study)
    assert study.best_params == clean_study.best_params and study.best_metric == clean_study.best_metric
    assert figures["objects_lost"] == 0
