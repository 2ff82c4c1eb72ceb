"""Overhead of Flower's simulation engine: client updates per second of a Flower simulation
(``run_federated``, engine "simulation": subprocess + Ray + ServerApp/ClientApp) against a plain
in-process FedAvg loop over the same clients, partitions, model and train function
(``client_update`` -> ``train_one_epoch``, then ``weighted_average``).

The plain loop is timed after one warm-up update (torch's first optimizer step costs seconds).
Two rates for Flower: end to end (process and Ray start included) and steady state (rounds 2..T,
from the ServerApp's per-round wall clock, after the actors are warm). Both loops train each client
on its rows minus its local held-out share and evaluate the global model on every client's held-out
rows (federated evaluation) and centrally each round; Flower also runs the federated validation.

Two set-ups: the small one (4 clients, MLP, E=1: start-up dominates) and ``--default-stage``, the
default federated stage (10 clients, Dirichlet 0.5, 10 rounds, E=5, the default CNN).

usage: .venv/bin/python benchmarks/simulation_overhead.py [--quick] [--default-stage]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.federated.algorithms import client_update, weighted_average  # noqa: E402
from tasks.federated.client_data import local_split  # noqa: E402
from tasks.federated.engine import run_federated  # noqa: E402
from tasks.federated.partition import partition_from_config  # noqa: E402
from tasks.models.serialize import build_from_spec, model_spec  # noqa: E402
from tasks.models.train import evaluate  # noqa: E402
from tasks.seeding import derive_seed  # noqa: E402
from tasks.settings import load_settings  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "simulation_overhead.json"


def plain_loop(settings, splits) -> dict:
    fed, tr = settings.federated, settings.training
    train, val, test = splits.train, splits.val, splits.test
    parts = partition_from_config(train.y, fed, derive_seed(settings.seed, "federated", "partition"))
    local = [local_split(train.subset(idx), fed.local_eval_fraction, settings.seed) for idx in parts]
    torch.manual_seed(derive_seed(settings.seed, "federated", "init"))
    model = build_from_spec(model_spec(settings.model, train.sample_shape, 10))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dev = torch.device("cpu")
    # Warm-up (torch's lazy init costs seconds on the first optimizer step), not timed.
    client_update(
        model,
        state,
        train.x[parts[0]],
        train.y[parts[0]],
        epochs=1,
        batch_size=fed.batch_size,
        optimizer=tr.optimizer,
        lr=tr.lr,
        seed=0,
        device=dev,
    )
    t0 = time.perf_counter()
    acc = None
    for t in range(1, fed.rounds + 1):
        states, weights = [], []
        for c, (ltrain, _) in enumerate(local):
            s, _ = client_update(
                model,
                state,
                ltrain.x,
                ltrain.y,
                epochs=fed.local_epochs,
                batch_size=fed.batch_size,
                optimizer=fed.client_optimizer or tr.optimizer,
                lr=fed.client_learning_rate(tr.lr),
                seed=derive_seed(settings.seed, "federated", "client", c, "round", t),
                device=dev,
            )
            states.append(s)
            weights.append(len(ltrain))
        state = weighted_average(states, weights)
        model.load_state_dict(state)
        for _, held in local:
            if len(held):
                evaluate(model, held.x, held.y, dev, 10)
        evaluate(model, val.x, val.y, dev, 10)
        acc = evaluate(model, test.x, test.y, dev, 10).accuracy
    wall = time.perf_counter() - t0
    updates = fed.rounds * fed.num_clients
    return {"updates": updates, "wall_seconds": wall, "updates_per_second": updates / wall, "final_test_accuracy": acc}


def flower(settings, splits) -> dict:
    with tempfile.TemporaryDirectory(prefix="sim-overhead-") as wd:
        t0 = time.perf_counter()
        res = run_federated(settings, splits, workdir=wd, engine="simulation")
        wall = time.perf_counter() - t0
    fed = settings.federated
    updates = fed.rounds * fed.num_clients
    times = [r["wall_time"] for r in res.rounds]
    steady = (fed.rounds - 1) * fed.num_clients / (times[-1] - times[1]) if fed.rounds > 1 else None
    return {
        "updates": updates,
        "wall_seconds": wall,
        "updates_per_second": updates / wall,
        "steady_state_updates_per_second": steady,
        "first_round_seconds": times[1] - times[0],
        "final_test_accuracy": res.rounds[-1]["test_accuracy"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--default-stage", action="store_true", help="the default federated stage's settings")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.default_stage:
        settings = load_settings(environ={}, overrides={"training": {"num_threads": 1}})
        rounds = settings.federated.rounds
        setup = {
            "clients": 10,
            "rounds": rounds,
            "partition": "dirichlet 0.5",
            "model": "default CNN",
            "local": f"E={settings.federated.local_epochs}, B={settings.federated.batch_size}, Adam",
        }
    else:
        rounds = 3 if args.quick else 6
        settings = load_settings(
            profile="smoke",
            environ={},
            overrides={
                "model": {"arch": "mlp", "width": 64, "depth": 2, "dropout": 0.0},
                "training": {"optimizer": "adam", "lr": 3e-3, "num_threads": 1},
                "federated": {
                    "num_clients": 4,
                    "rounds": rounds,
                    "min_fit_clients": 4,
                    "partition": "iid",
                    "local_epochs": 1,
                    "batch_size": 32,
                },
            },
        )
        setup = {"clients": 4, "rounds": rounds, "partition": "iid", "model": "MLP 2x64", "local": "E=1, B=32, Adam"}
    splits = split_dataset(load_digits_dataset(), settings.seed, 0.15, 0.15)
    plain = plain_loop(settings, splits)
    print(
        f"plain in-process loop: {plain['updates_per_second']:.1f} client updates/s "
        f"({plain['updates']} in {plain['wall_seconds']:.2f} s)",
        flush=True,
    )
    fl = flower(settings, splits)
    print(
        f"Flower simulation: {fl['updates_per_second']:.3f} updates/s end to end ({fl['wall_seconds']:.1f} s), "
        f"{fl['steady_state_updates_per_second']:.2f} updates/s in rounds 2..{rounds}",
        flush=True,
    )
    res = {
        "plain": plain,
        "flower_simulation": fl,
        "ratio_end_to_end": plain["updates_per_second"] / fl["updates_per_second"],
        "ratio_steady_state": plain["updates_per_second"] / fl["steady_state_updates_per_second"],
        "setup": {**setup, "flower": "run_simulation in a subprocess, Ray backend (address='local'), 1 CPU per client"},
        "seed": settings.seed,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }
    out = OUT.with_name("simulation_overhead_default_stage.json") if args.default_stage else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(
        f"\nthe plain loop does {res['ratio_end_to_end']:.1f}x the client updates per second end to end, "
        f"{res['ratio_steady_state']:.1f}x in steady state\nwrote {out}"
    )


if __name__ == "__main__":
    main()
