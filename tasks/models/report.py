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


def comparison_rows(metrics: Mapping[str, object], champion_metrics: Mapping[str, object] | None) -> list[dict]:
    """Rows of the ``training-metrics`` table: each numeric metric of the candidate beside the champion's."""
    return [
        {
            "metric": k,
            "candidate": round(float(v), 6),
            "champion": (
                round(float(champion_metrics[k]), 6)  # type: ignore[arg-type]
                if champion_metrics and k in champion_metrics
                else None
            ),
        }
        for k, v in metrics.items()
        if isinstance(v, (int, float))
    ]


def run_summary_markdown(
    model_name: str,
    run_id: str,
    version: int,
    manifest_uri: str,
    artifacts: Mapping[str, str],
    metrics: Mapping[str, object],
    champion_version: int | None,
    champion_metrics: Mapping[str, object] | None,
    promote: bool,
    reason: str,
    stages: Sequence[str],
) -> str:
    """The ``training-summary`` markdown: what the run did, the gate's decision and where its artifacts are."""
    lines = [
        f"# driftloop run `{run_id}`",
        "",
        f"* model **{model_name}** version **{version}**",
        f"* stages: {' -> '.join(stages)}",
        f"* decision: **{'promoted to champion' if promote else 'champion kept'}**: {reason}",
        f"* previous champion: {('version ' + str(champion_version)) if champion_version is not None else 'none'}",
        f"* manifest: `{manifest_uri}`",
        "",
        "| metric | candidate | champion |",
        "|---|---|---|",
    ]
    for k, v in metrics.items():
        if isinstance(v, (int, float)):
            c = champion_metrics.get(k) if champion_metrics else None
            lines.append(f"| {k} | {v:.4f} | {'' if c is None else f'{c:.4f}'} |")
    lines += ["", "Stored artifacts:", ""]
    lines += [f"* `{name}`: `{uri}`" for name, uri in artifacts.items()]
    return "\n".join(lines)
