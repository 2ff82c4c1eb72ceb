"""Report rows and plots from a hand-made study (no Ray)."""

from tasks.tuning.plan import hyperband_plan
from tasks.tuning.report import (
    best_rows,
    bracket_rows,
    learning_curves_png,
    placement_rows,
    plan_rows,
    study_markdown,
    trial_rows,
)
from tasks.tuning.search import StudyResult, TrialRecord


def rec(tid, s, curve, status, node="n-cpu", gpus=""):
    return TrialRecord(
        tid,
        {"lr": 0.01, "width": 32},
        status,
        len(curve),
        curve,
        [1 - a for a in curve],
        0.1,
        band=0,
        bracket=s,
        node_id=node,
        gpu_ids=gpus,
        nodes=[node],
    )


def study():
    # max_t=9, eta=3, Ray bracket s=1: 5 trials to 3 epochs, 2 kept to 9; bracket s=0: 1 trial to 9.
    trials = [
        rec("t0", 1, [0.5, 0.6, 0.7, 0.8, 0.85, 0.86, 0.87, 0.88, 0.9], "completed"),
        rec("t1", 1, [0.4, 0.5, 0.65, 0.7, 0.7, 0.72, 0.75, 0.76, 0.8], "completed"),
        rec("t2", 1, [0.3, 0.35, 0.4], "stopped"),
        rec("t3", 1, [0.2, 0.2, 0.3], "stopped"),
        rec("t4", 1, [0.1, 0.2, 0.2], "stopped"),
        rec("t5", 0, [0.6, 0.7, 0.8, 0.85, 0.9, 0.91, 0.93, 0.95, 0.94], "completed", node="n-gpu", gpus="0"),
    ]
    return StudyResult(
        "hb-test",
        "/tmp/x",
        "hyperband",
        "val_accuracy",
        "max",
        9,
        3,
        {"lr": 0.01, "width": 32},
        {},
        {},
        0.95,
        8,
        "t5",
        trials,
        36,
        36,
        10.0,
        2.0,
        1.0,
        False,
        {"cpu": 1.0, "gpu": 0.0},
    )


def test_bracket_rows_count_promotions_and_stops():
    rows = {(r["bracket"], r["rung"]): r for r in bracket_rows(study())}
    assert rows[(1, 0)] | {} == {
        "band": 0,
        "bracket": 1,
        "rung": 0,
        "epochs": 3,
        "trials": 5,
        "promoted": 2,
        "stopped": 3,
        "completed": 0,
        "failed": 0,
        "best_val_accuracy": 0.7,
    }
    assert (rows[(1, 1)]["trials"], rows[(1, 1)]["completed"], rows[(1, 1)]["stopped"]) == (2, 2, 0)
    assert rows[(1, 1)]["best_val_accuracy"] == 0.9
    assert (rows[(0, 0)]["epochs"], rows[(0, 0)]["trials"], rows[(0, 0)]["completed"]) == (9, 1, 1)


def test_trial_and_best_rows():
    rows = trial_rows(study())
    assert [r["status"] for r in rows].count("stopped") == 3
    assert rows[-1]["best_val_accuracy"] == 0.95 and rows[-1]["last_val_accuracy"] == 0.94
    assert {"parameter": "val_accuracy", "value": 0.95} in best_rows(study())
    assert (rows[-1]["node"], rows[-1]["gpu_ids"], rows[0]["gpu_ids"]) == ("n-gpu", "0", None)


def test_placement_rows_and_markdown_show_nodes_and_gpus():
    rows = placement_rows(study())
    assert rows == [
        {"node": "n-cpu", "trials": 5, "gpu_ids": None, "moved": 0},
        {"node": "n-gpu", "trials": 1, "gpu_ids": "0", "moved": 0},
    ]
    assert "| `n-gpu` | 1 | 0 | 0 |" in study_markdown(study(), b"png")


def test_plan_rows():
    rows = plan_rows(hyperband_plan(9, 3))
    assert rows[0] == {"s": 2, "i": 0, "n_i": 9, "r_i": 1, "bracket_epochs": 27}
    assert len(rows) == 6


def test_curves_png_and_markdown():
    png = learning_curves_png(study())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = study_markdown(study(), png)
    assert "data:image/png;base64," in md and "**0.9500**" in md and "3 stopped early" in md
