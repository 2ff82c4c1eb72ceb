"""Plots and tables of training results, as PNG bytes and plain rows (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from typing import Mapping, Sequence


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def learning_curve_png(history: Mapping[str, Sequence[float]], title: str = "learning curve") -> bytes:
    """Training/validation loss and validation accuracy against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = list(history["epoch"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(ep, history["train_loss"], label="train loss")
    a.plot(ep, history["val_loss"], label="validation loss")
    a.set(xlabel="epoch", ylabel="cross-entropy")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(ep, history["val_accuracy"], color="tab:green", label="validation accuracy")
    b.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01))
    b.legend()
    b.grid(alpha=0.3)
    fig.suptitle(title)
    return _png(fig)


def metrics_rows(metrics: Mapping[str, float]) -> list[dict]:
    return [{"metric": k, "value": round(float(v), 6)} for k, v in metrics.items()]
