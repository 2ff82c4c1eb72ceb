"""Scale-out of the tune stage on a Ray cluster: the same study on a local cluster with 1 and with 2
worker nodes (one CPU each), wall time and speed-up (goal: at least 1.7x).

The cluster is separate ``ray start`` processes on 127.0.0.1 (``tasks.tuning.local_cluster``: a
head with no CPUs, token authentication), the store a local SeaweedFS S3 server, as in
``tests/tuning/test_cluster.py``. The study (same seed, data, configurations for both sizes) runs
through ``run_study`` with ``tuning.ray_address``; the wall time is the study's, not the cluster's
start. The machine is shared: the load average around each run is recorded.

    .venv/bin/python benchmarks/tune_scaleout.py [--max-t 9] [--num-samples 9] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
from tasks.ray_security import enable_token_auth  # noqa: E402

enable_token_auth()  # before Ray is imported; the cluster gets the same token

from benchmarks._common import write_result  # noqa: E402
from benchmarks.tune_vs_optuna import configurations  # noqa: E402
from tasks.data.config import DataConfig  # noqa: E402
from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.models.config import ModelConfig, TrainingConfig  # noqa: E402
from tasks.store.config import StoreConfig  # noqa: E402
from tasks.store.seaweed import start_seaweedfs  # noqa: E402
from tasks.tuning.config import TuningConfig  # noqa: E402
from tasks.tuning.local_cluster import start_cluster  # noqa: E402
from tasks.tuning.search import run_study  # noqa: E402


def one(workers: int, s3, splits, configs, cfg: TuningConfig, seed: int) -> dict:
    bucket = f"scaleout-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket)
    store = StoreConfig(
        uri=f"s3://{bucket}/driftloop",
        endpoint_url=s3.endpoint_url,
        region="us-east-1",
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
    )
    cluster = start_cluster([{"num_cpus": 1}] * workers, head_cpus=0, token=os.environ["RAY_AUTH_TOKEN"])
    try:
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        study = run_study(
            cfg.model_copy(update={"ray_address": cluster.address}),
            splits,
            seed=seed,
            store=store,
            model=ModelConfig(),
            training=TrainingConfig(num_threads=1),
            configurations=configs,
        )
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()
    finally:
        cluster.stop()
    return {
        "workers": workers,
        "wall_seconds": round(wall, 2),
        "epochs": study.total_epochs,
        "inside_train_seconds": round(study.train_seconds, 2),
        "best_val_accuracy": round(study.best_metric, 4),
        "best_params": study.best_params,
        "nodes_used": len({t.node_id for t in study.trials}),
        "load_average": {"before": load0, "after": load1},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-t", type=int, default=9)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--num-samples", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    dc = DataConfig()
    splits = split_dataset(load_digits_dataset(), args.seed, dc.val_fraction, dc.test_fraction)
    cfg = TuningConfig(
        max_t=args.max_t, eta=args.eta, num_samples=args.num_samples, resources_per_trial={"cpu": 1, "gpu": 0}
    )
    configs = configurations(cfg.search_space, args.seed, args.num_samples)
    runs = []
    s3 = start_seaweedfs(Path(tempfile.mkdtemp(prefix="driftloop-scaleout-s3-")))
    try:
        for r in range(args.repeats):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):  # alternate the order: the load drifts
                res = one(workers, s3, splits, configs, cfg, args.seed)
                runs.append(res)
                print(
                    f"{workers} worker(s): {res['wall_seconds']:.1f} s, {res['epochs']} epochs, "
                    f"best {res['best_val_accuracy']}, load {res['load_average']['before'][0]:.1f}",
                    flush=True,
                )
    finally:
        s3.stop()
    w1 = statistics.median(r["wall_seconds"] for r in runs if r["workers"] == 1)
    w2 = statistics.median(r["wall_seconds"] for r in runs if r["workers"] == 2)
    same = len({str(r["best_params"]) for r in runs}) == 1
    summary = {
        "wall_seconds_1_worker": w1,
        "wall_seconds_2_workers": w2,
        "speedup": round(w1 / w2, 3),
        "goal_speedup_at_least": 1.7,
        "same_best_config": same,
    }
    write_result(
        "tune_scaleout",
        {
            "max_t": args.max_t,
            "eta": args.eta,
            "num_samples": args.num_samples,
            "seed": args.seed,
            "summary": summary,
            "runs": runs,
        },
    )
    print(summary)


if __name__ == "__main__":
    main()
