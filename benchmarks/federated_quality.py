"""Quality of the default federated stage against central training on the same split.

Central baseline: ``tasks.models.train.fit`` with the default ``training`` section on the training
split. Federated: the default ``federated`` section (10 clients, Dirichlet 0.5, 10 rounds), each
variant replayed in-process with the same maths as the engine: Flower 1.32's strategy objects built
by ``build_strategy`` (reply filter included) aggregating real Messages, every client running
``client_update`` on its partition minus its local held-out share (``local_eval_fraction``), as the
ClientApp does. The global model's test accuracy per round is recorded against the central one.

usage: .venv/bin/python benchmarks/federated_quality.py [--quick] [--seeds N] [--variants NAME,...]
(README figures: ``--seeds 3 --variants "fedavg E=5,fedavg E=5 client lr=3e-3,fedavgm lr=1 m=0.5 E=5,fedavgm lr=1
m=0.5 E=5 client lr=3e-3"``;
the one-seed comparison of every variant is in results/federated_quality_1seed_variants.json.)
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
from tasks.federated.algorithms import client_update  # noqa: E402
from tasks.federated.client_data import local_split  # noqa: E402
from tasks.federated.partition import partition_from_config  # noqa: E402
from tasks.federated.strategies import build_strategy  # noqa: E402
from tasks.models.serialize import build_from_spec, model_spec  # noqa: E402
from tasks.models.train import evaluate, fit  # noqa: E402
from tasks.seeding import derive_seed  # noqa: E402
from tasks.settings import load_settings  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "federated_quality.json"
# Every variant names its strategy and client lr: the defaults moved (to the last one) after this comparison.
_OLD = {
    "strategy": "fedavg",
    "client_lr": None,
    "client_lr_scale": 1.0,
}  # the former default: FedAvg at the training lr (1e-3)
VARIANTS = {
    "fedavg E=5": {**_OLD},
    "fedavg E=5 held-out 0.1": {**_OLD, "local_eval_fraction": 0.1},
    "fedprox mu=0.01 E=5": {**_OLD, "strategy": "fedprox", "proximal_mu": 0.01},
    "fedprox mu=0.1 E=5": {**_OLD, "strategy": "fedprox", "proximal_mu": 0.1},
    "fedavgm lr=1 m=0.9 E=2": {**_OLD, "strategy": "fedavgm", "server_momentum": 0.9, "local_epochs": 2},
    "fedavgm lr=1 m=0.5 E=5": {**_OLD, "strategy": "fedavgm", "server_momentum": 0.5},
    "fedadam eta=0.01 E=2": {**_OLD, "strategy": "fedadam", "server_lr": 0.01, "local_epochs": 2},
    "fedavg E=10": {**_OLD, "local_epochs": 10},
    "fedavg E=5 client lr=3e-3": {**_OLD, "client_lr": 3e-3},
    "fedavgm lr=1 m=0.7 E=5": {**_OLD, "strategy": "fedavgm", "server_momentum": 0.7},
    # the default since this comparison
    "fedavgm lr=1 m=0.5 E=5 client lr=3e-3": {"strategy": "fedavgm", "server_momentum": 0.5, "client_lr": 3e-3},
}


class _Grid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


def central(settings, splits, k: int) -> dict:
    torch.manual_seed(derive_seed(settings.seed, "train", "init"))
    model = build_from_spec(model_spec(settings.model, splits.train.sample_shape, k))
    t0 = time.perf_counter()
    fit(model, splits.train.x, splits.train.y, splits.val.x, splits.val.y, settings.training, settings.seed, k)
    ev = evaluate(model, splits.test.x, splits.test.y, torch.device("cpu"), k)
    return {"test_accuracy": ev.accuracy, "seconds": time.perf_counter() - t0}


def federated(settings, splits, k: int) -> dict:
    fed, tr = settings.federated, settings.training
    strat = build_strategy(fed)
    train, test = splits.train, splits.test
    parts = partition_from_config(train.y, fed, derive_seed(settings.seed, "federated", "partition"))
    local = [local_split(train.subset(idx), fed.local_eval_fraction, settings.seed)[0] for idx in parts]
    torch.manual_seed(derive_seed(settings.seed, "federated", "init"))
    spec = model_spec(settings.model, train.sample_shape, k)
    model = build_from_spec(spec)
    state = {kk: v.clone() for kk, v in model.state_dict().items()}
    dev = torch.device("cpu")
    curve = [evaluate(model, test.x, test.y, dev, k).accuracy]
    t0 = time.perf_counter()
    for t in range(1, fed.rounds + 1):
        arrays = ArrayRecord({kk: Array(v.numpy()) for kk, v in state.items()})
        config = ConfigRecord({"proximal-mu": 0.0})
        ins = sorted(
            strat.configure_train(t, arrays, config, _Grid(fed.num_clients)), key=lambda m: m.metadata.dst_node_id
        )
        replies = []
        for c, msg in enumerate(ins):
            d = local[c]
            new, loss = client_update(
                model,
                state,
                d.x,
                d.y,
                epochs=fed.local_epochs,
                batch_size=fed.batch_size,
                optimizer=fed.client_optimizer or tr.optimizer,
                lr=fed.client_learning_rate(tr.lr),
                seed=derive_seed(settings.seed, "federated", "client", c, "round", t),
                device=dev,
                proximal_mu=float(msg.content["config"].get("proximal-mu", 0.0)),
                weight_decay=tr.weight_decay,
                momentum=tr.momentum,
            )
            content = RecordDict(
                {
                    "arrays": ArrayRecord({kk: Array(v.numpy()) for kk, v in new.items()}),
                    "metrics": MetricRecord({"train_loss": loss, "num-examples": len(d.y), "partition-id": c}),
                }
            )
            replies.append(Message(content=content, reply_to=msg))
        agg, _ = strat.aggregate_train(t, replies)
        state = {kk: torch.from_numpy(np.array(a.numpy(), copy=True)) for kk, a in agg.items()}
        model.load_state_dict(state)
        curve.append(evaluate(model, test.x, test.y, dev, k).accuracy)
    return {"curve": curve, "test_accuracy": curve[-1], "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 rounds, two variants")
    ap.add_argument("--variants", default=None, help="comma-separated names of VARIANTS (default: all)")
    ap.add_argument("--seeds", type=int, default=1, help="base seeds (the default seed, then +1, +2, ...)")
    args = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    base = load_settings(environ={})
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    if args.quick:
        names = names[:2]
    data = load_digits_dataset()
    k = int(data.y.max()) + 1
    seeds = [base.seed + i for i in range(args.seeds)]
    centrals, rows = {}, {n: {"per_seed": {}} for n in names}
    for seed in seeds:
        sb = load_settings(environ={}, overrides={"seed": seed})
        splits = split_dataset(data, seed, sb.data.val_fraction, sb.data.test_fraction)
        c = central(sb, splits, k)
        centrals[seed] = c
        print(
            f"seed {seed}: central training ({sb.training.epochs} epochs): test accuracy {c['test_accuracy']:.4f} "
            f"({c['seconds']:.1f} s)",
            flush=True,
        )
        for name in names:
            over = dict(VARIANTS[name])
            if args.quick:
                over["rounds"] = 3
            s_ = load_settings(environ={}, overrides={"seed": seed, "federated": over})
            r = federated(s_, splits, k)
            r["gap_points"] = round(100 * (c["test_accuracy"] - r["test_accuracy"]), 2)
            rows[name]["per_seed"][seed] = r
            rows[name]["overrides"] = over
            print(
                f"  {name:28s} test accuracy {r['test_accuracy']:.4f} (gap {r['gap_points']:+.1f} pts, "
                f"{r['seconds']:.0f} s) curve {[round(a, 3) for a in r['curve']]}",
                flush=True,
            )
    for name in names:
        gaps = [r["gap_points"] for r in rows[name]["per_seed"].values()]
        rows[name]["mean_gap_points"] = round(float(np.mean(gaps)), 2)
        rows[name]["max_gap_points"] = round(float(np.max(gaps)), 2)
        rows[name]["mean_test_accuracy"] = float(np.mean([r["test_accuracy"] for r in rows[name]["per_seed"].values()]))
        print(
            f"{name:28s} mean test accuracy {rows[name]['mean_test_accuracy']:.4f}, gap to central "
            f"mean {rows[name]['mean_gap_points']:+.2f} max {rows[name]['max_gap_points']:+.2f} pts"
        )
    c = {"per_seed": centrals, "mean_test_accuracy": float(np.mean([v["test_accuracy"] for v in centrals.values()]))}
    res = {
        "central": c,
        "federated": rows,
        "seeds": seeds,
        "setup": {
            "dataset": "digits 8x8, default split",
            "model": base.model.model_dump(),
            "federated_default": base.federated.model_dump(
                include={
                    "num_clients",
                    "partition",
                    "alpha",
                    "rounds",
                    "local_epochs",
                    "batch_size",
                    "strategy",
                    "local_eval_fraction",
                }
            ),
            "engine": "in-process: Flower 1.32 strategy objects + driftloop reply filter on real Messages",
        },
        "seed": base.seed,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "cpu_count": os.cpu_count(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
