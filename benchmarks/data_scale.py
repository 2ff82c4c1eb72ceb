"""Benchmark: synthetic tabular data of 10^4, 10^5 and 10^6 rows through validate, one training
epoch and a drift check: wall time and peak memory for each size.

Each size runs in a fresh process (peak memory is a process high-water mark). The data, 20
float32 features and a label, is written beforehand as an .npz file (arrays x, y) plus a drift
batch of a tenth of the rows. Stages, as the pipeline runs them (pure functions, no Prefect):

- validate: read the file, split by hash, infer the schema of the train split, validate the loaded
  data against it (a failing file's bytes would then be read and quarantined), split again and
  infer the schema training uses, in the order flows/pipeline.py runs them;
- train: one epoch of the default model (auto: the MLP; standardization in the model), batch 256;
- drift: a drift reference built as the pipeline builds it (500 rows sampled from the validation
  and test splits, with their labels for CBPE; tasks/drift/steps.py) and a check of the drift
  batch (validated against the schema, then ``ks_softmax``, the default detector).

Peak memory is the process's peak resident set (VmHWM) minus its resident set after imports
(torch, alibi-detect) and a warm-up forward pass,
compared with the data's in-memory size (n x 20 x 4 bytes + n x 8 for the labels).
Goals (issue 16): time grows linearly (10^6 at most 12x 10^5); peak memory at most 3x the data.

    .venv/bin/python benchmarks/data_scale.py [--sizes 10000 100000 1000000]

Writes benchmarks/results/data_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
FEATURES = 20
WARMUP_ROWS = 1000


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def write_data(path: Path, n: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, FEATURES)).astype(np.float32)
    x[:, :4] = np.exp(x[:, :4])
    y = (x[:, 4] + x[:, 5] - x[:, 6] > 0).astype(np.int64)
    np.savez(path, x=x, y=y)


def _pipeline(path: str, batch: str, store) -> tuple[dict, dict, int, int, object]:
    """The three stages on one file, as the pipeline runs them: (seconds, peak bytes over the
    baseline after each stage, rows, data bytes, the drift report). The peaks are VmHWM readings;
    the caller subtracts its baseline."""
    import torch

    from tasks.data.config import ValidationConfig
    from tasks.data.schema import infer_schema
    from tasks.data.sources import load_dataset, split_dataset
    from tasks.data.validation import validate_or_quarantine
    from tasks.drift.config import DriftConfig
    from tasks.drift.detectors import check_batch
    from tasks.drift.reference import build_reference
    from tasks.models.config import ModelConfig
    from tasks.models.standardize import fit_standardization
    from tasks.models.train import make_optimizer, train_one_epoch
    from tasks.models.zoo import build_model
    from tasks.store.backends import read_uri

    times, peaks = {}, {}
    t0 = time.perf_counter()
    # As flows/pipeline.py runs it: the schema of this data's own train split, the loaded data
    # validated in memory against it, then the splits and schema that training uses.
    ds = load_dataset(path, lambda u: read_uri(u, store))
    n, data_bytes = len(ds), ds.x.nbytes + ds.y.nbytes
    own = infer_schema(split_dataset(ds, 1337, 0.15, 0.2).train)
    ds = validate_or_quarantine(ds, own, ValidationConfig(), store, raw_uri=path).dataset
    splits = split_dataset(ds, 1337, 0.15, 0.2)
    schema = infer_schema(splits.train)
    times["validate"] = time.perf_counter() - t0
    peaks["validate"] = _status("VmHWM")

    t0 = time.perf_counter()
    model = build_model(ModelConfig(), (FEATURES,), 2, fit_standardization(splits.train.x))
    opt = make_optimizer(model, "adam", 1e-3)
    train_one_epoch(model, opt, splits.train.x, splits.train.y, 256, 0, torch.device("cpu"))
    times["train_epoch"] = time.perf_counter() - t0
    peaks["train_epoch"] = _status("VmHWM")

    t0 = time.perf_counter()
    cfg = DriftConfig(detectors=["ks_softmax"])
    ref = build_reference(model, [splits.val.x, splits.test.x], cfg, 1, y_inputs=[splits.val.y, splits.test.y])
    b = validate_or_quarantine(batch, schema, ValidationConfig(check_shift=False), store).dataset
    reports = check_batch(ref, b.x, model, ["ks_softmax"], cfg, "scale")
    times["drift_check"] = time.perf_counter() - t0
    peaks["drift_check"] = _status("VmHWM")
    return times, peaks, n, int(data_bytes), reports[0]


def child(path: str, batch: str) -> dict:
    import torch

    from tasks.store.config import StoreConfig

    torch.set_num_threads(1)
    # alibi-detect's import (numba, transformers) alone is ~300 MB: part of the baseline, not of the data.
    import alibi_detect.cd  # noqa: F401

    store = StoreConfig(uri=tempfile.mkdtemp(prefix="data-scale-store-"))
    # Warm-up: the same three stages once on WARMUP_ROWS rows of other data, so that the baseline
    # holds what every run has whatever its size (code pages, lazily imported modules, numba's
    # compiled KS kernels, torch's autograd and optimizer state for the model, thread pools).
    # VmHWM is then reset (Linux: write 5 to /proc/self/clear_refs) so the peak is this run's own.
    warm = Path(tempfile.mkdtemp(prefix="data-scale-warmup-"))
    write_data(warm / "train.npz", WARMUP_ROWS, 2)
    write_data(warm / "batch.npz", WARMUP_ROWS // 2, 3)
    _pipeline(str(warm / "train.npz"), str(warm / "batch.npz"), store)
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    times, hwm, n, data_bytes, report = _pipeline(path, batch, store)
    peaks = {k: v - base for k, v in hwm.items()}
    peak = max(peaks.values())
    return {
        "rows": n,
        "data_bytes": data_bytes,
        "file_bytes": os.path.getsize(path),
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "total_seconds": round(sum(times.values()), 3),
        "baseline_rss_bytes": int(base),
        "peak_bytes_over_baseline": int(peak),
        "peak_over_data_after": {k: round(v / data_bytes, 2) for k, v in peaks.items()},
        "peak_over_data": round(peak / data_bytes, 2),
        "drift": bool(report.is_drift) if hasattr(report, "is_drift") else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="data-scale-") as d:
        for n in args.sizes:
            path, batch = Path(d) / f"train-{n}.npz", Path(d) / f"batch-{n}.npz"
            write_data(path, n, 0)
            write_data(batch, max(n // 10, 100), 1)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), str(batch)],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{n:>9,} rows: validate {row['seconds']['validate']:7.2f} s, epoch "
                f"{row['seconds']['train_epoch']:7.2f} s, "
                f"drift {row['seconds']['drift_check']:6.2f} s; peak "
                f"+{row['peak_bytes_over_baseline'] / 2**20:7.1f} MiB "
                f"= {row['peak_over_data']:.2f}x the data ({row['data_bytes'] / 2**20:.1f} MiB)"
            )
            path.unlink()
            batch.unlink()
    by = {r["rows"]: r for r in rows}
    ratio = (by[1_000_000]["total_seconds"] / by[100_000]["total_seconds"]) if {100_000, 1_000_000} <= set(by) else None
    result = {
        "benchmark": "data_scale",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": rows,
        "time_ratio_1e6_over_1e5": ratio and round(ratio, 2),
        "max_peak_over_data": max(r["peak_over_data"] for r in rows),
    }
    if ratio:
        print(
            f"time 10^6 / 10^5: {ratio:.2f}x (goal <= 12x); worst peak memory "
            f"{result['max_peak_over_data']:.2f}x the data (goal <= 3x)"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "data_scale.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT / 'data_scale.json'}")


if __name__ == "__main__":
    main()
