"""Benchmark: what does delayed adversarial training save over regular PGD adversarial training?

On digits (SmallCNN, from scratch), with the same epoch budget, batches and seeds, trains:
natural (reference), regular PGD-k adversarial training (the baseline), delayed adversarial
training (Gupta et al. 2020) switching at 50% and 70% of the budget, and fast FGSM-RS (Wong et
al. 2020). For each: wall time of training, gradient evaluations (batch forward+backward passes),
final clean test accuracy and PGD robust test accuracy (PGD-20, 2 restarts, L-inf eps 0.1), plus
the sanity checks of the robust evaluation. Reports the time saved by delayed vs regular training
and the robust-accuracy difference in points (issue goal: >= 40% saved, within 1 point).

    .venv/bin/python benchmarks/adversarial_training_cost.py [--quick] [--seeds N] [--epochs E]

Writes benchmarks/results/adversarial_training_cost.json and a Figure-2-like plot
(benchmarks/results/adversarial_training_cost.png: natural and adversarial validation accuracy
per epoch for the first seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tasks.adversarial.config import AdversarialConfig  # noqa: E402
from tasks.adversarial.evaluation import evaluate_robustness  # noqa: E402
from tasks.adversarial.report import history_plot  # noqa: E402
from tasks.adversarial.training import adversarial_train  # noqa: E402
from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.models.config import ModelConfig, TrainingConfig  # noqa: E402
from tasks.models.zoo import build_model  # noqa: E402
from tasks.seeding import derive_seed, seed_everything  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
BASE_SEED = 1337
RUNS = [  # (label, mode, switch_fraction)
    ("natural", "natural", None),
    ("pgd", "pgd", None),
    ("delayed_0.5", "delayed", 0.5),
    ("delayed_0.7", "delayed", 0.7),
    ("fast", "fast", None),
]


def run_one(splits, label, mode, switch, seed, args, model_cfg, train_cfg, track):
    seed_everything(derive_seed(seed, "init"))
    model = build_model(model_cfg, splits.train.sample_shape, 10)
    over = {"switch_fraction": switch} if switch is not None else {}
    cfg = AdversarialConfig(
        mode=mode,
        epochs=args.epochs,
        epsilon=args.eps,
        steps=args.steps,
        step_size=2.5 * args.eps / args.steps,
        lr=args.lr,
        history_samples=200,
        eval_steps=10,
        **over,
    )
    t0 = time.perf_counter()
    res = adversarial_train(
        model,
        splits.train.x,
        splits.train.y,
        splits.val.x,
        splits.val.y,
        cfg,
        train_cfg,
        seed,
        0.0,
        1.0,
        10,
        track_history=track,
    )
    wall = time.perf_counter() - t0
    ev = evaluate_robustness(
        model,
        splits.test.x,
        splits.test.y,
        epsilons=[args.eps],
        epsilon=args.eps,
        norm="linf",
        steps=args.eval_steps,
        restarts=args.eval_restarts,
        lo=0.0,
        hi=1.0,
        num_classes=10,
        seed=seed,
        device=torch.device("cpu"),
        label=label,
    )
    return res, {
        "label": label,
        "mode": mode,
        "seed": seed,
        "switch_epoch": res.switch_epoch,
        "train_seconds": res.train_seconds,
        "train_cpu_seconds": res.train_cpu_seconds,
        "wall_seconds_incl_history": wall,
        "grad_passes": res.grad_passes,
        "example_grads": res.example_grads,
        "clean_accuracy": ev.clean_accuracy,
        "robust_accuracy": ev.robust_accuracy,
        "curve": [(p.epsilon, p.pgd_accuracy, p.fgsm_accuracy) for p in ev.curve],
        "reliable": ev.reliable,
        "failed_checks": ev.failed_checks,
    }


def mean_sd(xs):
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 4 epochs, MLP: a fast smoke run")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--eval-restarts", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.eval_steps, args.eval_restarts = 1, 4, 10, 1
    torch.set_num_threads(args.threads)
    model_cfg = ModelConfig(arch="mlp" if args.quick else "cnn")
    train_cfg = TrainingConfig(batch_size=32, optimizer="adam", num_threads=args.threads)
    splits = split_dataset(load_digits_dataset(), BASE_SEED, 0.15, 0.2)
    seeds = [derive_seed(BASE_SEED, "bench-adv", i) for i in range(args.seeds)]

    # Warm-up (lazy initialisation of torch kernels), untimed, so the first timed run pays nothing extra.
    run_one(
        splits,
        "warmup",
        "pgd",
        None,
        seeds[0],
        argparse.Namespace(**{**vars(args), "epochs": 1}),
        model_cfg,
        train_cfg,
        track=False,
    )
    rows, histories = [], {}
    t_start = time.perf_counter()
    for i, seed in enumerate(seeds):
        # Modes interleaved per seed, so load from other processes on the machine hits them alike.
        for label, mode, switch in RUNS:
            res, row = run_one(splits, label, mode, switch, seed, args, model_cfg, train_cfg, track=(i == 0))
            rows.append(row)
            if i == 0:
                histories[label] = res
            print(
                f"seed {i} {label:12s} train {row['train_seconds']:6.2f}s passes {row['grad_passes']:5d} "
                f"clean {row['clean_accuracy']:.3f} robust {row['robust_accuracy']:.3f} "
                f"{'reliable' if row['reliable'] else 'UNRELIABLE ' + ','.join(row['failed_checks'])}",
                flush=True,
            )

    by = {label: [r for r in rows if r["label"] == label] for label, _, _ in RUNS}
    summary = {}
    for label, rs in by.items():
        summary[label] = {
            k: mean_sd([r[k] for r in rs])
            for k in ("train_seconds", "train_cpu_seconds", "grad_passes", "clean_accuracy", "robust_accuracy")
        }
        summary[label]["reliable_runs"] = sum(r["reliable"] for r in rs)
    comparisons = {}
    for label in ("delayed_0.5", "delayed_0.7", "fast", "natural"):
        # Per seed, against regular PGD training on the same seed.
        saved = [1 - d["train_seconds"] / p["train_seconds"] for d, p in zip(by[label], by["pgd"])]
        saved_cpu = [1 - d["train_cpu_seconds"] / p["train_cpu_seconds"] for d, p in zip(by[label], by["pgd"])]
        saved_passes = [1 - d["grad_passes"] / p["grad_passes"] for d, p in zip(by[label], by["pgd"])]
        dpts = [100 * (d["robust_accuracy"] - p["robust_accuracy"]) for d, p in zip(by[label], by["pgd"])]
        dclean = [100 * (d["clean_accuracy"] - p["clean_accuracy"]) for d, p in zip(by[label], by["pgd"])]
        comparisons[f"{label}_vs_pgd"] = {
            "time_saved": mean_sd(saved),
            "cpu_time_saved": mean_sd(saved_cpu),
            "grad_passes_saved": mean_sd(saved_passes),
            "robust_accuracy_diff_points": mean_sd(dpts),
            "clean_accuracy_diff_points": mean_sd(dclean),
            "goal_met_time_saved_ge_40pct": statistics.fmean(saved) >= 0.40,
            "goal_met_robust_within_1_point": statistics.fmean(dpts) >= -1.0,
        }

    OUT.mkdir(parents=True, exist_ok=True)
    png = history_plot(
        [histories[k] for k in ("pgd", "delayed_0.5", "delayed_0.7", "fast")],
        labels=["regular PGD", "delayed 50%", "delayed 70%", "fast FGSM-RS"],
        dpi=100,
    )
    (OUT / "adversarial_training_cost.png").write_bytes(png)
    import prefect  # noqa: F401  (only for its version string)

    result = {
        "benchmark": "adversarial_training_cost",
        "command": " ".join([".venv/bin/python", "benchmarks/adversarial_training_cost.py", *sys.argv[1:]]),
        "settings": {
            "dataset": "digits (1797 8x8, [0,1])",
            "split_seed": BASE_SEED,
            "model": model_cfg.model_dump(),
            "batch_size": train_cfg.batch_size,
            "optimizer": "adam",
            "lr": args.lr,
            "epochs": args.epochs,
            "epsilon": args.eps,
            "norm": "linf",
            "train_attack": f"PGD-{args.steps}, step 2.5*eps/k, random start",
            "fast_attack": "FGSM-RS, step 1.25*eps",
            "eval_attack": f"PGD-{args.eval_steps}, {args.eval_restarts} restarts, step 2.5*eps/k",
            "threads": args.threads,
            "n_train": len(splits.train.y),
            "n_test": len(splits.test.y),
        },
        "seeds": seeds,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "prefect": prefect.__version__},
        "total_seconds": time.perf_counter() - t_start,
        "summary": summary,
        "comparisons": comparisons,
        "runs": rows,
        "figure": "benchmarks/results/adversarial_training_cost.png",
    }
    (OUT / "adversarial_training_cost.json").write_text(json.dumps(result, indent=2))

    print(f"\n{len(seeds)} seeds, {args.epochs} epochs, eps {args.eps} (mean +- sd)")
    print(f"{'mode':12s} {'train s':>13s} {'grad passes':>11s} {'clean':>13s} {'robust':>13s} reliable")
    for label, s in summary.items():
        print(
            f"{label:12s} {s['train_seconds'][0]:6.2f} +- {s['train_seconds'][1]:4.2f} {s['grad_passes'][0]:11.0f} "
            f"{s['clean_accuracy'][0]:.3f} +- {s['clean_accuracy'][1]:.3f} "
            f"{s['robust_accuracy'][0]:.3f} +- {s['robust_accuracy'][1]:.3f} {s['reliable_runs']}/{len(seeds)}"
        )
    for name, c in comparisons.items():
        print(
            f"{name}: time saved {100 * c['time_saved'][0]:.1f}% (+- {100 * c['time_saved'][1]:.1f}), "
            f"CPU time saved {100 * c['cpu_time_saved'][0]:.1f}%, grad passes saved "
            f"{100 * c['grad_passes_saved'][0]:.1f}%, robust acc "
            f"{c['robust_accuracy_diff_points'][0]:+.2f} points (+- {c['robust_accuracy_diff_points'][1]:.2f}), "
            f"clean {c['clean_accuracy_diff_points'][0]:+.2f} points"
        )
    print(f"wrote {OUT / 'adversarial_training_cost.json'} in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
