"""Where a trial reports to Tune (report_epochs) and how the study reads the per-epoch curves back
(_expand_curves), and how many times a trial started from a checkpoint: pure, no Ray."""

import pandas as pd
import pytest

from tasks.tuning.plan import ray_bracket_sizes, ray_rung_milestones
from tasks.tuning.results import asha_milestones
from tasks.tuning.study import _checkpoint_starts, _expand_curves
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


def _report(epoch, session, restored, curve_epochs, accs, ts):
    n = len(curve_epochs)
    return {
        "epoch": epoch,
        "val_accuracy": accs[-1],
        "session": session,
        "restored_from_epoch": restored,
        "timestamp": ts,
        "curve_epoch": curve_epochs,
        "curve_val_accuracy": accs,
        "curve_val_loss": [1.0] * n,
        "curve_train_loss": [1.0] * n,
        "curve_train_seconds": [0.1] * n,
    }


def test_the_restored_epochs_a_report_carries_again_fill_only_what_tune_lost():
    """After a restore from the epoch-1 checkpoint, the first report carries epoch 1 again (from the
    checkpoint). Kept only when the report that first carried it is gone, and never counted as
    trained in the new session."""
    first = _report(1, "a", 0, [1], [0.5], 1)
    resumed = _report(3, "b", 1, [1, 2, 3], [0.5, 0.6, 0.7], 2)
    both = _expand_curves(pd.DataFrame([first, resumed]))
    assert list(both["epoch"]) == [1, 2, 3] and list(both["session"]) == ["a", "b", "b"]
    lost = _expand_curves(pd.DataFrame([resumed]))  # Tune started result.json afresh on resume
    assert list(lost["epoch"]) == [1, 2, 3] and list(lost["val_accuracy"]) == [0.5, 0.6, 0.7]
    assert lost["session"].iloc[0] is None and list(lost["session"].iloc[1:]) == ["b", "b"]
    assert "_carried" not in lost


@pytest.mark.parametrize(
    "restored_from,starts",
    [
        ([0, 0, 0], 0),  # never restored
        ([0, 1, 1], 1),  # paused at epoch 1, resumed from its checkpoint
        ([0, 1, 3], 2),  # and again from epoch 3
        ([1, 1], 1),  # the rows from before the restart are gone (result.json started afresh)
        ([0, 1, 0, 0], 1),  # a retry without a checkpoint starts from scratch: not from a checkpoint
        ([], 0),
    ],
)
def test_checkpoint_starts_count_each_new_restore_point_the_first_report_included(restored_from, starts):
    assert _checkpoint_starts(restored_from) == starts
