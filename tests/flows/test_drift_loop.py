"""The drift check and retraining flows under a real Prefect API, on the local store."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.settings import load_settings
from tasks.store.artifacts import ArtifactStore
from tasks.store.registry import ModelRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_api):
    """A champion trained once for the module, and a stream with drift at batches 3-5."""
    from flows.training import training
    from tasks.drift.cli import simulate_stream_command

    root = tmp_path_factory.mktemp("loop")
    # seed 1: the detectors' false-alarm rate is 5% per clean batch; with the hash splits of
    # tasks/data/splits.py the default seed's stream had one (batch 1, p = 0.0025 < 0.05/10),
    # seeds 1-3 none (min clean-batch p 0.0105..0.0882).
    s = load_settings(profile="smoke", environ={}, overrides={
        "seed": 1,
        "tuning.enabled": False, "federated.enabled": False, "adversarial.enabled": False,
        "store.uri": str(root / "store"), "drift.batches_uri": str(root / "batches")})
    training(s)
    simulate_stream_command(str(root / "batches"), kind="gaussian_noise", onset=3, duration=3, batches=8,
                            batch_size=100, settings=s)
    # A broken batch among them: NaN values. It must be quarantined and get no verdict.
    bad = np.load(root / "batches" / "batch-00001.npz")
    x = bad["x"].copy()
    x[0, 0, 0, 0] = np.nan
    np.savez(root / "batches" / "batch-00001b.npz", x=x, y=bad["y"])
    return s, root


def test_drift_check_flags_drift_quarantines_bad_batch_and_emits_one_event(loop):
    from flows.drift_check import drift_check

    s, root = loop
    r = drift_check(s)
    assert r["status"] == "drift"
    assert r["drifted"] == ["batch-00003", "batch-00004", "batch-00005"]
    assert r["quarantined"] == ["batch-00001b"]
    assert "batch-00001b" not in r["checked"] and len(r["checked"]) == 8
    ev = r["event"]
    assert ev["sent"] and ev["payload"]["batch_ids"] == r["drifted"] and ev["payload"]["model"] == "digits-classifier"
    store = ArtifactStore.from_config(s.store)
    assert any(k.endswith("report.json") for k in store.backend.list("quarantine/batch-00001b"))

    # Nothing new: nothing checked twice, no event.
    again = drift_check(s)
    assert again["checked"] == [] and again["event"] is None and again["status"] == "ok"


def test_retraining_runs_once_per_episode_with_lineage(loop):
    from flows.drift_check import drift_check
    from flows.retraining import retraining

    s, root = loop
    store = ArtifactStore.from_config(s.store)
    reg = ModelRegistry(store, s.registry.model_name)
    episode = "episode-test-1"
    r = retraining(s, event_id="evt-1", episode_id=episode, batch_ids=["batch-00003", "batch-00004"],
                   detector="ks_softmax", model_version=1)
    assert r["status"] in ("promoted", "kept-champion")
    rec = reg.get(r["version"])
    assert rec["lineage"]["parent_version"] == 1 and rec["lineage"]["trigger"]["event_id"] == "evt-1"
    assert store.manifest(r["run_id"])["extra"]["extra_batches"][0].endswith("batch-00003.npz")
    n_versions = len(reg.versions())
    # A duplicate delivery of the same episode trains nothing.
    dup = retraining(s, event_id="evt-2", episode_id=episode, batch_ids=["batch-00005"])
    assert dup["status"] == "duplicate" and len(reg.versions()) == n_versions
    with pytest.raises(Exception, match="batch-99999"):
        retraining(s, event_id="evt-3", episode_id="episode-test-2", batch_ids=["batch-99999"])


def test_drift_check_without_champion_skips_and_emits_nothing(prefect_api, tmp_path):
    from flows.drift_check import drift_check

    s = load_settings(profile="smoke", environ={}, overrides={"store.uri": str(tmp_path / "s"),
                                                              "drift.batches_uri": str(tmp_path / "b")})
    r = drift_check(s)
    assert r["status"] == "skipped" and "no champion" in r["reason"] and r["event"] is None
