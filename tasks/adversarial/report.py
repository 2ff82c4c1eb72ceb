"""Tables, plots and markdown for the robustness artifacts (pure: no Prefect, matplotlib's Agg
backend, plots returned as PNG bytes)."""

from __future__ import annotations

import base64
import io
from typing import Any, Mapping, Sequence

from tasks.adversarial.evaluation import RobustEvaluation
from tasks.adversarial.gate import GateDecision
from tasks.adversarial.training import HardenResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, for embedding a plot in a markdown artifact."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def curve_rows(ev: RobustEvaluation) -> list[dict]:
    """One table row per epsilon: PGD and FGSM accuracy (the accuracy-vs-epsilon curve)."""
    return [
        {
            "model": ev.label,
            "norm": ev.norm,
            "epsilon": round(p.epsilon, 6),
            f"pgd{ev.steps}_accuracy": round(p.pgd_accuracy, 4),
            "fgsm_accuracy": round(p.fgsm_accuracy, 4),
            "note": (
                "configured epsilon"
                if p.epsilon == ev.epsilon
                else "whole data range, no random start"
                if p.epsilon == ev.large_epsilon
                else ""
            ),
        }
        for p in ev.curve
    ]


def history_rows(res: HardenResult) -> list[dict]:
    """One table row per epoch: phase, loss, natural and robust validation accuracy, cost so far."""
    return [
        {
            "epoch": h.epoch,
            "phase": h.phase,
            "train_loss": None if h.train_loss is None else round(h.train_loss, 4),
            "natural_accuracy": round(h.natural_accuracy, 4),
            "robust_accuracy": round(h.robust_accuracy, 4),
            "grad_passes": h.grad_passes,
            "train_seconds": round(h.train_seconds, 3),
        }
        for h in res.history
    ]


def curve_plot(evaluations: Sequence[RobustEvaluation], dpi: int = 80) -> bytes:
    """Accuracy vs epsilon (PGD solid, FGSM dashed) for one or more models, chance marked."""
    if not evaluations:
        raise ValueError("curve_plot: no evaluations to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for ev in evaluations:
        eps = [p.epsilon for p in ev.curve]
        (line,) = ax.plot(
            eps,
            [p.pgd_accuracy for p in ev.curve],
            marker="o",
            label=f"{ev.label or 'model'} PGD-{ev.steps}" + ("" if ev.reliable else " (UNRELIABLE)"),
        )
        ax.plot(
            eps,
            [p.fgsm_accuracy for p in ev.curve],
            ls="--",
            color=line.get_color(),
            alpha=0.7,
            label=f"{ev.label or 'model'} FGSM",
        )
    ev0 = evaluations[0]
    ax.axhline(ev0.chance, color="grey", lw=0.8, ls=":", label="chance")
    ax.axvline(ev0.epsilon, color="black", lw=0.8, ls="-.", label=f"configured eps {ev0.epsilon:g}")
    ax.set_xscale("symlog", linthresh=max(ev0.epsilon, 1e-3))
    ax.set_xlabel(f"epsilon ({ev0.norm}, input units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig, dpi)


def history_plot(
    results: Sequence[HardenResult] | HardenResult, labels: Sequence[str] | None = None, dpi: int = 80
) -> bytes:
    """Natural (solid) and adversarial (dashed) validation accuracy per epoch, the switch to
    adversarial training marked: like Figure 2 of Gupta et al. 2020."""
    results = [results] if isinstance(results, HardenResult) else list(results)
    if not results or not any(r.history for r in results):
        raise ValueError("history_plot: no per-epoch history to plot (was track_history off?)")
    labels = list(labels) if labels is not None else [r.mode for r in results]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r, lab in zip(results, labels):
        ep = [h.epoch for h in r.history]
        (line,) = ax.plot(ep, [h.natural_accuracy for h in r.history], label=f"{lab} natural")
        ax.plot(
            ep,
            [h.robust_accuracy for h in r.history],
            ls="--",
            color=line.get_color(),
            label=f"{lab} adversarial (eps {r.epsilon:g})",
        )
        if 0 < r.switch_epoch < r.epochs:
            ax.axvline(r.switch_epoch + 0.5, color=line.get_color(), lw=0.8, ls=":")
            ax.annotate(
                f"switch ({lab})",
                (r.switch_epoch + 0.5, 0.02),
                rotation=90,
                fontsize=7,
                color=line.get_color(),
                ha="right",
                va="bottom",
                xycoords="data",
            )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0: before training)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("natural (solid) and adversarial (dashed) accuracy", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig, dpi)


def _table_md(rows: list[dict]) -> str:
    if not rows:
        return "(empty)\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def evaluation_markdown(ev: RobustEvaluation, plot_png: bytes | None = None) -> str:
    """Markdown: headline numbers, sanity checks, the curve table and (optionally) the plot inline."""
    status = "reliable" if ev.reliable else "**UNRELIABLE** (possible gradient masking): promotion blocked"
    lines = [
        f"# Robust evaluation {ev.label}".rstrip(),
        "",
        f"- clean accuracy: **{ev.clean_accuracy:.4f}** on {ev.n} samples",
        f"- robust accuracy (PGD-{ev.steps}, {ev.restarts} restart(s), {ev.norm} eps {ev.epsilon:g}): "
        f"**{ev.robust_accuracy:.4f}**",
        f"- evaluation: {status}",
        "",
        "## Sanity checks",
        "",
    ]
    lines += [f"- {'PASS' if c.passed else 'FAIL'} `{c.name}`: {c.detail}" for c in ev.checks]
    lines += ["", "## Accuracy vs epsilon", "", _table_md(curve_rows(ev))]
    if plot_png is not None:
        lines += [f"![accuracy vs epsilon]({png_data_uri(plot_png)})", ""]
    return "\n".join(lines)


def history_markdown(res: HardenResult, plot_png: bytes | None = None) -> str:
    """Markdown: mode, cost and the per-epoch natural/robust accuracy (Figure-2-like plot inline)."""
    lines = [
        f"# Adversarial fine-tuning ({res.mode})",
        "",
        f"- {res.epochs} epochs, natural for the first {res.switch_epoch}; {res.norm} eps {res.epsilon:g}",
        f"- cost: {res.grad_passes} gradient evaluations (batch forward+backward passes), "
        f"{res.train_seconds:.2f} s training, {res.eval_seconds:.2f} s per-epoch evaluation",
        f"- history on {res.history_samples} validation samples",
    ]
    if res.max_clean_drop is not None and res.selected_epoch is not None:
        lines.append(
            f"- kept epoch {res.selected_epoch}: the most robust one whose natural accuracy is at most "
            f"{res.max_clean_drop:g} below the start (`adversarial.max_clean_drop`); robust accuracies "
            "within one standard error of the best count as a tie, won by the higher natural accuracy"
        )
    lines.append("")
    if plot_png is not None:
        lines += [f"![natural and adversarial accuracy per epoch]({png_data_uri(plot_png)})", ""]
    lines += [_table_md(history_rows(res))]
    return "\n".join(lines)


def gate_markdown(d: GateDecision) -> str:
    """Markdown: the decision, its reason, each rule and both models' numbers."""
    lines = [f"# Robustness gate: {'PROMOTE' if d.promote else 'KEEP CHAMPION'}", "", d.reason, "", "## Rules", ""]
    lines += [f"- {'PASS' if r.passed else 'FAIL'} `{r.name}`: {r.detail}" for r in d.rules]
    keys = ["clean_accuracy", "robust_accuracy", "epsilon", "norm", "steps", "restarts", "reliable", "n"]
    rows = [{"model": "candidate", **{k: (d.candidate or {}).get(k) for k in keys}}]
    if d.champion is not None:
        rows.append({"model": "champion", **{k: d.champion.get(k) for k in keys}})
    lines += ["", "## Numbers", "", _table_md(rows), f"clean tolerance: {d.clean_tolerance:g}"]
    return "\n".join(lines)


def robust_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The robust evaluation's numbers added to a model's test metrics (``RobustEvaluation.summary()``)."""
    return {
        "clean_accuracy": summary["clean_accuracy"],
        "robust_accuracy": summary["robust_accuracy"],
        "robust_epsilon": summary["epsilon"],
        "robust_reliable": float(bool(summary["reliable"])),
    }
