"""Flower deployment engine with real processes on 127.0.0.1: a SuperLink and three SuperNodes over
gRPC, insecure and with TLS + SuperNode authentication (certificates from infra/flower/make_certs.sh),
and a SuperNode killed mid-run."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tasks.federated.engine import FlowerCluster, run_federated

from .conftest import fed_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]
RECIPE = Path(__file__).resolve().parents[2] / "infra" / "flower" / "make_certs.sh"


def _no_flower_processes_left(cluster: FlowerCluster) -> bool:
    out = subprocess.run(["ps", "-eo", "pgid="], capture_output=True, text=True).stdout.split()
    groups = {p.pid for p in [cluster.superlink, *cluster.supernodes] if p is not None}
    return not (groups & {int(x) for x in out})


def test_deployment_engine_three_supernodes(digits_splits, tmp_path):
    s = fed_settings(engine="deployment", num_clients=3, rounds=2, min_fit_clients=3)
    res = run_federated(s, digits_splits, workdir=tmp_path / "w")
    assert res.engine == "deployment"
    assert [r["participants"] for r in res.rounds[1:]] == [[0, 1, 2], [0, 1, 2]]
    assert res.rounds[-1]["test_accuracy"] > res.rounds[0]["test_accuracy"] + 0.2
    assert sorted(res.checkpoints) == [1, 2]
    logs = tmp_path / "w"
    assert list(logs.glob("flwr-home-*/logs/superlink.log")) and len(list(logs.glob("flwr-home-*/logs/supernode-*.log"))) == 3


def test_deployment_engine_with_tls_and_supernode_auth(digits_splits, tmp_path):
    certs = tmp_path / "certs"
    subprocess.run(["bash", str(RECIPE), str(certs), "3"], check=True, capture_output=True)
    s = fed_settings(engine="deployment", num_clients=3, rounds=2, min_fit_clients=3,
                     tls_ca_cert=str(certs / "ca.crt"), tls_server_cert=str(certs / "server.pem"),
                     tls_server_key=str(certs / "server.key"), supernode_auth_dir=str(certs))
    res = run_federated(s, digits_splits, workdir=tmp_path / "w")
    assert [r["participants"] for r in res.rounds[1:]] == [[0, 1, 2], [0, 1, 2]]
    assert res.rounds[-1]["test_accuracy"] > res.rounds[0]["test_accuracy"] + 0.2
    home = next((tmp_path / "w").glob("flwr-home-*"))
    assert "root-certificates" in (home / "config.toml").read_text()
    assert "insecure" not in (home / "config.toml").read_text()


def test_killed_supernode_is_left_out_and_run_completes(digits_splits, tmp_path):
    s = fed_settings(engine="deployment", num_clients=3, rounds=3, min_fit_clients=2, round_timeout_s=45.0)
    work = tmp_path / "w"
    cluster = FlowerCluster(3, tmp_path / "home", startup_timeout=90)
    killed = threading.Event()

    def killer():
        ckpt = work / "out" / "checkpoints" / "round-001.safetensors"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not ckpt.exists():
            time.sleep(0.2)
        cluster.kill_supernode(2)
        killed.set()

    with cluster:
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        res = run_federated(s, digits_splits, workdir=work, cluster=cluster)
        t.join(timeout=5)
    assert killed.is_set()
    assert _no_flower_processes_left(cluster)
    r1, r2, r3 = res.rounds[1:]
    assert r1["participants"] == [0, 1, 2]
    assert r2["participants"] == [0, 1] and r3["participants"] == [0, 1]
    assert any(f["client"] == 2 for f in r2["failures"])
    assert r3["test_accuracy"] > res.rounds[0]["test_accuracy"] + 0.2
