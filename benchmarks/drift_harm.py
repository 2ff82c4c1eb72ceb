"""Benchmark: is the drift harmful? The accuracy estimates without labels (agreement with a 5-NN
classifier over training rows, the default; and CBPE) against the measured accuracy, and the
retrainings ``drift.trigger = drift_and_harm`` saves, on the stream simulator's drift kinds.

Setup: the digits CNN of benchmarks/drift_detection.py (seeded); the drift reference is built on
the validation split with its labels, which fits the CBPE temperature (tasks/drift/harm.py); the
streams are drawn from the test split (never seen in training or calibration). Per drift kind: 10
clean batches then 20 drifted ones (severity 1.0, 100 samples each). Per batch: CBPE's estimated
accuracy (calibrated, and uncalibrated T=1 for comparison), the measured accuracy (the stream has
labels), the ``ks_softmax`` verdict, and whether the verdict would start retraining under
``drift`` (any drift) and ``drift_and_harm`` (drift and an accuracy drop above
``max_estimated_drop`` = 0.05, judged on the estimate, as for unlabelled production batches).

    .venv/bin/python benchmarks/drift_harm.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402
from benchmarks.drift_detection import train_model  # noqa: E402
from tasks.data.sources import load_digits_dataset, split_dataset  # noqa: E402
from tasks.drift.config import DriftConfig  # noqa: E402
from tasks.drift.detectors import build_detectors  # noqa: E402
from tasks.drift.harm import estimate_harm, expected_accuracy  # noqa: E402
from tasks.drift.reference import build_reference  # noqa: E402
from tasks.drift.steps import _harm_agreement  # noqa: E402
from tasks.drift.stream import DRIFT_KINDS, simulate_stream  # noqa: E402

SEED = 1337
MAX_DROP = 0.05


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 drifted batches per kind instead of 20")
    args = ap.parse_args()
    from tasks.models.train import predict_proba, select_device

    splits = split_dataset(load_digits_dataset(), SEED, 0.2, 0.3)
    model, test_acc = train_model(splits, SEED)
    cfg = DriftConfig(detectors=["ks_softmax"], reference_size=len(splits.val))
    ref = build_reference(
        model, splits.val.x, cfg, SEED, y_inputs=splits.val.y, agreement_inputs=(splits.train.x, splits.train.y)
    )
    aset = ref.agreement()
    cal = ref.cbpe()
    ks = build_detectors(ref, ["ks_softmax"]).detectors["ks_softmax"]
    dev = select_device("cpu")
    n_drift = 10 if args.quick else 20
    kinds, errors_all, errors_raw_all, errors_cbpe_all = {}, [], [], []
    for kind in DRIFT_KINDS:
        rows = []
        for b in simulate_stream(
            splits,
            kind=kind,
            onset=10,
            duration=n_drift,
            n_batches=10 + n_drift,
            batch_size=100,
            seed=SEED,
            severity=1.0,
        ):
            probs = predict_proba(model, b.x, dev)
            measured = float((probs.argmax(1) == b.y).mean())
            agree = _harm_agreement(model, aset, b.x, probs)
            h = estimate_harm(cal, probs, b.batch_id, MAX_DROP, agreement=agree)  # no labels: judged on the estimate
            drift = ks.check(probs, b.batch_id).drift
            rows.append(
                {
                    "batch": b.index,
                    "drifted": b.drifted,
                    "measured": measured,
                    "estimated": h.estimated_accuracy,
                    "cbpe": h.cbpe_accuracy,
                    "estimated_uncalibrated": expected_accuracy(probs),
                    "ks_drift": drift,
                    "harmful_estimated": h.harmful,
                    "harmful_measured": cal.reference_accuracy - measured > MAX_DROP,
                }
            )
        drifted = [r for r in rows if r["drifted"]] or rows
        err = [abs(r["estimated"] - r["measured"]) for r in drifted]
        err_raw = [abs(r["estimated_uncalibrated"] - r["measured"]) for r in drifted]
        err_cbpe = [abs(r["cbpe"] - r["measured"]) for r in drifted]
        errors_cbpe_all += err_cbpe
        errors_all += err
        errors_raw_all += err_raw
        kinds[kind] = {
            "measured_accuracy_drifted": round(float(np.mean([r["measured"] for r in drifted])), 4),
            "estimated_accuracy_drifted": round(float(np.mean([r["estimated"] for r in drifted])), 4),
            "mean_abs_error_points": round(100 * float(np.mean(err)), 2),
            "mean_abs_error_cbpe_points": round(100 * float(np.mean(err_cbpe)), 2),
            "mean_abs_error_uncalibrated_points": round(100 * float(np.mean(err_raw)), 2),
            "drift_verdicts": sum(r["ks_drift"] for r in rows),
            "retrain_triggers_drift": sum(r["ks_drift"] for r in rows),
            "retrain_triggers_drift_and_harm": sum(r["ks_drift"] and r["harmful_estimated"] for r in rows),
            "batches_truly_harmful": sum(r["harmful_measured"] for r in rows),
            "harmful_missed_by_drift_and_harm": sum(
                r["ks_drift"] and r["harmful_measured"] and not r["harmful_estimated"] for r in rows
            ),
        }
        print(
            f"{kind:15s} measured {kinds[kind]['measured_accuracy_drifted']:.3f} "
            f"estimated {kinds[kind]['estimated_accuracy_drifted']:.3f} "
            f"err {kinds[kind]['mean_abs_error_points']:.2f} pts (CBPE "
            f"{kinds[kind]['mean_abs_error_cbpe_points']:.2f}, "
            f"uncalibrated CBPE "
            f"{kinds[kind]['mean_abs_error_uncalibrated_points']:.2f}); triggers drift "
            f"{kinds[kind]['retrain_triggers_drift']} vs drift_and_harm "
            f"{kinds[kind]['retrain_triggers_drift_and_harm']}"
        )
    # The harmless kinds: drift the detector sees whose measured accuracy drop stays within the limit.
    harmless = [
        k
        for k, v in kinds.items()
        if k != "none"
        and v["drift_verdicts"] > 0
        and cal.reference_accuracy - v["measured_accuracy_drifted"] <= MAX_DROP
    ]
    result = {
        "setup": {
            "seed": SEED,
            "batch_size": 100,
            "clean_batches_per_kind": 10,
            "drifted_batches_per_kind": n_drift,
            "severity": 1.0,
            "max_estimated_drop": MAX_DROP,
            "calibration": "temperature scaling on the validation split",
            "temperature": round(cal.temperature, 4),
            "reference_accuracy": round(cal.reference_accuracy, 4),
            "test_accuracy": round(test_acc, 4),
        },
        "kinds": kinds,
        "mean_abs_error_points_all_kinds": round(100 * float(np.mean(errors_all)), 2),
        "mean_abs_error_uncalibrated_points_all_kinds": round(100 * float(np.mean(errors_raw_all)), 2),
        "mean_abs_error_cbpe_points_all_kinds": round(100 * float(np.mean(errors_cbpe_all)), 2),
        "estimator": "agreement (drift.harm_estimator default); CBPE beside it",
        "goal": "estimate within 3 points of the measured accuracy on average over the drift kinds",
        "goal_met": bool(100 * float(np.mean(errors_all)) <= 3.0),
        "harmless_kinds": harmless,
        "retrainings_saved_on_harmless_kinds": {
            k: kinds[k]["retrain_triggers_drift"] - kinds[k]["retrain_triggers_drift_and_harm"] for k in harmless
        },
    }
    print(
        f"mean |estimate - measured| over all kinds: {result['mean_abs_error_points_all_kinds']} points "
        f"(CBPE {result['mean_abs_error_cbpe_points_all_kinds']}, uncalibrated CBPE "
        f"{result['mean_abs_error_uncalibrated_points_all_kinds']}); harmless kinds {harmless}: "
        f"saved {result['retrainings_saved_on_harmless_kinds']}"
    )
    write_result("drift_harm", result)


if __name__ == "__main__":
    main()
