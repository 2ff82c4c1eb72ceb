"""Hyperband vs random search on digits: epochs until a configuration first reaches a target
validation accuracy, and the best accuracy at equal total epochs.

Both searches run in-process on the same pure train loop (no Ray: Ray's per-trial overhead on 2
cores would dominate and measures nothing about the algorithms; `tune_utilisation.py` measures
that overhead). Both draw configurations from the same sampler (``tasks.tuning.search.sample_config``
on the default search space) with the same seeds, in the same order, and train a configuration
exactly as the Ray trainable does (trial seed from the config, per-epoch shuffle and dropout
seeds), so a configuration's learning curve is the same in both searches. Curves are computed
once per configuration and extended lazily: the searches are charged the epochs they would spend,
not the epochs this script happens to compute.

* Hyperband: Algorithm 1 of Li et al. (JMLR 2018) with R=max_t, eta; brackets s = s_max..0;
  promoted configurations resume (charged r_i - r_{i-1} epochs); a configuration is evaluated at
  the end of each rung, as the algorithm does. Bands repeat until the target is reached or the
  epoch cap is spent.
* Random search (the paper's baseline): each configuration trained for R epochs and evaluated then.
  Also reported: random search that checks the validation accuracy after every epoch (a stronger
  baseline the paper does not use).

    .venv/bin/python benchmarks/hyperband_vs_random.py [--quick] [--max-t 27] [--seeds 5] [--target 0.97]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.data.config import DataConfig  # noqa: E402
from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.models.config import ModelConfig, TrainingConfig  # noqa: E402
from tasks.models.train import evaluate, make_optimizer, train_one_epoch  # noqa: E402
from tasks.models.zoo import build_model  # noqa: E402
from tasks.seeding import derive_seed, rng, seed_everything  # noqa: E402
from tasks.tuning.config import TuningConfig  # noqa: E402
from tasks.tuning.plan import hyperband_plan  # noqa: E402
from tasks.tuning.search import apply_params, sample_config, trial_seed  # noqa: E402


class Curves:
    """Validation accuracy per epoch of each configuration, trained lazily (same loop as the trainable)."""

    def __init__(self, splits, seed: int):
        self.s, self.seed = splits, seed
        self.state: dict[int, tuple] = {}
        self.curve: dict[int, list[float]] = {}
        self.epochs_computed = 0

    def acc(self, idx: int, params: dict, epochs: int) -> list[float]:
        if idx not in self.state:
            m, t = apply_params(ModelConfig(), TrainingConfig(), params)
            ts = trial_seed(self.seed, params)
            seed_everything(ts)
            model = build_model(m, self.s.train.sample_shape, 10)
            opt = make_optimizer(model, t.optimizer, t.lr, t.weight_decay, t.momentum)
            self.state[idx] = (model, opt, t, ts)
            self.curve[idx] = []
        model, opt, t, ts = self.state[idx]
        c = self.curve[idx]
        dev = torch.device("cpu")
        while len(c) < epochs:
            e = len(c) + 1
            torch.manual_seed(derive_seed(ts, "torch", e))
            train_one_epoch(model, opt, self.s.train.x, self.s.train.y, t.batch_size, derive_seed(ts, "epoch", e), dev)
            c.append(evaluate(model, self.s.val.x, self.s.val.y, dev, 10).accuracy)
            self.epochs_computed += 1
        return c[:epochs]


def hyperband(configs, curves: Curves, max_t: int, eta: int, target: float, cap: int) -> dict:
    """Algorithm 1, repeated bands; returns epochs to target and the best accuracy by epochs spent."""
    plan = hyperband_plan(max_t, eta)
    spent, nxt, hit, trace = 0, 0, None, []  # trace: (epochs spent, best accuracy so far)
    best = 0.0
    while spent < cap and hit is None:
        for b in plan.brackets:
            live = list(range(nxt, nxt + b.rungs[0].n))
            nxt += b.rungs[0].n
            done: dict[int, int] = {}
            for rung in b.rungs:
                r = int(round(rung.r))
                scores = []
                for k in live:
                    spent += r - done.get(k, 0)
                    done[k] = r
                    a = curves.acc(k, configs(k), r)[-1]
                    best = max(best, a)
                    trace.append((spent, best))
                    if hit is None and a >= target:
                        hit = spent
                    scores.append((a, k))
                keep = max(1, len(live) // eta) if rung.i < len(b.rungs) - 1 else 0
                live = [k for _, k in sorted(scores, key=lambda x: (-x[0], x[1]))[:keep]]
            if hit is not None or spent >= cap:
                break
    return {"epochs_to_target": hit, "trace": trace, "configs_drawn": nxt}


def random_search(configs, curves: Curves, max_t: int, target: float, cap: int, per_epoch: bool) -> dict:
    spent, k, hit, best, trace = 0, 0, None, 0.0, []
    while spent < cap and hit is None:
        c = curves.acc(k, configs(k), max_t)
        if per_epoch:
            first = next((e for e, a in enumerate(c, 1) if a >= target), None)
            if first is not None:
                hit = spent + first
        elif c[-1] >= target:
            hit = spent + max_t
        spent += max_t
        best = max(best, c[-1] if not per_epoch else max(c))
        trace.append((spent, best))
        k += 1
    return {"epochs_to_target": hit, "trace": trace, "configs_drawn": k}


def best_at(trace, budget: int) -> float:
    vals = [b for s, b in trace if s <= budget]
    return max(vals) if vals else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 training samples, a one-band epoch cap")
    ap.add_argument("--max-t", type=int, default=27)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--cap-bands", type=float, default=1.5, help="epoch cap, in Hyperband bands (resumed epochs)")
    ap.add_argument(
        "--max-train-samples",
        type=int,
        default=500,
        help="training samples per seed (epochs are counted, not timed: a subset keeps the run short)",
    )
    args = ap.parse_args()
    if args.quick:  # still R=27 and 5 seeds; fewer samples and a one-band cap
        args.max_train_samples = min(args.max_train_samples, 300)
        args.cap_bands = min(args.cap_bands, 1.0)
    torch.set_num_threads(1)
    t0 = time.time()
    space = TuningConfig().search_space
    dc = DataConfig()
    plan = hyperband_plan(args.max_t, args.eta)
    cap = int(args.cap_bands * plan.resumed_epochs)
    band = int(plan.resumed_epochs)
    rows = []
    for i in range(args.seeds):
        seed = 1000 + i
        splits = split_dataset(load_digits_dataset(), seed, dc.val_fraction, dc.test_fraction, args.max_train_samples)
        cache: dict[int, dict] = {}

        def configs(k, seed=seed, cache=cache):
            if k not in cache:
                cache[k] = sample_config(space, rng(seed, "bench-sampler", k))
            return cache[k]

        curves = Curves(splits, seed)
        hb = hyperband(configs, curves, args.max_t, args.eta, args.target, cap)
        rs = random_search(configs, curves, args.max_t, args.target, cap, per_epoch=False)
        rse = random_search(configs, curves, args.max_t, args.target, cap, per_epoch=True)
        row = {
            "seed": seed,
            "hyperband_epochs": hb["epochs_to_target"],
            "random_epochs": rs["epochs_to_target"],
            "random_per_epoch_check_epochs": rse["epochs_to_target"],
            "hyperband_best_at_one_band": best_at(hb["trace"], band),
            "random_best_at_one_band": best_at(rs["trace"], band),
            "configs_hyperband": hb["configs_drawn"],
            "configs_random": rs["configs_drawn"],
            "epochs_computed": curves.epochs_computed,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    def ratio(num, den):
        a, b = num if num is not None else math.inf, den if den is not None else math.inf
        return a / b if math.isfinite(b) else (math.nan if not math.isfinite(a) else 0.0)

    ratios = [ratio(r["random_epochs"], r["hyperband_epochs"]) for r in rows]
    ratios_pe = [ratio(r["random_per_epoch_check_epochs"], r["hyperband_epochs"]) for r in rows]
    finite = lambda xs: [x for x in xs if not math.isnan(x)]  # noqa: E731
    summary = {
        "median_ratio_random_over_hyperband": statistics.median(finite(ratios)) if finite(ratios) else None,
        "median_ratio_random_per_epoch_over_hyperband": statistics.median(finite(ratios_pe))
        if finite(ratios_pe)
        else None,
        "ratios": ratios,
        "ratios_random_per_epoch": ratios_pe,
        "median_best_accuracy_at_one_band": {
            "hyperband": statistics.median(r["hyperband_best_at_one_band"] for r in rows),
            "random": statistics.median(r["random_best_at_one_band"] for r in rows),
        },
        "one_band_epochs": band,
        "epoch_cap": cap,
        "best_possible_ratio_note": f"Algorithm 1 with R={args.max_t}, eta={args.eta} evaluates "
        f"{plan.brackets[0].rungs[0].n} configurations in its first "
        f"{plan.brackets[0].rungs[0].n * int(plan.brackets[0].rungs[0].r)} epochs; random search "
        f"needs {args.max_t} epochs each (R/(s_max+1) = {args.max_t / (plan.s_max + 1):.2f}x is "
        "the paper's best case per budget B)",
    }
    out = {
        "benchmark": "hyperband_vs_random",
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "method": "in-process simulation on the pure train loop (no Ray), shared lazily-trained curves",
        "max_t": args.max_t,
        "eta": args.eta,
        "target_val_accuracy": args.target,
        "seeds": [r["seed"] for r in rows],
        "max_train_samples": args.max_train_samples,
        "model": ModelConfig().model_dump(),
        "search_space": {name: spec.model_dump(mode="json") for name, spec in space.items()},
        "rows": rows,
        "summary": summary,
        "seconds": round(time.time() - t0, 1),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
    }
    path = Path(__file__).resolve().parent / "results" / "hyperband_vs_random.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float))
    print(
        f"\nmedian epochs-to-target ratio random/Hyperband: {summary['median_ratio_random_over_hyperband']} "
        f"(random checking every epoch: {summary['median_ratio_random_per_epoch_over_hyperband']}); "
        f"median best accuracy after one band ({band} epochs): Hyperband "
        f"{summary['median_best_accuracy_at_one_band']['hyperband']:.4f}, random "
        f"{summary['median_best_accuracy_at_one_band']['random']:.4f}; {out['seconds']} s -> {path}"
    )


if __name__ == "__main__":
    main()
