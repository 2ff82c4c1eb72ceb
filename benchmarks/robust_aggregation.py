"""Robust aggregation under poisoned clients: final test accuracy of FedAvg, FedMedian and Krum
when 2 of 10 clients send poisoned updates, against a clean FedAvg run.

The poisoned clients train honestly, then send a manipulated update (``poison_update``): client 0
a sign-flipped one, ``w - 10 * d``, and client 1 a boosted one, ``w + 10 * d`` (d: the honest
update). Digits, 10 clients, IID partition, every client each round, 20 rounds, E=1, B=32, Adam.

Aggregation runs through the same Flower strategy objects the ServerApp uses
(``build_strategy``: Flower 1.32's FedAvg / FedMedian / Krum behind driftloop's reply filter),
fed real ``flwr.app.Message`` replies in-process; client updates use the ClientApp's pure
``client_update``. Only the transport (Ray / gRPC) is left out, which does not change the maths.

usage: .venv/bin/python benchmarks/robust_aggregation.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402

from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.federated.algorithms import client_update, poison_update  # noqa: E402
from tasks.federated.config import FederatedConfig  # noqa: E402
from tasks.federated.partition import partition_indices  # noqa: E402
from tasks.federated.strategies import build_strategy  # noqa: E402
from tasks.models.config import ModelConfig  # noqa: E402
from tasks.models.train import evaluate  # noqa: E402
from tasks.models.zoo import build_model  # noqa: E402
from tasks.seeding import derive_seed  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "robust_aggregation.json"
ATTACKS = {0: ("sign_flip", 10.0), 1: ("scale", 10.0)}


class _Grid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


def run(strategy: str, poisoned: bool, seed: int, splits, rounds: int, n_clients: int = 10) -> dict:
    cfg = FederatedConfig(strategy=strategy, num_clients=n_clients, min_fit_clients=n_clients, krum_byzantine=2)
    strat = build_strategy(cfg)
    train, test = splits.train, splits.test
    parts = partition_indices(train.y, n_clients, "iid", derive_seed(seed, "partition"))
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_model(ModelConfig(arch="mlp", width=64, depth=2, dropout=0.0), train.sample_shape, 10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dev = torch.device("cpu")
    curve = []
    for t in range(1, rounds + 1):
        arrays = ArrayRecord({k: Array(v.numpy()) for k, v in state.items()})
        ins = sorted(
            strat.configure_train(t, arrays, ConfigRecord(), _Grid(n_clients)), key=lambda m: m.metadata.dst_node_id
        )
        replies = []
        for c, msg in enumerate(ins):
            idx = parts[c]
            local, loss = client_update(
                model,
                state,
                train.x[idx],
                train.y[idx],
                epochs=1,
                batch_size=32,
                optimizer="adam",
                lr=3e-3,
                seed=derive_seed(seed, "client", c, t),
                device=dev,
            )
            if poisoned and c in ATTACKS:
                local = poison_update(state, local, *ATTACKS[c])
            content = RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v.numpy()) for k, v in local.items()}),
                    "metrics": MetricRecord({"train_loss": loss, "num-examples": len(idx), "partition-id": c}),
                }
            )
            replies.append(Message(content=content, reply_to=msg))
        agg, _ = strat.aggregate_train(t, replies)
        state = {k: torch.from_numpy(np.array(a.numpy(), copy=True)) for k, a in agg.items()}
        model.load_state_dict(state)
        ev = evaluate(model, test.x, test.y, dev, 10)
        curve.append(ev.accuracy if np.isfinite(ev.loss) else 0.0)
    return {"final_accuracy": curve[-1], "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    rounds = 8 if args.quick else 20
    splits = split_dataset(load_digits_dataset(), 1337, 0.15, 0.15)
    t0 = time.time()
    cases = [
        ("fedavg (clean)", "fedavg", False),
        ("fedavg", "fedavg", True),
        ("fedmedian", "fedmedian", True),
        ("krum", "krum", True),
    ]
    rows = {}
    for label, strat, poisoned in cases:
        rs = [run(strat, poisoned, s, splits, rounds) for s in seeds]
        accs = [r["final_accuracy"] for r in rs]
        rows[label] = {
            "strategy": strat,
            "poisoned_clients": 2 if poisoned else 0,
            "final_accuracy": accs,
            "mean_final_accuracy": float(np.mean(accs)),
            "curve_seed0": rs[0]["curve"],
        }
        print(f"{label:15s} final test accuracy {np.mean(accs):.4f}  {['%.3f' % a for a in accs]}", flush=True)
    res = {
        "results": rows,
        "attacks": {str(k): {"kind": v[0], "factor": v[1]} for k, v in ATTACKS.items()},
        "setup": {
            "dataset": "digits 8x8, train 70% / test 15%",
            "clients": 10,
            "poisoned": 2,
            "partition": "iid",
            "rounds": rounds,
            "local": "E=1, B=32, Adam lr 3e-3",
            "model": "MLP 2x64",
            "krum_byzantine_f": 2,
            "engine": "in-process: Flower 1.32 strategy objects + driftloop reply filter on real Messages",
        },
        "seeds": seeds,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "wall_seconds": round(time.time() - t0, 1),
        "cpu_count": os.cpu_count(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "flwr": __import__("flwr").__version__ if hasattr(__import__("flwr"), "__version__") else "1.32.1",
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1))
    clean = rows["fedavg (clean)"]["mean_final_accuracy"]
    print(
        f"\nclean FedAvg {clean:.4f}; with 2/10 poisoned: "
        + ", ".join(f"{k} {v['mean_final_accuracy']:.4f}" for k, v in rows.items() if v["poisoned_clients"])
    )
    print(f"wrote {OUT} in {res['wall_seconds']} s")


if __name__ == "__main__":
    main()
