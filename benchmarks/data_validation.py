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
from tasks.data.schema import infer_schema  # noqa: E402
from tasks.data.sources import Dataset, as_float32, load_digits_dataset, split_dataset  # noqa: E402
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


CORRUPTIONS = ["nan", "inf", "out_of_range", "unknown_label", "duplicates", "inverted", "scaled_1.5",
               "brighten_0.2", "noise_0.3", "noise_0.05", "dropped_features", "text_features"]


def baseline_rejects(x, y) -> bool:
    """What loading without a schema enforces: numeric, (1, 8, 8)-shaped, finite features."""
    try:
        ds = as_float32(Dataset(np.asarray(x), np.asarray(y)), [1, 8, 8])
    except (DataError, ValueError, TypeError):
        return True
    return not bool(np.isfinite(ds.x).all())


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
    result = {
        "benchmark": "data_validation",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seed": BASE_SEED,
        "batches_per_case": n_batches,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "platform": platform.platform()},
        "schema_inference_seconds": round(infer_s, 4),
        "false_alarm_rate": {k: v / n_batches for k, v in false_alarms.items()},
        "detection_rate": detection,
        "mean_detection_rate": mean_det,
        "rules_fired": rules_seen,
        "validate_rows_per_second_10k_batch": round(rows_per_s),
        "validate_seconds_10k_batch": round(min(times), 4),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "data_validation.json").write_text(json.dumps(result, indent=2))

    print(f"schema inference on {schema.num_rows} rows: {infer_s * 1000:.1f} ms")
    print(f"false alarms on {n_batches} clean held-out batches: schema {result['false_alarm_rate']['schema']:.1%}, "
          f"baseline {result['false_alarm_rate']['baseline']:.1%}")
    print(f"{'corruption':<18}{'schema':>8}{'baseline':>10}   rules fired (schema)")
    for name in CORRUPTIONS:
        d = detection[name]
        fired = ", ".join(f"{k}:{v}" for k, v in sorted(rules_seen[name].items()))
        print(f"{name:<18}{d['schema']:>8.0%}{d['baseline']:>10.0%}   {fired}")
    print(f"{'mean':<18}{mean_det['schema']:>8.0%}{mean_det['baseline']:>10.0%}")
    print(f"validation throughput: {rows_per_s:,.0f} rows/s (10,000-row batch, {min(times) * 1000:.0f} ms)")
    print(f"wrote {OUT / 'data_validation.json'}")


if __name__ == "__main__":
    main()
