"""Flower deployment engine with real processes on 127.0.0.1: a SuperLink and three SuperNodes over
gRPC, with TLS + SuperNode authentication (certificates from infra/flower/make_certs.sh) and a
SuperNode holding an unregistered key that must be refused, and insecure with a SuperNode killed
mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.federated.engine import FlowerCluster, run_federated

from .conftest import fed_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]
RECIPE = Path(__file__).resolve().parents[2] / "infra" / "flower" / "make_certs.sh"
ROGUE_PARTITION = 3  # a client id none of the registered nodes has: any work it got would show in the participants


def _no_flower_processes_left(cluster: FlowerCluster) -> bool:
    out = subprocess.run(["ps", "-eo", "pgid="], capture_output=True, text=True).stdout.split()
    groups = {p.pid for p in [cluster.superlink, *cluster.supernodes, *cluster.extra_supernodes] if p is not None}
    return not (groups & {int(x) for x in out})


def _stop_by_pid(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session, and its group (its flower-superexec child), by pid."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tls_auth_run(digits_splits, tmp_path_factory):
    """One TLS + SuperNode-auth federation through ``run_federated``'s own cluster (the production
    path: ``FlowerCluster.from_config``), 3 registered SuperNodes. Once they are online and before
    ``flwr run``, a fourth SuperNode starts against the same SuperLink holding an ECDSA key pair made
    like make_certs.sh's but never registered; it is given up to 60 s to be refused, then stopped."""
    tmp = tmp_path_factory.mktemp("tls-auth")
    certs, rogue_dir = tmp / "certs", tmp / "rogue"
    subprocess.run(["bash", str(RECIPE), str(certs), "3"], check=True, capture_output=True)
    rogue_dir.mkdir()
    rogue_key = rogue_dir / "client_credentials_rogue"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-C", "", "-f", str(rogue_key)],
        check=True,
        capture_output=True,
    )
    s = fed_settings(
        engine="deployment",
        num_clients=3,
        rounds=2,
        min_fit_clients=3,
        tls_ca_cert=str(certs / "ca.crt"),
        tls_server_cert=str(certs / "server.pem"),
        tls_server_key=str(certs / "server.key"),
        supernode_auth_dir=str(certs),
    )
    seen: dict = {}
    real_run_app = FlowerCluster.run_app

    def run_app_after_a_rogue_tried(self: FlowerCluster, app_dir, timeout, logname="flwr-run.log"):
        seen["cluster"] = self
        seen["online_before"] = self.online_nodes()
        rogue = self.start_extra_supernode(
            ROGUE_PARTITION, self.data_paths[0], rogue_key, logname="supernode-rogue.log"
        )
        t0 = time.monotonic()
        try:
            rc = rogue.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = None  # still running after 60 s: the assertions below decide whether it got in
        seen["rogue_seconds"] = round(time.monotonic() - t0, 1)
        seen["rogue_exit"] = rc
        seen["online_with_rogue"] = self.online_nodes()
        seen["nodes_listed"] = _listed_nodes(self)
        _stop_by_pid(rogue)
        seen["rogue_pid_gone"] = rogue.poll() is not None
        return real_run_app(self, app_dir, timeout, logname)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FlowerCluster, "run_app", run_app_after_a_rogue_tried)
        res = run_federated(s, digits_splits, workdir=tmp / "w")
    home = next((tmp / "w").glob("flwr-home-*"))
    logs = home / "logs"
    return {
        "res": res,
        "home": home,
        "seen": seen,
        "rogue_log": (logs / "supernode-rogue.log").read_text(errors="replace"),
        "superlink_log": (logs / "superlink.log").read_text(errors="replace"),
    }


def _client_files(splits, root: Path, n: int, seed: int = 3) -> list[Path]:
    """``n`` data owners' files: disjoint random cuts of the training split, each in its own directory."""
    perm = np.random.default_rng(seed).permutation(len(splits.train))
    paths = []
    for i, idx in enumerate(np.array_split(perm, n)):
        d = root / f"owner-{i}"
        d.mkdir(parents=True)
        np.savez(d / "data.npz", x=splits.train.x[np.sort(idx)], y=splits.train.y[np.sort(idx)])
        paths.append(d / "data.npz")
    return paths


def _listed_nodes(cluster: FlowerCluster) -> list[dict]:
    out = cluster.flwr(["supernode", "list", cluster.CONNECTION, "--format", "json"], timeout=30).stdout
    return json.loads(out[out.index("{") :]).get("nodes", []) if "{" in out else []


def test_deployment_engine_with_tls_and_supernode_auth(tls_auth_run):
    res, home = tls_auth_run["res"], tls_auth_run["home"]
    assert res.engine == "deployment"
    assert [r["participants"] for r in res.rounds[1:]] == [[0, 1, 2], [0, 1, 2]]
    assert res.rounds[-1]["test_accuracy"] > res.rounds[0]["test_accuracy"] + 0.2
    assert sorted(res.checkpoints) == [1, 2]
    assert "root-certificates" in (home / "config.toml").read_text()
    assert "insecure" not in (home / "config.toml").read_text()
    assert (home / "logs" / "superlink.log").is_file() and len(list((home / "logs").glob("supernode-[0-9].log"))) == 3
    assert _no_flower_processes_left(tls_auth_run["seen"]["cluster"])


def test_unregistered_supernode_is_refused_by_tls_superlink(tls_auth_run, figures):
    res, seen, rogue_log = tls_auth_run["res"], tls_auth_run["seen"], tls_auth_run["rogue_log"]
    figures.update(
        supernodes_registered=3,
        supernodes_unregistered=1,
        faults_injected=1,
        unregistered_exit_status=seen.get("rogue_exit"),
        unregistered_refused_after_s=seen.get("rogue_seconds"),
        nodes_online_before=seen.get("online_before"),
        nodes_online_with_unregistered=seen.get("online_with_rogue"),
        nodes_listed=len(seen.get("nodes_listed", [])),
        rounds=2,
        rounds_completed=len(res.rounds) - 1,
        nodes_sampled_per_round=[r["sampled"] for r in res.rounds[1:]],
        replies_rejected=sum(len(r["failures"]) for r in res.rounds[1:]),
        runs_completed=1,
        objects_lost=2 - len(res.checkpoints),
    )

    # refused at activation: the SuperLink has no node with that public key; the SuperNode gives up
    assert seen["rogue_exit"] not in (None, 0), rogue_log[-2000:]
    assert "FAILED_PRECONDITION" in rogue_log and "No SuperNode found with the given public key" in rogue_log
    assert "Activation failed: No SuperNode found with the given public key" in tls_auth_run["superlink_log"]
    assert seen["rogue_pid_gone"]
    # it never joined: the SuperLink lists the 3 registered nodes only, before and after the attempt
    assert seen["online_before"] == 3 and seen["online_with_rogue"] == 3 and len(seen["nodes_listed"]) == 3
    # and never received work: every round sampled the 3 registered nodes, all of which replied
    assert [r["sampled"] for r in res.rounds[1:]] == [3, 3]
    assert all(r["participants"] == [0, 1, 2] and not r["failures"] for r in res.rounds[1:])


def test_killed_supernode_is_left_out_and_run_completes(digits_splits, tmp_path):
    """Also covers what the former ``test_deployment_engine_three_supernodes`` did (an insecure
    3-SuperNode federation learns, checkpoints every round, logs every process); the TLS test above
    covers ``run_federated`` starting its own cluster from the config."""
    # round 2 waits the round timeout for the killed node; rounds take a few seconds here
    s = fed_settings(engine="deployment", num_clients=3, rounds=3, min_fit_clients=2, round_timeout_s=30.0)
    s = s.model_copy(update={"store": s.store.model_copy(update={"uri": str(tmp_path / "store")})})
    work = tmp_path / "w"
    files = _client_files(digits_splits, tmp_path / "owners", 3)
    cluster = FlowerCluster(3, tmp_path / "home", data_paths=files, startup_timeout=90)
    killed = threading.Event()

    def killer():
        # the ServerApp's results are staged in the artifact store (federated/staging/<id>/out/), not the work dir
        staging = tmp_path / "store" / "federated" / "staging"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(staging.glob("*/out/checkpoints/round-001.safetensors")):
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
    assert res.engine == "deployment"
    r1, r2, r3 = res.rounds[1:]
    assert r1["participants"] == [0, 1, 2]
    assert r2["participants"] == [0, 1] and r3["participants"] == [0, 1]
    assert any(f["client"] == 2 for f in r2["failures"])
    assert r3["test_accuracy"] > res.rounds[0]["test_accuracy"] + 0.2
    assert sorted(res.checkpoints) == [1, 2, 3]
    # the staging is deleted once collected; the work dir never held the server's inputs or results
    assert not list((tmp_path / "store").rglob("*.safetensors")) and not list(work.rglob("*.npz"))
    assert not (work / "out").exists()
    # the ServerApp was told a store URI and a prefix in the Flower run config, no directory of the work dir
    run_config = (work / "app" / "pyproject.toml").read_text().split("[tool.flwr.app.config]")[1]
    assert "driftloop-store-uri" in run_config and "driftloop-store-prefix" in run_config
    assert str(work) not in run_config and "driftloop-workdir" not in run_config
    logs = tmp_path / "home" / "logs"
    assert (logs / "superlink.log").is_file() and len(list(logs.glob("supernode-*.log"))) == 3
    assert "insecure = true" in (tmp_path / "home" / "config.toml").read_text()
