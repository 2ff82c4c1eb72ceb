"""Tables, plots and markdown of the robustness artifacts."""

import base64

import pytest
import torch

from tasks.adversarial.evaluation import evaluate_robustness
from tasks.adversarial.gate import robustness_gate
from tasks.adversarial.report import (
    curve_plot,
    curve_rows,
    evaluation_markdown,
    gate_markdown,
    history_markdown,
    history_plot,
    history_rows,
    png_data_uri,
)

from .conftest import subset, train_mlp

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluation(natural_mlp, digits):
    x, y = subset(digits.test, 100)
    return evaluate_robustness(
        natural_mlp,
        x,
        y,
        epsilons=[0.05, 0.1],
        epsilon=0.1,
        norm="linf",
        steps=3,
        restarts=1,
        lo=0.0,
        hi=1.0,
        num_classes=10,
        seed=0,
        device=torch.device("cpu"),
        label="candidate",
    )


def test_curve_table_and_plot(evaluation):
    rows = curve_rows(evaluation)
    assert [r["epsilon"] for r in rows] == [0.0, 0.05, 0.1, 1.0]
    assert rows[2]["note"] == "configured epsilon" and rows[0]["pgd3_accuracy"] == round(evaluation.clean_accuracy, 4)
    png = curve_plot([evaluation, evaluation])
    assert png.startswith(PNG) and len(png) > 2000
    md = evaluation_markdown(evaluation, png)
    assert "PASS `large_epsilon_near_chance`" in md and "| epsilon |" not in md.split("## Accuracy")[0]
    uri = png_data_uri(png)
    assert uri in md and base64.b64decode(uri.split(",", 1)[1]) == png


def test_history_table_and_figure2_plot(digits):
    _, res = train_mlp(digits, "delayed", epochs=2, history_samples=50)
    rows = history_rows(res)
    assert [r["phase"] for r in rows] == ["start", "natural", "adversarial"]
    assert rows[0]["train_loss"] is None
    png = history_plot([res, res], labels=["a", "b"])
    assert png.startswith(PNG)
    assert "natural for the first 1" in history_markdown(res, png)
    res.history = []
    with pytest.raises(ValueError, match="no per-epoch history"):
        history_plot(res)


def test_gate_markdown(evaluation):
    d = robustness_gate(evaluation, None, 0.02)
    md = gate_markdown(d)
    assert md.startswith("# Robustness gate: PROMOTE") and "| candidate |" in md
