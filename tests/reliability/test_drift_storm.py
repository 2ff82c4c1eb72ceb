"""Orchestration: a drift storm yields exactly one retraining run and one new model version.

Two scheduled checks within the cooldown see drift in different batches (two distinct events of
one episode); every event is delivered twice (at-least-once delivery), and an operator starts a
manual retraining within the cooldown too. All five deliveries hit the retraining flow at once,
from five threads. Then a burst of overlapping drift checks (what a scheduler coming back after an
outage may start) checks every batch exactly once.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from tasks.store.artifacts import ArtifactStore
from tasks.store.registry import ModelRegistry
from tests.reliability.conftest import smoke_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def champion_and_stream(tmp_path_factory, prefect_api):
    from flows.training import training
    from tasks.drift.cli import simulate_stream_command

    root = tmp_path_factory.mktemp("storm")
    s = smoke_settings(root)
    training(s)
    simulate_stream_command(
        str(root / "stream"), kind="gaussian_noise", onset=2, duration=4, batches=6, batch_size=100, settings=s
    )
    (root / "batches").mkdir()
    return s, root


def _arrive(root, names):
    for n in names:
        shutil.copy(root / "stream" / f"batch-{n:05d}.npz", root / "batches")


def test_drift_storm_gives_one_retraining_and_one_version(champion_and_stream, figures):
    from flows.drift_check import drift_check
    from flows.retraining import retraining
    from tasks.drift import ledger

    s, root = champion_and_stream
    store = ArtifactStore.from_config(s.store)
    reg = ModelRegistry(store, s.registry.model_name)
    versions0, runs0 = [v["version"] for v in reg.versions()], store.list_runs()

    _arrive(root, [0, 1, 2, 3])
    first = drift_check(s)
    _arrive(root, [4, 5])
    second = drift_check(s)
    events = [first["event"], second["event"]]
    assert all(events) and events[0]["event_id"] != events[1]["event_id"]  # two distinct events
    assert events[0]["payload"]["episode_id"] == events[1]["payload"]["episode_id"]  # of one episode

    def deliver(ev):
        if ev is None:  # the operator's manual trigger, within the cooldown
            return retraining(s)
        p = ev["payload"]
        return retraining(
            s,
            event_id=ev["event_id"],
            episode_id=p["episode_id"],
            batch_ids=p["batch_ids"],
            detector=p["detector"],
            model_version=p["version"],
        )

    deliveries = [events[0], events[1], events[0], events[1], None]
    with ThreadPoolExecutor(len(deliveries)) as pool:
        results = list(pool.map(deliver, deliveries))
    statuses = [r["status"] for r in results]
    trained = [r for r in results if r["status"] != "duplicate"]
    new_versions = [v["version"] for v in reg.versions() if v["version"] not in versions0]
    new_runs = [r for r in store.list_runs() if r not in runs0]
    claims = ledger.retraining_claims(store.backend, s.registry.model_name)
    figures.update(
        drift_events_distinct=2,
        deliveries=len(deliveries),
        duplicate_deliveries=2,
        manual_triggers=1,
        statuses=statuses,
        retraining_runs=len(trained),
        new_versions=len(new_versions),
        new_runs=len(new_runs),
        episode_claims=len(claims),
        objects_lost=0,
    )
    assert len(trained) == 1 and statuses.count("duplicate") == len(deliveries) - 1, statuses
    assert len(new_versions) == 1 and len(new_runs) == 1 and len(claims) == 1
    rec = reg.get(new_versions[0])
    # the one run trained on drifted batches of the episode (whichever delivery won the claim)
    drifted = set(first["drifted"]) | set(second["drifted"])
    assert rec["lineage"]["trigger"]["batch_ids"] and set(rec["lineage"]["trigger"]["batch_ids"]) <= drifted


def test_overlapping_catch_up_checks_check_each_batch_once(champion_and_stream, monkeypatch, figures):
    """Four drift checks at once over six new batches (a catch-up burst): each batch is checked and
    recorded exactly once, whichever check got it."""
    import threading

    from flows.drift_check import drift_check
    from tasks.drift import ledger, report

    # The checks run as threads of this process here, and matplotlib (the p-value plot) is not
    # thread-safe; a Prefect runner runs each flow run in its own process, where this cannot clash.
    lock, real_plot = threading.Lock(), report.pvalue_plot_png

    def locked_plot(*a, **kw):
        with lock:
            return real_plot(*a, **kw)

    monkeypatch.setattr(report, "pvalue_plot_png", locked_plot)

    s, root = champion_and_stream
    s2 = s.model_copy(update={"drift": s.drift.model_copy(update={"batches_uri": str(root / "catchup")})})
    (root / "catchup").mkdir()
    for i in range(6):
        shutil.copy(root / "stream" / f"batch-{i:05d}.npz", root / "catchup" / f"late-{i:05d}.npz")
    store = ArtifactStore.from_config(s.store)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: drift_check(s2), range(4)))
    checked = [b for r in results for b in r["checked"]]
    late = [h for h in ledger.check_history(store.backend, s.registry.model_name) if h["batch_id"].startswith("late-")]
    figures.update(
        overlapping_checks=4, batches=6, checks_recorded=len(late), batch_checked_twice=len(checked) - len(set(checked))
    )
    # each once, none twice (ids are the file's key plus a content hash: tasks/drift/discovery.py)
    assert sorted(b.split(".npz-")[0] for b in checked) == sorted(f"late-{i:05d}" for i in range(6))
    assert len(set(checked)) == 6
    assert len(late) == 6
