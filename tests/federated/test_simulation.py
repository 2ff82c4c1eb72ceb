"""Flower simulation engine end to end (subprocess + Ray): learning, faulty clients, failing rounds."""

from __future__ import annotations

import os

import pytest

from tasks.federated.engine import run_federated
from tasks.federated.faults import Fault
from tasks.federated.strategies import RoundFailed
from tasks.models.serialize import build_from_spec
from tasks.store.codecs import state_dict_from_bytes

from .conftest import fed_settings


def test_simulation_learns_and_survives_nan_and_crashing_clients(digits_splits, tmp_path):
    s = fed_settings(num_clients=4, rounds=3, min_fit_clients=2)
    faults = [Fault(client=3, kind="nan"), Fault(client=2, kind="crash", rounds=[2])]
    res = run_federated(s, digits_splits, workdir=tmp_path / "w", faults=faults)

    assert [r["round"] for r in res.rounds] == [0, 1, 2, 3]
    r0, r1, r2, r3 = res.rounds
    # learning: the global model's loss falls and its accuracy rises round over round
    assert r3["test_loss"] < r1["test_loss"] < r0["test_loss"]
    assert r3["test_accuracy"] > r0["test_accuracy"] + 0.3
    assert r3["train_loss"] < r1["train_loss"]
    # the NaN client is never averaged in; the crashed client is left out of round 2 only
    assert r1["participants"] == [0, 1, 2] and r2["participants"] == [0, 1] and r3["participants"] == [0, 1, 2]
    nan_reasons = [f["reason"] for r in res.rounds[1:] for f in r["failures"] if f["client"] == 3]
    assert len(nan_reasons) == 3 and all("NaN/inf" in x for x in nan_reasons)
    assert any("injected crash" in f["reason"] for f in r2["failures"])
    # every round's global model was checkpointed; the last equals the returned weights
    assert sorted(res.checkpoints) == [1, 2, 3]
    last = state_dict_from_bytes(res.checkpoints[3])
    assert all((last[k] == res.state_dict[k]).all() for k in last)
    build_from_spec(res.model_spec).load_state_dict(res.state_dict)
    assert res.partition["num_clients"] == 4 and res.strategy == "fedavg" and res.engine == "simulation"


@pytest.mark.slow
def test_round_with_too_few_replies_fails_loudly(digits_splits, tmp_path):
    s = fed_settings(num_clients=3, rounds=2, min_fit_clients=2)
    faults = [Fault(client=1, kind="crash"), Fault(client=2, kind="nan")]
    with pytest.raises(RoundFailed, match="federated round 1: 1 usable client replies of 3 sampled"):
        run_federated(s, digits_splits, workdir=tmp_path / "w", faults=faults)
    assert not (tmp_path / "w" / "out" / "final.safetensors").exists()


def _short_tmp() -> str:
    """A short directory for Ray's temp files (its socket paths must stay under 107 characters)."""
    import tempfile

    return tempfile.mkdtemp(prefix="rt", dir="/tmp")


def test_simulation_starts_its_own_ray_despite_a_stale_cluster_file(digits_splits, tmp_path, monkeypatch):
    """Issue 17: with no address, ``ray.init`` joins the cluster named in ``$RAY_TMPDIR/ray/ray_current_cluster``
    (a stale file, or another job's Ray on the machine). The simulation must start its own runtime."""
    import shutil

    from tasks.federated.processes import free_port

    rt = _short_tmp()
    try:
        os.makedirs(os.path.join(rt, "ray"))
        with open(os.path.join(rt, "ray", "ray_current_cluster"), "w") as f:
            f.write(f"127.0.0.1:{free_port()}\n")  # nobody listens there
        monkeypatch.setenv("RAY_TMPDIR", rt)
        res = run_federated(
            fed_settings(num_clients=2, rounds=1, round_timeout_s=120.0), digits_splits, workdir=tmp_path / "w"
        )
        assert [r["participants"] for r in res.rounds[1:]] == [[0, 1]]
        assert res.rounds[1]["test_accuracy"] > res.rounds[0]["test_accuracy"]
    finally:
        shutil.rmtree(rt, ignore_errors=True)


def test_a_crashed_simulation_runtime_is_reported_as_such(digits_splits, tmp_path, monkeypatch):
    """Issue 17: a runtime that cannot start (here Ray's temp dir is a regular file) fails the stage at
    once with Ray's own error, not after the round timeout with a RoundFailed blaming the clients."""
    import time

    from tasks.federated.processes import FederatedEngineError

    not_a_dir = tmp_path / "not-a-dir"
    not_a_dir.write_text("a file where Ray wants its temp dir\n")
    monkeypatch.setenv("RAY_TMPDIR", str(not_a_dir))
    t0 = time.monotonic()
    with pytest.raises(FederatedEngineError, match=r"runtime crashed \(not a client failure\)") as e:
        run_federated(
            fed_settings(num_clients=2, rounds=1, round_timeout_s=300.0), digits_splits, workdir=tmp_path / "w"
        )
    assert time.monotonic() - t0 < 120, "waited for the round timeout"
    assert not isinstance(e.value, RoundFailed)
    assert "not-a-dir" in str(e.value) or "NotADirectoryError" in str(e.value) or "FileExistsError" in str(e.value)
