"""FedAvg vs FedSGD: communication rounds to a target test accuracy (McMahan et al. 2017, Table 2).

Digits (sklearn's 8x8, the project's bundled set) split over 100 clients, pathological non-IID
(two label-pure shards per client) and IID; C = 0.1 (10 clients per round). FedAvg runs E=5 local
epochs with B=10; FedSGD runs E=1 with B = all local data (one full-batch gradient step per client),
the paper's baseline. Both use plain SGD on the paper's "2NN" shape (MLP, two hidden layers of 200)
and the same seeds; as in the paper each method gets its best learning rate from a small grid.

This runs the rounds in-process with the same pure functions the Flower ClientApp calls
(``client_update`` -> ``train_one_epoch``, then FedAvg's ``weighted_average``): the comparison is
about rounds, not transport, and Flower's per-round overhead would make 1000+ FedSGD rounds take
hours here (see ``simulation_overhead``). The paper reports 2.8x-4.6x fewer rounds for FedAvg on
non-IID MNIST and up to 34.8x on IID.

usage: .venv/bin/python benchmarks/fedavg_vs_fedsgd.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.federated.algorithms import client_update, weighted_average  # noqa: E402
from tasks.federated.partition import partition_indices  # noqa: E402
from tasks.models.config import ModelConfig  # noqa: E402
from tasks.models.train import evaluate  # noqa: E402
from tasks.models.zoo import build_model  # noqa: E402
from tasks.seeding import derive_seed, rng  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "fedavg_vs_fedsgd.json"


def run(
    method: str,
    scheme: str,
    lr: float,
    seed: int,
    splits,
    target: float,
    max_rounds: int,
    num_clients: int = 100,
    fraction: float = 0.1,
) -> dict:
    train, test = splits.train, splits.test
    parts = partition_indices(train.y, num_clients, scheme, derive_seed(seed, "partition"))
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_model(ModelConfig(arch="mlp", width=200, depth=2, dropout=0.0), train.sample_shape, 10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    m = max(int(fraction * num_clients), 1)
    epochs, batch = (5, 10) if method == "fedavg" else (1, 10**9)
    dev = torch.device("cpu")
    accs = []
    for t in range(1, max_rounds + 1):
        chosen = rng(seed, "round", t).choice(num_clients, m, replace=False)
        states, weights = [], []
        for k in chosen:
            idx = parts[k]
            s, _ = client_update(
                model,
                state,
                train.x[idx],
                train.y[idx],
                epochs=epochs,
                batch_size=batch,
                optimizer="sgd",
                lr=lr,
                seed=derive_seed(seed, "client", int(k), t),
                device=dev,
            )
            states.append(s)
            weights.append(len(idx))
        state = weighted_average(states, weights)
        model.load_state_dict(state)
        acc = evaluate(model, test.x, test.y, dev, 10).accuracy
        accs.append(acc)
        if acc >= target:
            return {"rounds": t, "reached": True, "final_accuracy": acc}
    return {"rounds": None, "reached": False, "final_accuracy": accs[-1], "best_accuracy": max(accs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one seed, smaller grid and round cap")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    grids = {
        "fedavg": [0.05, 0.1, 0.2] if not args.quick else [0.1],
        "fedsgd": [0.2, 0.5, 1.0] if not args.quick else [0.5],
    }
    max_rounds = {"fedavg": 300, "fedsgd": 600 if args.quick else 1500}
    target = 0.90
    splits = split_dataset(load_digits_dataset(), 1337, 0.15, 0.15)
    t0 = time.time()
    results: dict = {"target_test_accuracy": target, "runs": []}
    summary = {}
    for scheme in ("shards", "iid"):
        best = {}
        for method in ("fedavg", "fedsgd"):
            per_lr = {}
            for lr in grids[method]:
                rs = [run(method, scheme, lr, s, splits, target, max_rounds[method]) for s in seeds]
                for s, r in zip(seeds, rs):
                    results["runs"].append({"scheme": scheme, "method": method, "lr": lr, "seed": s, **r})
                rounds = [r["rounds"] for r in rs]
                per_lr[lr] = float(np.median(rounds)) if all(r is not None for r in rounds) else None
                print(f"{scheme:6s} {method:6s} lr={lr:<5} rounds to {target:.0%}: {rounds}", flush=True)
            ok = {lr: v for lr, v in per_lr.items() if v is not None}
            best[method] = min(ok.items(), key=lambda kv: kv[1]) if ok else (None, None)
        ratio = (best["fedsgd"][1] / best["fedavg"][1]) if best["fedavg"][1] and best["fedsgd"][1] else None
        summary[scheme] = {
            "fedavg_best_lr": best["fedavg"][0],
            "fedavg_rounds": best["fedavg"][1],
            "fedsgd_best_lr": best["fedsgd"][0],
            "fedsgd_rounds": best["fedsgd"][1],
            "speedup_rounds": ratio,
            "fedsgd_round_cap": max_rounds["fedsgd"],
        }
    results.update(
        {
            "summary": summary,
            "seeds": seeds,
            "lr_grid": grids,
            "max_rounds": max_rounds,
            "setup": {
                "dataset": "digits 8x8 (1797), train 70% / test 15%",
                "clients": 100,
                "fraction_C": 0.1,
                "fedavg": "E=5, B=10",
                "fedsgd": "E=1, B=all local data",
                "model": "MLP 2x200 (2NN)",
                "optimizer": "SGD, best lr per method from the grid (median rounds over seeds)",
                "engine": "in-process, the ClientApp's pure client_update + weighted_average",
            },
            "paper": "McMahan et al. 2017: FedAvg needs 2.8x-4.6x fewer rounds non-IID, up to 34.8x IID (MNIST)",
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "wall_seconds": round(time.time() - t0, 1),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        }
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))
    print("\nrounds to", target, "test accuracy (median over seeds, best lr):")
    for scheme, s in summary.items():
        sp = f"{s['speedup_rounds']:.1f}x" if s["speedup_rounds"] else "n/a (a method missed the target)"
        print(
            f"  {scheme:6s}: FedAvg {s['fedavg_rounds']} (lr {s['fedavg_best_lr']}) vs FedSGD {s['fedsgd_rounds']} "
            f"(lr {s['fedsgd_best_lr']}): FedAvg needs {sp} fewer rounds"
        )
    print(f"wrote {OUT} in {results['wall_seconds']} s")


if __name__ == "__main__":
    main()
