"""Share of wall time spent inside the training function over a whole Ray Tune study on this
machine (2 CPUs), and the seconds of overhead per trial.

Runs ``run_study`` exactly as the tune stage does (a local Ray started and stopped by the call,
Hyperband, checkpoints and reports to Tune only at the rung milestones, results in a local artifact
store), then, as the baseline in the same run, trains the same configurations for the same epochs
in-process, one after the other, with the same loop and no Ray.

* utilisation = time inside train_one_epoch + evaluate, summed over trials / (wall time x slots),
  slots = trials that can run at once (CPUs / CPUs per trial);
* overhead per trial = (wall time x slots - time inside) / trials: Ray start, actor start,
  scheduling, checkpoint save/restore and pausing/resuming, spread over the trials.

    .venv/bin/python benchmarks/tune_utilisation.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
from tasks.ray_security import enable_token_auth  # noqa: E402

enable_token_auth()  # before Ray is imported, as the `driftloop` command does

from tasks.data.config import DataConfig  # noqa: E402
from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.models.config import ModelConfig, TrainingConfig  # noqa: E402
from tasks.models.train import evaluate, make_optimizer, train_one_epoch  # noqa: E402
from tasks.models.zoo import build_model  # noqa: E402
from tasks.seeding import derive_seed, seed_everything  # noqa: E402
from tasks.store.config import StoreConfig  # noqa: E402
from tasks.tuning.config import TuningConfig  # noqa: E402
from tasks.tuning.plan import ray_hyperband_plan  # noqa: E402
from tasks.tuning.search import apply_params, run_study, trial_seed  # noqa: E402


def replay(study, splits, model: ModelConfig, training: TrainingConfig, seed: int) -> float:
    """Train every trial's configuration for the epochs it ran, sequentially, no Ray; wall seconds."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for t in study.trials:
        m, tr = apply_params(model, training, t.config)
        ts = trial_seed(seed, t.config)
        seed_everything(ts)
        net = build_model(m, splits.train.sample_shape, 10)
        opt = make_optimizer(net, tr.optimizer, tr.lr, tr.weight_decay, tr.momentum)
        for e in range(1, t.epochs + 1):
            torch.manual_seed(derive_seed(ts, "torch", e))
            train_one_epoch(
                net,
                opt,
                splits.train.x,
                splits.train.y,
                tr.batch_size,
                derive_seed(ts, "epoch", e),
                torch.device("cpu"),
            )
            evaluate(net, splits.val.x, splits.val.y, torch.device("cpu"), 10)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="R=3, 5 trials (a full Ray band is 5)")
    ap.add_argument("--max-t", type=int, default=9)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--num-samples", type=int, default=None, help="default: one full Ray band")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    if args.quick:
        args.max_t = 3
    band = ray_hyperband_plan(args.max_t, args.eta).num_configurations
    n = args.num_samples or band
    dc = DataConfig()
    splits = split_dataset(load_digits_dataset(), args.seed, dc.val_fraction, dc.test_fraction)
    model, training = ModelConfig(), TrainingConfig(num_threads=1)
    cfg = TuningConfig(max_t=args.max_t, eta=args.eta, num_samples=n)
    cpus = os.cpu_count() or 1
    slots = max(1, int(cpus // cfg.resources_per_trial.cpu))
    with tempfile.TemporaryDirectory(prefix="driftloop-tune-util-") as store:
        t0 = time.perf_counter()
        study = run_study(cfg, splits, seed=args.seed, store=StoreConfig(uri=store), model=model, training=training)
        wall = time.perf_counter() - t0
    baseline = replay(study, splits, model, training, args.seed)
    inside = study.train_seconds
    util = inside / (wall * slots)
    overhead = (wall * slots - inside) / len(study.trials)
    summary = {
        "trials": len(study.trials),
        "epochs": study.total_epochs,
        "slots": slots,
        "wall_seconds": round(wall, 2),
        "ray_start_seconds": round(study.ray_start_seconds, 2),
        "inside_train_seconds": round(inside, 2),
        "utilisation": round(util, 4),
        "inside_over_wall": round(inside / wall, 4),
        "overhead_seconds_per_trial": round(overhead, 2),
        "baseline_sequential_no_ray_seconds": round(baseline, 2),
        "ray_wall_over_baseline": round(wall / baseline, 2),
        "stopped_early": sum(t.status == "stopped" for t in study.trials),
        "best_val_accuracy": round(study.best_metric, 4),
    }
    out = {
        "benchmark": "tune_utilisation",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "seed": args.seed,
        "max_t": args.max_t,
        "eta": args.eta,
        "num_samples": n,
        "model": model.model_dump(),
        "summary": summary,
        "load_average_at_end": os.getloadavg(),
        "machine": {
            "cpu_count": cpus,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": __import__("ray").__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
    }
    path = Path(__file__).resolve().parent / "results" / "tune_utilisation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))
    print(
        f"\n{summary['utilisation']:.1%} of {slots} slots x {wall:.1f} s wall was spent inside the train function; "
        f"{overhead:.2f} s overhead per trial; the same epochs without Ray took {baseline:.1f} s -> {path}"
    )


if __name__ == "__main__":
    main()
