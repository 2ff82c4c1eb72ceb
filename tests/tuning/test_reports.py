"""Where a trial reports to Tune (report_epochs) and how the study reads the per-epoch curves back
(_expand_curves): pure, no Ray."""

import pandas as pd
import pytest

from tasks.tuning.plan import ray_bracket_sizes, ray_rung_milestones
from tasks.tuning.results import asha_milestones
from tasks.tuning.study import _expand_curves
from tasks.tuning.trainable import report_epochs


@pytest.mark.parametrize("max_t,eta", [(27, 3), (9, 3), (3, 3), (10, 3), (16, 2), (1, 3)])
def test_reports_fall_on_every_decision_epoch_and_max_t(max_t, eta):
    hb = report_epochs("hyperband", max_t, eta)
    for s, _, _ in ray_bracket_sizes(max_t, eta):
        assert set(ray_rung_milestones(max_t, eta, s)) <= set(hb)
    assert hb[-1] == max_t and report_epochs("bohb", max_t, eta) == hb
    assert set(report_epochs("asha", max_t, eta)) == set(asha_milestones(max_t, eta))
    assert report_epochs("hyperband", 27, 3) == (1, 3, 9, 27)


def test_expand_curves_gives_one_row_per_epoch_with_the_reports_other_columns():
    df = pd.DataFrame(
        [
            {
                "epoch": 1,
                "val_accuracy": 0.5,
                "session": "a",
                "restored_from_epoch": 0,
                "timestamp": 1,
                "curve_epoch": [1],
                "curve_val_accuracy": [0.5],
                "curve_val_loss": [1.0],
                "curve_train_loss": [1.1],
                "curve_train_seconds": [0.1],
            },
            {
                "epoch": 3,
                "val_accuracy": 0.7,
                "session": "b",
                "restored_from_epoch": 1,
                "timestamp": 2,
                "curve_epoch": [2, 3],
                "curve_val_accuracy": [0.6, 0.7],
                "curve_val_loss": [0.9, float("nan")],
                "curve_train_loss": [1.0, 0.8],
                "curve_train_seconds": [0.2, 0.3],
            },
        ]
    )
    out = _expand_curves(df)
    assert list(out["epoch"]) == [1, 2, 3] and list(out["val_accuracy"]) == [0.5, 0.6, 0.7]
    assert list(out["session"]) == ["a", "b", "b"] and list(out["restored_from_epoch"]) == [0, 1, 1]
    assert list(out["train_seconds"]) == [0.1, 0.2, 0.3] and pd.isna(out["val_loss"].iloc[2])
    assert not [c for c in out if c.startswith("curve_")]
    # Results without curves (reported every epoch) are left as they are.
    plain = df.drop(columns=[c for c in df if c.startswith("curve_")])
    assert _expand_curves(plain).equals(plain)
