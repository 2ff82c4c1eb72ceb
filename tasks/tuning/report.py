"""Reports of a finished study: the brackets as they ran, per-trial rows, learning curves.

Pure (no prefect): ``tasks.tuning.steps`` turns these into Prefect artifacts.
"""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict

from tasks.tuning.plan import Plan
from tasks.tuning.search import StudyResult, TrialRecord, rung_milestones


def _fmt(v: float | None, digits: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def bracket_rows(study: StudyResult) -> list[dict]:
    """One row per rung of every bracket as it ran.

    A rung's ``trials`` are those that trained past the previous milestone; ``promoted`` went on
    past this rung's milestone, ``stopped`` reached it and were stopped there by the scheduler,
    ``failed`` ended in an error inside it, ``completed`` (last rung) reached max_t. ``best`` is
    the best value of the study's metric at the milestone among the trials that reached it.
    Hyperband/BOHB rows name Ray's band and bracket s; ASHA has one bracket (``bracket`` None).
    """
    groups: dict[tuple, list[TrialRecord]] = defaultdict(list)
    for t in study.trials:
        groups[(t.band, t.bracket)].append(t)
    sign = 1.0 if study.mode == "max" else -1.0
    rows = []
    for (band, bracket), trials in sorted(
        groups.items(),
        key=lambda kv: (kv[0][0] if kv[0][0] is not None else -1, kv[0][1] if kv[0][1] is not None else -1),
    ):
        milestones = rung_milestones(study.scheduler, study.max_t, study.eta, bracket)
        prev = 0
        for i, m in enumerate(milestones):
            last = i == len(milestones) - 1
            entered = [t for t in trials if t.epochs > prev or (i == 0 and t.status == "error")]
            reached = [t for t in entered if t.epochs >= m]
            promoted = [] if last else [t for t in reached if t.epochs > m]
            failed = [t for t in entered if t.status == "error" and t.epochs < m]
            values = [t.curve(study.metric)[m - 1] for t in reached if len(t.curve(study.metric)) >= m]
            best = max(values, key=lambda v: sign * v) if values else None
            rows.append(
                {
                    "band": band,
                    "bracket": bracket,
                    "rung": i,
                    "epochs": m,
                    "trials": len(entered),
                    "promoted": len(promoted),
                    "stopped": 0 if last else len(reached) - len(promoted),
                    "completed": len(reached) if last else 0,
                    "failed": len(failed),
                    f"best_{study.metric}": _fmt(best),
                }
            )
            prev = m
    return rows


def trial_rows(study: StudyResult) -> list[dict]:
    """One row per trial: where it ran, how far, its best and last metric, and its parameters."""
    sign = 1.0 if study.mode == "max" else -1.0
    rows = []
    for t in study.trials:
        curve = [v for v in t.curve(study.metric) if math.isfinite(v)]
        rows.append(
            {
                "trial": t.trial_id,
                "band": t.band,
                "bracket": t.bracket,
                "status": t.status,
                "epochs": t.epochs,
                f"best_{study.metric}": _fmt(max(curve, key=lambda v: sign * v) if curve else None),
                f"last_{study.metric}": _fmt(curve[-1] if curve else None),
                "resumes": t.resumes,
                "failures": t.failures,
                "node": (t.node_id or "")[:12] or None,
                "gpu_ids": t.gpu_ids or None,
                **{k: (_fmt(v, 6) if isinstance(v, float) else v) for k, v in sorted(t.config.items())},
            }
        )
    return rows


def placement_rows(study: StudyResult) -> list[dict]:
    """One row per Ray node: the trials whose last epoch ran there and the GPU ids they were given
    (a lost node shows under the nodes its trials moved to; ``moved`` counts trials that trained
    on more than one node)."""
    by_node: dict[str, list[TrialRecord]] = defaultdict(list)
    for t in study.trials:
        if t.node_id is not None:
            by_node[t.node_id].append(t)
    return [
        {
            "node": node[:12],
            "trials": len(ts),
            "gpu_ids": ",".join(sorted({t.gpu_ids for t in ts if t.gpu_ids})) or None,
            "moved": sum(len(t.nodes) > 1 for t in ts),
        }
        for node, ts in sorted(by_node.items())
    ]


def best_rows(study: StudyResult) -> list[dict]:
    """The best configuration as (parameter, value) rows, with its metric, epoch and trial."""
    rows = [{"parameter": k, "value": v} for k, v in sorted(study.best_params.items())]
    rows += [
        {"parameter": study.metric, "value": _fmt(study.best_metric)},
        {"parameter": "best_epoch", "value": study.best_epoch},
        {"parameter": "trial", "value": study.best_trial_id},
    ]
    return rows


def plan_rows(plan: Plan) -> list[dict]:
    """A plan (Algorithm 1's or Ray's) as table rows: bracket s, rung i, n_i, r_i, bracket total."""
    rows = []
    for b in plan.brackets:
        for r in b.rungs:
            rows.append(
                {
                    "s": b.s,
                    "i": r.i,
                    "n_i": r.n,
                    "r_i": _num(r.r),
                    "bracket_epochs": _num(b.total_epochs) if r.i == 0 else None,
                }
            )
    return rows


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(float(x), 3)


def learning_curves_png(study: StudyResult, metric: str | None = None, dpi: int = 90) -> bytes:
    """Every trial's validation curve against epochs (PNG bytes, matplotlib Agg).

    One colour per bracket; a trial stopped early ends where the scheduler stopped it, marked
    with an x; an errored trial ends with a red square; the best trial is drawn thick.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    metric = metric or study.metric
    fig = Figure(figsize=(7.5, 4.5), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    brackets = sorted({t.bracket for t in study.trials if t.bracket is not None})
    cmap = matplotlib.colormaps["viridis"]
    colour = {b: cmap(i / max(1, len(brackets) - 1) * 0.85) for i, b in enumerate(brackets)}
    for t in study.trials:
        curve = t.curve(metric)
        if not curve:
            continue
        epochs = list(range(1, len(curve) + 1))
        c = colour[t.bracket] if t.bracket is not None else "tab:blue"
        best = t.trial_id == study.best_trial_id
        ax.plot(epochs, curve, color=c, lw=2.6 if best else 1.0, alpha=1.0 if best else 0.75, zorder=3 if best else 2)
        if t.status == "stopped":
            ax.plot(epochs[-1], curve[-1], marker="x", color=c, ms=6, zorder=3)
        elif t.status == "error":
            ax.plot(epochs[-1], curve[-1], marker="s", color="tab:red", ms=5, zorder=3)
    for b in brackets:  # legend entries drawn apart, so the best trial's thick line does not stand for its bracket
        ax.plot([], [], color=colour[b], lw=1.5, label=f"bracket s={b}")
    ax.plot([], [], ls="none", marker="x", color="grey", label="stopped early")
    ax.plot([], [], lw=2.6, color="black", label=f"best ({study.best_trial_id})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_xlim(0.5, study.max_t + 0.5)
    ax.set_title(
        f"{study.scheduler} study {study.study_name}: {len(study.trials)} trials, R={study.max_t}, eta={study.eta}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right" if study.mode == "max" and metric == study.metric else "best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown embedding ``png`` as a data: URI (the Prefect UI sanitises markdown with DOMPurify,
    whose defaults keep data: URIs on <img>, so the image shows without any server hosting it)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def study_markdown(study: StudyResult, png: bytes) -> str:
    """A markdown summary: best configuration and metric, study totals, and the learning curves."""
    lines = [
        f"## Hyperparameter study `{study.study_name}` ({study.scheduler})",
        "",
        f"Best {study.metric}: **{study.best_metric:.4f}** at epoch {study.best_epoch} of trial "
        f"`{study.best_trial_id}`.",
        "",
        "| parameter | value |",
        "| --- | --- |",
    ]
    lines += [
        f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(study.best_params.items())
    ]
    stopped = sum(t.status == "stopped" for t in study.trials)
    lines += [
        "",
        f"{len(study.trials)} trials ({stopped} stopped early), {study.total_epochs} epochs, "
        f"{study.wall_seconds:.1f} s wall ({study.train_seconds:.1f} s inside the train function)"
        + (", resumed from a saved experiment" if study.resumed else "")
        + f". Results: `{study.storage_uri}`",
        "",
    ]
    nodes = placement_rows(study)
    if len(nodes) > 1 or any(r["gpu_ids"] for r in nodes):
        lines += ["| node | trials | GPU ids | moved |", "| --- | --- | --- | --- |"]
        lines += [f"| `{r['node']}` | {r['trials']} | {r['gpu_ids'] or '-'} | {r['moved']} |" for r in nodes]
        lines += [""]
    lines += [png_markdown(png, "learning curves of every trial")]
    return "\n".join(lines)
