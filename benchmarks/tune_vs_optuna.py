"""The tune stage (``run_study``: Ray Tune, synchronous Hyperband) against Optuna's HyperbandPruner in
one process, on the same work: wall time, epochs trained and best validation accuracy.

Same for both, per seed: the data (digits, the default split), the search space (the tune stage's
default), the epoch function (``train_one_epoch`` + ``evaluate`` with the trainable's seeds: trial
seed from the configuration, per-epoch shuffle and dropout seeds, so a configuration learns the
same curve under both), R (max_t), eta, and the configurations themselves (drawn once with
``sample_config`` and handed to Tune as ``points_to_evaluate``, to Optuna with ``enqueue_trial``).

* driftloop: ``run_study`` exactly as the tune stage calls it (its own local Ray started and
  stopped inside the timing, a local store, 1 CPU per trial: two trials at once on 2 cores).
* Optuna: ``optuna.create_study(pruner=HyperbandPruner(min_resource=1, max_resource=R,
  reduction_factor=eta))``, ``optimize(n_trials=N)`` in this process (``n_jobs=1``), reporting
  validation accuracy every epoch and pruning when told. Torch runs with ``--optuna-threads``
  intra-op threads (default 1: on this 2-core machine, shared with other work, two threads trained
  an epoch several times slower than one; pass 2 to compare).

The epochs differ by design: each tool runs its own Hyperband (Optuna's brackets are asynchronous
successive halving, Ray's are synchronous). The machine is shared: the load average before and
after each run is recorded with it.

    .venv/bin/python benchmarks/tune_vs_optuna.py [--seeds 3] [--max-t 27] [--eta 3] [--num-samples 27] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
from tasks.ray_security import enable_token_auth  # noqa: E402

enable_token_auth()  # before Ray is imported, as the `driftloop` command does

import numpy as np  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from tasks.data.config import DataConfig  # noqa: E402
from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.models.config import ModelConfig, TrainingConfig  # noqa: E402
from tasks.seeding import derive_seed  # noqa: E402
from tasks.store.config import StoreConfig  # noqa: E402
from tasks.tuning.config import TuningConfig  # noqa: E402
from tasks.tuning.search import apply_params, run_study, sample_config, trial_seed  # noqa: E402


def configurations(space: dict, seed: int, n: int) -> list[dict]:
    gen = np.random.default_rng(derive_seed(seed, "bench", "tune_vs_optuna"))
    return [sample_config(space, gen) for _ in range(n)]


def run_optuna(
    configs: list[dict],
    splits,
    model: ModelConfig,
    training: TrainingConfig,
    seed: int,
    max_t: int,
    eta: int,
    threads: int,
) -> dict:
    import optuna
    import torch

    from tasks.models.standardize import fit_standardization
    from tasks.models.train import evaluate, make_optimizer, train_one_epoch
    from tasks.models.zoo import build_model
    from tasks.seeding import seed_everything

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    epochs = {"n": 0}
    best = {"acc": -1.0, "params": None}

    def objective(trial: optuna.Trial) -> float:
        # The shared configuration (not sampled by Optuna: the same configurations as the Ray
        # study, in the same order); HyperbandPruner places a trial by its number, not its params.
        params = dict(configs[trial.number])
        trial.set_user_attr("params", params)
        m_cfg, t_cfg = apply_params(model, training, params)
        ts = trial_seed(seed, params)
        seed_everything(ts)
        # Standardized inputs, as the trainable builds its model (tasks/tuning/trainable.py).
        net = build_model(m_cfg, splits.train.sample_shape, 10, fit_standardization(splits.train.x)).to(device)
        opt = make_optimizer(net, t_cfg.optimizer, t_cfg.lr, t_cfg.weight_decay, t_cfg.momentum)
        acc = 0.0
        for e in range(1, max_t + 1):
            torch.manual_seed(derive_seed(ts, "torch", e))
            train_one_epoch(
                net, opt, splits.train.x, splits.train.y, t_cfg.batch_size, derive_seed(ts, "epoch", e), device
            )
            acc = evaluate(net, splits.val.x, splits.val.y, device, 10).accuracy
            epochs["n"] += 1
            if acc > best["acc"]:
                best.update(acc=acc, params=params)
            trial.report(acc, e)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return acc

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_t, reduction_factor=eta),
    )
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=len(configs), n_jobs=1)
    wall = time.perf_counter() - t0
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {
        "wall_seconds": round(wall, 2),
        "epochs": epochs["n"],
        "trials": len(study.trials),
        "pruned": pruned,
        "best_val_accuracy": round(best["acc"], 4),
        "best_params": best["params"],
        "seconds_per_epoch": round(wall / max(1, epochs["n"]), 4),
        "torch_threads": threads,
    }


def run_driftloop(
    configs: list[dict], splits, model: ModelConfig, training: TrainingConfig, seed: int, cfg: TuningConfig
) -> dict:
    with tempfile.TemporaryDirectory(prefix="driftloop-tune-vs-optuna-") as store:
        t0 = time.perf_counter()
        study = run_study(
            cfg, splits, seed=seed, store=StoreConfig(uri=store), model=model, training=training, configurations=configs
        )
        wall = time.perf_counter() - t0
    assert [t.config for t in sorted(study.trials, key=lambda t: t.trial_id)], "no trials"
    return {
        "wall_seconds": round(wall, 2),
        "epochs": study.total_epochs,
        "trials": len(study.trials),
        "stopped_early": sum(t.status == "stopped" for t in study.trials),
        "best_val_accuracy": round(study.best_metric, 4),
        "best_params": study.best_params,
        "seconds_per_epoch": round(wall / max(1, study.total_epochs), 4),
        "ray_start_seconds": round(study.ray_start_seconds, 2),
        "inside_train_seconds": round(study.train_seconds, 2),
        "utilisation": round(study.train_seconds / (wall * 2), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-t", type=int, default=27)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--num-samples", type=int, default=27)
    ap.add_argument("--optuna-threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="R=9, 9 configurations, 1 seed")
    args = ap.parse_args()
    if args.quick:
        args.max_t, args.num_samples, args.seeds = 9, 9, 1
    dc = DataConfig()
    model, training = ModelConfig(), TrainingConfig(num_threads=1)
    cfg = TuningConfig(
        max_t=args.max_t, eta=args.eta, num_samples=args.num_samples, resources_per_trial={"cpu": 1, "gpu": 0}
    )
    runs = []
    for k in range(args.seeds):
        seed = 2024 + k
        splits = split_dataset(load_digits_dataset(), seed, dc.val_fraction, dc.test_fraction)
        configs = configurations(cfg.search_space, seed, args.num_samples)
        # Alternate which runs first: the machine's load drifts over minutes.
        load0 = os.getloadavg()
        if k % 2 == 0:
            d = run_driftloop(configs, splits, model, training, seed, cfg)
            load1 = os.getloadavg()
            o = run_optuna(configs, splits, model, training, seed, args.max_t, args.eta, args.optuna_threads)
        else:
            o = run_optuna(configs, splits, model, training, seed, args.max_t, args.eta, args.optuna_threads)
            load1 = os.getloadavg()
            d = run_driftloop(configs, splits, model, training, seed, cfg)
        load2 = os.getloadavg()
        ratio = d["wall_seconds"] / o["wall_seconds"]
        runs.append(
            {
                "seed": seed,
                "driftloop": d,
                "optuna": o,
                "wall_ratio_driftloop_over_optuna": round(ratio, 3),
                "first": "driftloop" if k % 2 == 0 else "optuna",
                "load_average": {"before": load0, "between": load1, "after": load2},
            }
        )
        print(
            f"seed {seed}: driftloop {d['wall_seconds']:.1f} s ({d['epochs']} epochs, best {d['best_val_accuracy']}) "
            f"vs Optuna {o['wall_seconds']:.1f} s ({o['epochs']} epochs, best {o['best_val_accuracy']}): "
            f"ratio {ratio:.2f}; load {load0[0]:.1f}/{load2[0]:.1f}",
            flush=True,
        )
    ratios = [r["wall_ratio_driftloop_over_optuna"] for r in runs]
    summary = {
        "wall_ratio_driftloop_over_optuna_median": round(statistics.median(ratios), 3),
        "wall_ratio_per_seed": ratios,
        "goal_wall_ratio_at_most": 1.1,
        "driftloop_wall_seconds_median": statistics.median(r["driftloop"]["wall_seconds"] for r in runs),
        "optuna_wall_seconds_median": statistics.median(r["optuna"]["wall_seconds"] for r in runs),
        "driftloop_epochs_median": statistics.median(r["driftloop"]["epochs"] for r in runs),
        "optuna_epochs_median": statistics.median(r["optuna"]["epochs"] for r in runs),
        "driftloop_best_val_accuracy_mean": round(
            statistics.mean(r["driftloop"]["best_val_accuracy"] for r in runs), 4
        ),
        "optuna_best_val_accuracy_mean": round(statistics.mean(r["optuna"]["best_val_accuracy"] for r in runs), 4),
        "driftloop_utilisation_median": statistics.median(r["driftloop"]["utilisation"] for r in runs),
    }
    write_result(
        "tune_vs_optuna",
        {
            "max_t": args.max_t,
            "eta": args.eta,
            "num_samples": args.num_samples,
            "optuna_torch_threads": args.optuna_threads,
            "model": model.model_dump(),
            "optuna_version": __import__("optuna").__version__,
            "summary": summary,
            "runs": runs,
        },
    )
    print(summary)


if __name__ == "__main__":
    main()
