"""Benchmark: a user's own datasets through every stage on the default budget, against plain training.

For each dataset the tests train on (tests/fixtures/datasets.py: breast cancer 569x30 parquet, a
generated 2000x20 csv with long-tailed columns, a 180-image folder of 12x12 PNGs) and each seed,
runs what a user runs, ``driftloop run training -p data.source=FILE`` with nothing else changed
(validate -> tune -> federate -> harden -> evaluate -> register), and the baseline a user would
compare with: plain training, the same command with tuning, federation and hardening off (the
train stage alone on the default model and 30 epochs). Both use the same hash splits, so the test
rows are the same. A logistic regression on standardized features (scikit-learn) on those rows is
reported beside them as an outside reference.

Goal (issue 16): every dataset's all-stage test accuracy within 2 points of plain training.
Also reported: the federated model's test accuracy before hardening, the robust accuracy at the
default epsilon, the epoch hardening kept, and wall time.

    .venv/bin/python benchmarks/user_datasets.py [--seeds 1337,7] [--datasets breast_cancer_parquet,...]

Writes benchmarks/results/user_datasets.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402
from tests.fixtures.datasets import MAKERS, logistic_accuracy  # noqa: E402

PLAIN = ["tuning.enabled=false", "federated.enabled=false", "adversarial.enabled=false"]
GOAL_POINTS = 2.0


def _run(source: Path, store: Path, seed: int, extra: list[str]) -> dict:
    cmd = [str(ROOT / ".venv/bin/driftloop"), "run", "training"]
    for p in [f"data.source={source}", f"store.uri={store}", f"seed={seed}", *extra]:
        cmd += ["-p", p]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (manifest_path,) = store.glob("runs/training-*/manifest.json")
    m = json.loads(manifest_path.read_text())
    extra_m = m.get("extra", {})
    fed = extra_m.get("federated") or {}
    hard = extra_m.get("hardening") or {}
    return {
        "seconds": round(seconds, 1),
        "test_accuracy": m["metrics"]["test_accuracy"],
        "robust_accuracy": m["metrics"].get("robust_accuracy"),
        "federated_test_accuracy": (fed.get("metrics") or {}).get("test_accuracy"),
        "hardening_kept_epoch": hard.get("selected_epoch"),
        "best_config": extra_m.get("best_config"),
        "test_rows": ((extra_m.get("splits") or {}).get("sizes") or {}).get("test"),
        "stages": extra_m.get("stages"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1337,7,42", help="comma-separated base seeds (1337 is the default seed)")
    ap.add_argument("--datasets", default=",".join(MAKERS), help=f"comma-separated, of {', '.join(MAKERS)}")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.datasets.split(",")
    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="driftloop-userdata-") as tmp:
        for name in names:
            data_dir = Path(tmp) / name
            data_dir.mkdir()
            source = MAKERS[name](data_dir)
            for seed in seeds:
                every = _run(source, Path(tmp) / f"{name}-{seed}-all", seed, [])
                plain = _run(source, Path(tmp) / f"{name}-{seed}-plain", seed, PLAIN)
                gap = round(100 * (plain["test_accuracy"] - every["test_accuracy"]), 2)
                row = {
                    "dataset": name,
                    "seed": seed,
                    "all_stages": every,
                    "plain_training": plain,
                    "logistic_regression_test_accuracy": logistic_accuracy(source, seed),
                    "gap_points": gap,
                    "within_goal": gap <= GOAL_POINTS,
                }
                rows.append(row)
                print(
                    f"{name} seed {seed}: all stages {every['test_accuracy']:.4f} (federated "
                    f"{every['federated_test_accuracy']}, robust {every['robust_accuracy']}, kept epoch "
                    f"{every['hardening_kept_epoch']}, {every['seconds']:.0f} s), plain {plain['test_accuracy']:.4f} "
                    f"({plain['seconds']:.0f} s), logistic {row['logistic_regression_test_accuracy']:.4f}: "
                    f"gap {gap:+.1f} points",
                    flush=True,
                )
    write_result(
        "user_datasets",
        {
            "goal": f"all-stage test accuracy within {GOAL_POINTS:g} points of plain training, every dataset",
            "met": all(r["within_goal"] for r in rows),
            "max_gap_points": max(r["gap_points"] for r in rows),
            "rows": rows,
            "total_seconds": round(time.perf_counter() - t_all, 1),
        },
    )


if __name__ == "__main__":
    main()
