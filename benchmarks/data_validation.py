"""Benchmark: what does schema validation catch that a plain loader lets through, at what cost?

On digits (schema inferred from the training split), builds random held-out batches and applies
one corruption to each: a NaN, an inf, a value outside [0, 1], an unknown label, 30% duplicated
rows, inverted images (a gross shift inside the value range), pixels scaled by 1.5 (unclipped),
brightened by 0.2 (clipped to [0, 1]), Gaussian noise (sd 0.3 and 0.05, clipped to [0, 1]: the
second is meant to be too subtle for a "gross shift" rule), dropped features (wrong shape) and
text in the features. Compares two validators on the same batches:

- baseline: what ``sources.as_float32`` plus a finiteness check enforce without a schema
  (numeric, reshapeable to (1, 8, 8), finite);
- schema: :func:`tasks.data.validation.validate_batch` with the default ValidationConfig.

Reports the detection rate per corruption, the false-alarm rate on clean held-out batches, and
validation throughput (rows/s) on a 10,000-row batch.

Held-out rows of other datasets: for digits, breast_cancer (569x30), wine (178x13), iris, a
generated 2000x20 table with long-tailed columns and a generated image folder (PNG files read by
tasks.data.images), the schema is inferred from the train split of 10 seeds' hash splits and the
held-out rows (validation + test, as one batch and as random batches of 20-100 rows) are
validated: the false-alarm rate per rule (goal 0). Tabular corruptions on breast_cancer (a
column x1000, a -999 sentinel, a positive column's sign flipped, a NaN) give the detection rate
there.

    .venv/bin/python benchmarks/data_validation.py [--quick]

Writes benchmarks/results/data_validation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tasks.data.config import ValidationConfig  # noqa: E402
from tasks.data.dataset import Dataset  # noqa: E402
from tasks.data.schema import infer_schema  # noqa: E402
from tasks.data.sources import as_float32, load_digits_dataset, split_dataset  # noqa: E402
from tasks.data.validation import validate_batch  # noqa: E402
from tasks.errors import DataError  # noqa: E402
from tasks.seeding import derive_seed  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
BASE_SEED = 1337


def _cell(r, x):
    i = r.integers(len(x))
    return (i, 0, r.integers(8), r.integers(8))


def corrupt(name: str, x: np.ndarray, y: np.ndarray, r: np.random.Generator):
    """One corrupted copy of a clean batch (x float32 (n, 1, 8, 8), y int64)."""
    x, y = x.copy(), y.copy()
    if name == "nan":
        x[_cell(r, x)] = np.nan
    elif name == "inf":
        x[_cell(r, x)] = np.inf
    elif name == "out_of_range":
        x[_cell(r, x)] = 1.0 + r.uniform(0.05, 1.0)
    elif name == "unknown_label":
        y[r.integers(len(y))] = 10
    elif name == "duplicates":
        k = int(0.3 * len(x))
        x[-k:] = x[r.integers(0, len(x) - k, k)]
    elif name == "inverted":
        x = 1.0 - x
    elif name == "scaled_1.5":
        x = x * 1.5
    elif name.startswith("noise_"):
        sd = float(name.split("_")[1])
        x = np.clip(x + r.normal(0, sd, x.shape), 0, 1).astype(np.float32)
    elif name == "brighten_0.2":
        x = np.clip(x + 0.2, 0, 1)
    elif name == "dropped_features":
        x = x.reshape(len(x), -1)[:, :60]
    elif name == "text_features":
        x = x.reshape(len(x), -1).astype(object)
        x[r.integers(len(x)), r.integers(64)] = "n/a"
    else:
        raise ValueError(name)
    return x, y


CORRUPTIONS = [
    "nan",
    "inf",
    "out_of_range",
    "unknown_label",
    "duplicates",
    "inverted",
    "scaled_1.5",
    "brighten_0.2",
    "noise_0.3",
    "noise_0.05",
    "dropped_features",
    "text_features",
]


def baseline_rejects(x, y) -> bool:
    """What loading without a schema enforces: numeric, (1, 8, 8)-shaped, finite features."""
    try:
        ds = as_float32(Dataset(np.asarray(x), np.asarray(y)), [1, 8, 8])
    except (DataError, ValueError, TypeError):
        return True
    return not bool(np.isfinite(ds.x).all())


def _tabular_sets() -> dict[str, Dataset]:
    import sklearn.datasets as sd

    out = {}
    for name in ("breast_cancer", "wine", "iris"):
        x, y = getattr(sd, f"load_{name}")(return_X_y=True)
        out[name] = Dataset(x.astype(np.float32), y.astype(np.int64), name)
    r = np.random.default_rng(3)
    x = r.normal(size=(2000, 20)).astype(np.float32)
    x[:, :5] = np.exp(x[:, :5])
    out["generated_2000x20"] = Dataset(x, (x[:, 5] + x[:, 6] > 0).astype(np.int64), "generated")
    return out


def _image_folder_set() -> Dataset:
    """The 3-class 12x12 PNG folder the tests train on (tests/fixtures/datasets.image_folder), 100 per class."""
    import tempfile

    from tasks.data.sources import load_dataset
    from tasks.store.backends import list_uri, read_uri
    from tasks.store.config import StoreConfig
    from tests.fixtures.datasets import image_folder

    root = image_folder(Path(tempfile.mkdtemp(prefix="bench-images-")) / "images", per_class=100, seed=0)
    cfg = StoreConfig()
    return load_dataset(str(root), lambda u: read_uri(u, cfg), list_uris=lambda u: list_uri(u, cfg))


def held_out_false_alarms(seeds: int, batches_per_seed: int) -> dict:
    """False-alarm rate per rule on held-out rows of each dataset (module docstring)."""
    from tasks.data.rules import ALL_RULES

    sets = {"digits": load_digits_dataset(), **_tabular_sets(), "image_folder_300x1x12x12": _image_folder_set()}
    cfg = ValidationConfig()
    out = {}
    for name, ds in sets.items():
        fired = {rule: 0 for rule in ALL_RULES}
        total = 0
        for seed in range(seeds):
            sp = split_dataset(ds, seed, 0.15, 0.2)
            schema = infer_schema(sp.train)
            hx, hy = np.concatenate([sp.val.x, sp.test.x]), np.concatenate([sp.val.y, sp.test.y])
            r = np.random.default_rng(derive_seed(BASE_SEED, "held-out", name, seed))
            batches = [(hx, hy)]
            for _ in range(batches_per_seed):
                idx = r.choice(len(hx), min(len(hx), int(r.integers(20, 101))), replace=False)
                batches.append((hx[idx], hy[idx]))
            for i, b in enumerate(batches):
                rep = validate_batch(b, schema, cfg, f"{name}-{seed}-{i}")
                total += 1
                for rule in rep.rules:
                    fired[rule] += 1
        out[name] = {
            "rows": len(ds),
            "batches": total,
            "false_alarm_rate": {
                k: v / total
                for k, v in fired.items()
                if k in ("out_of_range", "feature_shift", "duplicate_rows", "non_finite")
            },
            "any_rule": sum(fired.values()) / total,
        }
    return out


def tabular_corruptions(n_batches: int) -> dict:
    ds = _tabular_sets()["breast_cancer"]
    sp = split_dataset(ds, BASE_SEED, 0.15, 0.2)
    schema = infer_schema(sp.train)
    hx, hy = np.concatenate([sp.val.x, sp.test.x]), np.concatenate([sp.val.y, sp.test.y])
    r = np.random.default_rng(derive_seed(BASE_SEED, "tabular-corruptions"))
    out = {}
    for kind in ("column_x1000", "sentinel_-999", "sign_flip", "nan"):
        hits = 0
        for i in range(n_batches):
            idx = r.choice(len(hx), 50, replace=False)
            x, y = hx[idx].copy(), hy[idx]
            j = int(r.integers(x.shape[1]))
            if kind == "column_x1000":
                x[:, j] *= 1000
            elif kind == "sentinel_-999":
                x[int(r.integers(len(x))), j] = -999
            elif kind == "sign_flip":
                x[:, j] = -x[:, j]
            else:
                x[int(r.integers(len(x))), j] = np.nan
            hits += not validate_batch((x, y), schema, ValidationConfig(), f"{kind}-{i}").passed
        out[kind] = hits / n_batches
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer batches")
    args = ap.parse_args()
    n_batches = 30 if args.quick else 200

    ds = load_digits_dataset()
    sp = split_dataset(ds, BASE_SEED, 0.15, 0.2)
    t0 = time.perf_counter()
    schema = infer_schema(sp.train)
    infer_s = time.perf_counter() - t0
    cfg = ValidationConfig()
    held_x = np.concatenate([sp.val.x, sp.test.x])
    held_y = np.concatenate([sp.val.y, sp.test.y])
    r = np.random.default_rng(derive_seed(BASE_SEED, "bench", "data_validation"))

    def sample(n):
        idx = r.choice(len(held_x), n, replace=False)
        return held_x[idx], held_y[idx]

    # Clean batches: the false-alarm rate.
    false_alarms = {"schema": 0, "baseline": 0}
    for i in range(n_batches):
        x, y = sample(int(r.integers(20, 300)))
        false_alarms["schema"] += not validate_batch((x, y), schema, cfg, f"clean-{i}").passed
        false_alarms["baseline"] += baseline_rejects(x, y)

    detection = {}
    rules_seen: dict[str, dict[str, int]] = {}
    for name in CORRUPTIONS:
        hits = {"schema": 0, "baseline": 0}
        rules_seen[name] = {}
        for i in range(n_batches):
            x, y = corrupt(name, *sample(50), r)
            rep = validate_batch((x, y), schema, cfg, f"{name}-{i}")
            hits["schema"] += not rep.passed
            for rule in rep.rules:
                rules_seen[name][rule] = rules_seen[name].get(rule, 0) + 1
            hits["baseline"] += baseline_rejects(x, y)
        detection[name] = {k: v / n_batches for k, v in hits.items()}

    # Throughput on a large batch (held-out digits tiled with a little noise, so no duplicates).
    reps = 10_000 // len(held_x) + 1
    big_x = np.clip(np.tile(held_x, (reps, 1, 1, 1))[:10_000] + r.uniform(0, 1e-3, (10_000, 1, 8, 8)), 0, 1)
    big_x = big_x.astype(np.float32)
    big_y = np.tile(held_y, reps)[:10_000]
    times = []
    for _ in range(3 if args.quick else 5):
        t0 = time.perf_counter()
        rep = validate_batch((big_x, big_y), schema, cfg, "big")
        times.append(time.perf_counter() - t0)
    assert rep.passed, rep.to_text()
    rows_per_s = 10_000 / min(times)

    mean_det = {k: float(np.mean([d[k] for d in detection.values()])) for k in ("schema", "baseline")}
    held_out = held_out_false_alarms(3 if args.quick else 10, 5 if args.quick else 20)
    tab_det = tabular_corruptions(n_batches)
    result = {
        "benchmark": "data_validation",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seed": BASE_SEED,
        "batches_per_case": n_batches,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "schema_inference_seconds": round(infer_s, 4),
        "false_alarm_rate": {k: v / n_batches for k, v in false_alarms.items()},
        "detection_rate": detection,
        "mean_detection_rate": mean_det,
        "rules_fired": rules_seen,
        "held_out_false_alarms": held_out,
        "tabular_detection_rate_breast_cancer": tab_det,
        "validate_rows_per_second_10k_batch": round(rows_per_s),
        "validate_seconds_10k_batch": round(min(times), 4),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "data_validation.json").write_text(json.dumps(result, indent=2))

    print(f"schema inference on {schema.num_rows} rows: {infer_s * 1000:.1f} ms")
    print(
        f"false alarms on {n_batches} clean held-out batches: schema {result['false_alarm_rate']['schema']:.1%}, "
        f"baseline {result['false_alarm_rate']['baseline']:.1%}"
    )
    print(f"{'corruption':<18}{'schema':>8}{'baseline':>10}   rules fired (schema)")
    for name in CORRUPTIONS:
        d = detection[name]
        fired = ", ".join(f"{k}:{v}" for k, v in sorted(rules_seen[name].items()))
        print(f"{name:<18}{d['schema']:>8.0%}{d['baseline']:>10.0%}   {fired}")
    print(f"{'mean':<18}{mean_det['schema']:>8.0%}{mean_det['baseline']:>10.0%}")
    print("held-out rows of the training data (schema of the train split), false-alarm rate per rule:")
    for name, h in held_out.items():
        rates = ", ".join(f"{k} {v:.1%}" for k, v in h["false_alarm_rate"].items())
        print(f"  {name:<26} {h['rows']:>5} rows, {h['batches']:>4} batches: {rates}")
    print("tabular corruptions (breast_cancer), detection: " + ", ".join(f"{k} {v:.0%}" for k, v in tab_det.items()))
    print(f"validation throughput: {rows_per_s:,.0f} rows/s (10,000-row batch, {min(times) * 1000:.0f} ms)")
    print(f"wrote {OUT / 'data_validation.json'}")


if __name__ == "__main__":
    main()
