"""The tune stage against a real multi-node Ray cluster: separate ``ray start`` processes on 127.0.0.1
(a head with no CPUs, a CPU worker, a worker with one logical GPU), token authentication
cluster-wide, study state and checkpoints on S3 (SeaweedFS), reached through ``tuning.ray_address``.

* placement: with ``gpu: 0.5`` every trial runs on the GPU worker, two at a time on its one GPU
  (GPU id 0 each); CPU-only trials get no GPU (Ray may place them on either worker);
* a worker node SIGKILLed mid-study (its whole process group): the study completes on the
  remaining node, the lost trials resume from their S3 checkpoints, and the best configuration
  equals the uninterrupted study's;
* token mismatch (driver without a token, with a wrong one; a cluster without tokens) and a local
  store with a cluster fail before the first trial, saying what to set.

The cluster is started once for the module (about 15 s) and stopped by process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.models.config import ModelConfig, TrainingConfig
from tasks.tuning.config import TuningConfig
from tasks.tuning.local_cluster import FAST_HEALTH_CHECKS, node_env, start_cluster
from tasks.tuning.search import run_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SPACE = {
    "lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2},
    "width": {"type": "choice", "values": [16, 32]},
    "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
}
MODEL = ModelConfig(arch="mlp", depth=1)
TRAINING = TrainingConfig(num_threads=1)
SEED = 17


@pytest.fixture(scope="module")
def cluster():
    """Head (0 CPUs: it only coordinates) + CPU worker (2 CPUs) + GPU worker (2 CPUs, 1 logical GPU),
    all with this test session's Ray token (tests/conftest.py), so the driver here is authorised."""
    import ray

    if ray.is_initialized():  # a local Ray of an earlier module in this process
        ray.shutdown()
    c = start_cluster(
        [{"num_cpus": 2, "num_gpus": 0}, {"num_cpus": 2, "num_gpus": 1}],
        head_cpus=0,
        token=os.environ["RAY_AUTH_TOKEN"],
        extra_env=FAST_HEALTH_CHECKS,
    )
    yield c
    c.stop()


def study_cfg(cluster, gpu: float, **kw) -> TuningConfig:
    # max_t=3, eta=3, 5 samples: bracket s=0 takes 2 trials to 3 epochs; s=1 starts 3 at 1, keeps 1.
    return TuningConfig(
        max_t=3,
        eta=3,
        num_samples=5,
        search_space=SPACE,
        ray_address=cluster.address,
        resources_per_trial={"cpu": 1, "gpu": gpu},
        max_failures=3,
        **kw,
    )


def node(cluster, name):
    return next(n for n in cluster.nodes if n.name == name)


class MaxRunning:
    """A progress reporter noting the most trials seen running at once."""

    def __init__(self):
        self.max_running = 0

    def __call__(self, p):
        self.max_running = max(self.max_running, p.running)


def trial_workers_on(n) -> list[int]:
    """Process ids of the Tune trial actors (``ray::ImplicitFunc...``) in a node's process group:
    the node's live trials (on a cluster driftloop keeps no idle cached actors)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) == n.process.pid and b"ImplicitFunc" in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except (OSError, ProcessLookupError):
            continue
    return pids


def s3_keys(store, prefix: str) -> list[str]:
    from pyarrow import fs as pafs

    from tasks.tuning.runtime import s3_filesystem

    fs = s3_filesystem(store)
    return [i.path for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))]


@pytest.fixture(scope="module")
def cpu_study(cluster, small_splits, s3_server):
    """The uninterrupted CPU-only study (also the reference for the killed-node study)."""
    import uuid

    from tasks.store.config import StoreConfig

    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    store = StoreConfig(
        uri=f"s3://{bucket}/driftloop",
        endpoint_url=s3_server.endpoint_url,
        region="us-east-1",
        access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key,
    )
    study = run_study(
        study_cfg(cluster, 0.0, checkpoint_every=1),
        small_splits,
        seed=SEED,
        store=store,
        model=MODEL,
        training=TRAINING,
    )
    return study, store


def test_gpu_share_trials_run_two_at_a_time_on_the_gpu_worker(cluster, small_splits, s3_store_config):
    running = MaxRunning()
    study = run_study(
        study_cfg(cluster, 0.5),
        small_splits,
        seed=SEED,
        store=s3_store_config,
        model=MODEL,
        training=TRAINING,
        progress=running,
    )
    gpu_node = node(cluster, "worker2").node_id
    assert study.finished and len(study.trials) == 5 and study.resources_per_trial == {"cpu": 1.0, "gpu": 0.5}
    assert {t.node_id for t in study.trials} == {gpu_node}
    assert {t.gpu_ids for t in study.trials} == {"0"}  # the one logical GPU, shared
    assert running.max_running == 2  # one GPU, two trials at once: they shared it
    # The study report names the node and the GPU ids.
    from tasks.tuning.report import placement_rows, trial_rows

    assert placement_rows(study) == [{"node": gpu_node[:12], "trials": 5, "gpu_ids": "0", "moved": 0}]
    assert {r["gpu_ids"] for r in trial_rows(study)} == {"0"}
    # Study state and checkpoints are on S3 (the nodes share no disk with the driver).
    assert study.storage_uri.startswith("s3://")
    keys = s3_keys(s3_store_config, study.storage_uri[len("s3://") :])
    assert any("experiment_state" in k for k in keys)
    assert any("/checkpoint_" in k and k.endswith("state.pt") for k in keys)


def test_cpu_only_trials_get_no_gpu_wherever_they_run(cluster, cpu_study):
    # Ray 2.55's Tune places trials through placement groups, which do not follow Ray's "keep
    # CPU-only work off GPU nodes" preference (and Tune has no label selectors): CPU-only trials
    # use both workers. What holds: they are given no GPU, and the report says where each ran.
    study, store = cpu_study
    workers = {node(cluster, "worker1").node_id, node(cluster, "worker2").node_id}
    assert study.finished and len(study.trials) == 5
    assert {t.node_id for t in study.trials} <= workers
    assert {t.gpu_ids for t in study.trials} == {""}
    assert sorted(t.status for t in study.trials) == ["completed"] * 3 + ["stopped"] * 2


def test_killed_worker_node_study_completes_from_s3_checkpoints(cluster, small_splits, cpu_study):
    reference, store = cpu_study
    victim = node(cluster, "worker1")
    assert victim.alive()

    class KillMidStudy:
        """SIGKILL the CPU worker's process group once the study has trained 3 epochs and a trial
        is training on that node (so that the node loss costs a running trial)."""

        killed_at = None

        def __call__(self, p):
            if self.killed_at is None and p.epochs >= 3 and trial_workers_on(victim):
                cluster.kill_node(victim)
                self.killed_at = p.epochs

    killer = KillMidStudy()
    # Retries generous enough to outlast the seconds until Ray declares the node dead (a retry placed
    # on it meanwhile fails again).
    cfg = study_cfg(cluster, 0.0, checkpoint_every=1, storage_subpath="tuning-node-loss").model_copy(
        update={"max_failures": 8}
    )
    study = run_study(cfg, small_splits, seed=SEED, store=store, model=MODEL, training=TRAINING, progress=killer)
    assert killer.killed_at is not None and not victim.alive()
    assert study.finished and study.study_name == reference.study_name
    table = [
        (t.trial_id, t.status, t.epochs, t.failures, t.resumes, [n[:8] for n in t.nodes], t.error) for t in study.trials
    ]
    assert all(t.status in ("completed", "stopped") for t in study.trials), table
    # The node loss cost the study a trial's place: a trial running there failed and was retried, or
    # (when Hyperband paused it at a milestone just before the kill) a trial that had trained there was
    # resumed on the surviving node, which shares no disk with it: from its S3 checkpoint. (A trial
    # that died before reporting from the dead node has only the surviving node in its record.)
    gpu_node = node(cluster, "worker2").node_id
    lost = [t for t in study.trials if t.failures >= 1]
    moved = [t for t in study.trials if victim.node_id in t.nodes and t.resumes >= 1 and t.nodes[-1] == gpu_node]
    assert lost or moved, f"no trial was running on the killed node: {table}"
    for t in lost:  # finished on the surviving node (from its last S3 checkpoint when it had one)
        assert t.nodes[-1] == gpu_node, table
    # Same decisions and same numbers as the uninterrupted study.
    assert study.best_params == reference.best_params
    assert study.best_metric == pytest.approx(reference.best_metric)
    ref = {json.dumps(t.config, sort_keys=True): (t.status, t.epochs) for t in reference.trials}
    got = {json.dumps(t.config, sort_keys=True): (t.status, t.epochs) for t in study.trials}
    assert got == ref


DRIVER = """
import sys, json
from tasks.errors import ConfigError
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.store.config import StoreConfig
from tasks.data.sources import load_digits_dataset, split_dataset
from tasks.tuning.config import TuningConfig
from tasks.tuning.search import run_study
store = StoreConfig(**json.loads(sys.argv[2]))
cfg = TuningConfig(max_t=3, eta=3, num_samples=2, ray_address=sys.argv[1], resources_per_trial={"cpu": 1, "gpu": 0},
                   search_space={"lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}})
splits = split_dataset(load_digits_dataset(), seed=5, val_fraction=0.2, test_fraction=0.2, max_train_samples=100)
try:
    run_study(cfg, splits, seed=1, store=store, model=ModelConfig(arch="mlp", depth=1), training=TrainingConfig())
except ConfigError as e:
    print("CONFIGERROR", e)
    sys.exit(3)
print("RAN")
"""


def _driver(address: str, store, env: dict[str, str]) -> subprocess.Popen:
    doc = {"uri": store.uri, "endpoint_url": store.endpoint_url, "region": store.region}
    if store.access_key_id is not None:
        doc.update(
            access_key_id=store.access_key_id.get_secret_value(),
            secret_access_key=store.secret_access_key.get_secret_value(),
        )
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, address, json.dumps(doc)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_token_mismatch_and_local_store_fail_before_the_first_trial(cluster, s3_store_config, tmp_path):
    token = os.environ["RAY_AUTH_TOKEN"]
    open_cluster = start_cluster([], head_cpus=1, token=None)  # a cluster without token authentication
    try:
        t0 = time.monotonic()
        runs = {
            "no token": _driver(cluster.address, s3_store_config, node_env(None)),
            "wrong token": _driver(cluster.address, s3_store_config, node_env("0" * 64)),
            "cluster without tokens": _driver(open_cluster.address, s3_store_config, node_env(token)),
            "local store": _driver(
                cluster.address, s3_store_config.model_copy(update={"uri": str(tmp_path / "st")}), node_env(token)
            ),
        }
        out = {k: (p.communicate(timeout=240)[0], p.returncode) for k, p in runs.items()}
        elapsed = time.monotonic() - t0
    finally:
        open_cluster.stop()
    for k, (text, rc) in out.items():
        assert rc == 3 and "CONFIGERROR" in text, f"{k}: rc={rc}\n{text[-3000:]}"
    for k in ("no token", "wrong token", "cluster without tokens"):
        text = out[k][0]
        assert "tuning.ray_address" in text and "RAY_AUTH_MODE=token" in text and "RAY_AUTH_TOKEN" in text, text
        assert "never ran" not in text
    assert "refused this driver's Ray token" in out["wrong token"][0] and "refused" in out["no token"][0]
    assert "cancelled its actors" in out["cluster without tokens"][0]
    assert "nodes do not share this machine's disk" in out["local store"][0]
    assert not (tmp_path / "st").exists()
    # Nothing was written for the refused studies: no experiment in the bucket.
    assert not [k for k in s3_keys(s3_store_config, s3_store_config.uri[len("s3://") :]) if "experiment_state" in k]
    assert elapsed < 200
