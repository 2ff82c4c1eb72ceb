"""Benchmark: drift detection delay, false alarms and cost per check on simulated digits streams.

For each detector and drift kind, a stream of 100 batches (drift from batch 60 for 20 batches,
then back to normal; severity 1.0 = "moderate", see tasks/drift/stream.py) at batch sizes 50, 100
and 200: detection delay in batches after onset (0 = flagged at the onset batch), false alarms per
100 batches without drift, share of drifted batches flagged, and seconds per check.

Baseline (same run): KS with Bonferroni on the raw 64 input pixels, no model (Rabanser et al.
2019's "no dimensionality reduction" baseline), against BBSD (KS on the softmax outputs).

Cost savings, stated: the clean batches of a stream are the same for every drift kind (seeded per
batch), and the offline detectors are stateless and seeded per batch, so their verdicts on clean
batches are computed once per batch size and shared by all kinds; the online detectors run the
whole stream for each kind (their window carries drift past the end of the drift period). MMD and
LSDD use 50 permutations (p-value resolution 0.02), and they and the online detectors (window 25)
run on three kinds (gaussian noise, rotation, label shift) only. Online ERT is batch_size / p_val instances,
i.e. the same expected false-alarm rate per batch as the offline tests.

    .venv/bin/python benchmarks/drift_detection.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.drift.config import DriftConfig  # noqa: E402
from tasks.drift.detectors import batch_features, build_detectors  # noqa: E402
from tasks.drift.reference import build_reference  # noqa: E402
from tasks.drift.stream import simulate_stream  # noqa: E402

SEED = 1337
ONSET, DURATION, N_BATCHES = 60, 20, 100
WINDOW = 25  # online window; calibration cost grows with it (alibi loops over window positions)
OFFLINE = ["ks_softmax", "mmd_embedding", "lsdd"]
ONLINE = ["mmd_online", "cvm_online"]


def train_model(splits, seed):
    import torch

    from tasks.models.config import ModelConfig, TrainingConfig
    from tasks.models.train import evaluate, fit, select_device
    from tasks.models.zoo import build_model

    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="cnn", width=16, depth=2), (1, 8, 8), 10)
    fit(
        model,
        splits.train.x,
        splits.train.y,
        splits.val.x,
        splits.val.y,
        TrainingConfig(epochs=12, batch_size=32, lr=3e-3, num_threads=1),
        seed=seed,
        num_classes=10,
    )
    acc = evaluate(model, splits.test.x, splits.test.y, select_device("cpu"), 10).accuracy
    return model, acc


class RawPixelKS:
    """Baseline: KS + Bonferroni on the raw inputs (no model)."""

    name = "ks_raw_pixels"
    online = False

    def __init__(self, x_ref, p_val):
        from alibi_detect.cd import KSDrift

        flat = x_ref.reshape(len(x_ref), -1)
        self.keep = flat.std(0) > 0  # constant pixels (digits' borders) carry no test
        self.impl = KSDrift(flat[:, self.keep], p_val=p_val, correction="bonferroni")

    def check(self, x, batch_id):
        t0 = time.perf_counter()
        out = self.impl.predict(x.reshape(len(x), -1)[:, self.keep])["data"]
        return bool(out["is_drift"]), time.perf_counter() - t0


def summarize(flags, seconds):
    flags = np.asarray(flags, bool)
    drift_idx = np.arange(ONSET, ONSET + DURATION)
    clean = np.setdiff1d(np.arange(N_BATCHES), drift_idx)
    hits = np.flatnonzero(flags[drift_idx])
    return {
        "delay_batches": int(hits[0]) if len(hits) else None,
        "false_alarms_per_100": round(100.0 * flags[clean].sum() / len(clean), 2),
        "detected_fraction": round(float(flags[drift_idx].mean()), 3),
        "seconds_per_check": round(float(np.mean(seconds)), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch size 100, two kinds: a smoke run")
    args = ap.parse_args()
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    kinds = ["gaussian_noise", "rotation", "brightness", "occlusion", "label_shift"]
    # MMD, LSDD and the online detectors cost far more per check than KS: three kinds for them.
    perm_kinds = ["gaussian_noise", "rotation", "label_shift"]
    sizes = [50, 100, 200]
    if args.quick:
        kinds, perm_kinds, sizes = ["gaussian_noise", "label_shift"], ["gaussian_noise"], [100]
    p_val = 0.05

    splits = split_dataset(load_digits_dataset(), SEED, val_fraction=0.3, test_fraction=0.2)
    model, test_acc = train_model(splits, SEED)
    x_ref_pool = np.concatenate([splits.val.x, splits.train.x])
    results: list[dict] = []
    calib_seconds: dict[str, float] = {}
    for bs in sizes:
        cfg = DriftConfig(
            detectors=OFFLINE + ONLINE,
            p_val=p_val,
            reference_size=500,
            n_permutations=50,
            ert=int(bs / p_val),
            window_size=WINDOW,
        )
        t0 = time.perf_counter()
        ref = build_reference(model, x_ref_pool, cfg, seed=SEED)
        calib_seconds[str(bs)] = round(time.perf_counter() - t0, 2)
        baseline = RawPixelKS(ref.x, p_val)
        offline = build_detectors(ref, OFFLINE)
        streams = {k: list(simulate_stream(splits, k, ONSET, DURATION, N_BATCHES, bs, SEED, 1.0)) for k in kinds}
        clean_stream = list(simulate_stream(splits, "none", ONSET, DURATION, N_BATCHES, bs, SEED, 1.0))
        feats = {k: [batch_features(model, b.x, "cpu") for b in s] for k, s in streams.items()}
        clean_feats = [batch_features(model, b.x, "cpu") for b in clean_stream]

        # Offline detectors + baseline: clean verdicts once, drifted verdicts per kind.
        clean_cache: dict[str, tuple[list, list]] = {}
        for det in list(offline) + [baseline]:
            fl, sec = [], []
            for i, b in enumerate(clean_stream):
                if ONSET <= i < ONSET + DURATION:
                    fl.append(False)
                    sec.append(np.nan)
                    continue
                if det is baseline:
                    f, s = det.check(b.x, b.batch_id)
                else:
                    r = det.check(clean_feats[i][det.feature], b.batch_id)
                    f, s = r.drift, r.seconds
                fl.append(f)
                sec.append(s)
            clean_cache[det.name] = (fl, sec)
        for kind in kinds:
            for det in list(offline) + [baseline]:
                if det.name in ("mmd_embedding", "lsdd") and kind not in perm_kinds:
                    continue
                fl, sec = list(clean_cache[det.name][0]), list(clean_cache[det.name][1])
                for i in range(ONSET, ONSET + DURATION):
                    b = streams[kind][i]
                    if det is baseline:
                        fl[i], sec[i] = det.check(b.x, b.batch_id)
                    else:
                        r = det.check(feats[kind][i][det.feature], b.batch_id)
                        fl[i], sec[i] = r.drift, r.seconds
                results.append(
                    {"detector": det.name, "kind": kind, "batch_size": bs, **summarize(fl, [s for s in sec if s == s])}
                )
            # Online detectors: the whole stream, from a fresh state.
            for name in ONLINE if kind in perm_kinds else []:
                det = build_detectors(ref, [name])
                (d,) = list(det)
                fl, sec = [], []
                for i, b in enumerate(streams[kind]):
                    r = d.check(feats[kind][i][d.feature], b.batch_id)
                    fl.append(r.drift)
                    sec.append(r.seconds)
                results.append({"detector": name, "kind": kind, "batch_size": bs, **summarize(fl, sec)})
        print(f"batch size {bs} done after {time.perf_counter() - t_start:.0f} s", flush=True)

    # Summary table.
    dets = list(dict.fromkeys(r["detector"] for r in results))
    print(
        f"\nmodel test accuracy {test_acc:.3f}; onset {ONSET}, {DURATION} drifted of {N_BATCHES} batches; "
        f"p_val {p_val}; cells: delay (batches) / false alarms per 100 clean batches / seconds per check"
    )
    for bs in sizes:
        print(f"\nbatch size {bs}")
        print(f"{'detector':16s} " + " ".join(f"{k:>22s}" for k in kinds))
        for d in dets:
            cells = []
            for k in kinds:
                r = next((r for r in results if r["detector"] == d and r["kind"] == k and r["batch_size"] == bs), None)
                cells.append(
                    "-"
                    if r is None
                    else f"{'miss' if r['delay_batches'] is None else r['delay_batches']}/"
                    f"{r['false_alarms_per_100']:g}/{r['seconds_per_check']:.3f}"
                )
            print(f"{d:16s} " + " ".join(f"{c:>22s}" for c in cells))
    goal = [r for r in results if r["batch_size"] == max(sizes) and r["detector"] != "ks_raw_pixels"]
    met = [
        r
        for r in goal
        if r["delay_batches"] is not None and r["delay_batches"] <= 2 and r["false_alarms_per_100"] <= 100 * p_val
    ]
    print(
        f"\ngoal (delay <= 2 batches, false alarms <= {100 * p_val:g} per 100, batch {max(sizes)}): "
        f"{len(met)} of {len(goal)} detector/kind pairs"
    )
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s")

    import alibi_detect

    out = {
        "benchmark": "drift_detection",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seed": SEED,
        "quick": args.quick,
        "setup": {
            "onset": ONSET,
            "duration": DURATION,
            "n_batches": N_BATCHES,
            "severity": 1.0,
            "p_val": p_val,
            "reference_size": 500,
            "n_permutations": 50,
            "window_size": WINDOW,
            "ert": "batch_size / p_val",
            "model": "SmallCNN width 16 depth 2, 12 epochs",
            "model_test_accuracy": round(test_acc, 4),
            "reference_inputs": "validation + training split of digits",
            "stream_pool": "test split",
            "permutation_detector_kinds": perm_kinds,
        },
        "baseline": "ks_raw_pixels: KS + Bonferroni on raw pixels, no model",
        "reference_build_seconds_by_batch_size": calib_seconds,
        "goal_met": {"pairs": len(goal), "met": len(met)},
        "results": results,
        "total_seconds": round(total, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "alibi_detect": alibi_detect.__version__, "numpy": np.__version__},
    }
    path = ROOT / "benchmarks" / "results" / "drift_detection.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
