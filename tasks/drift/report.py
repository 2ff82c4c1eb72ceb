"""Drift reports: one per (detector, batch) check, as JSON, a markdown summary and a
p-value-over-time plot (the lecture's figure: p-value per batch with the detections marked)."""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence


@dataclass
class DriftReport:
    """The outcome of one detector on one batch.

    Offline detectors (KS, MMD, LSDD) fill ``p_value`` and compare it with ``threshold`` (drift when
    ``p_value < threshold``; for KS the threshold is the corrected one). Online detectors have no
    p-value: ``statistic`` is the largest test statistic seen in the batch and ``threshold`` the
    ERT-calibrated threshold it is compared with (drift when ``statistic > threshold``).
    """

    detector: str
    batch_id: str
    drift: bool
    statistic: float
    threshold: float
    p_value: float | None = None
    seconds: float = 0.0
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    n: int = 0
    kind: str = "offline"
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("statistic", "threshold", "p_value", "seconds"):
            v = d[k]
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None  # JSON has no NaN/inf
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DriftReport":
        d = dict(d)
        for k in ("statistic", "threshold"):
            if d.get(k) is None:
                d[k] = math.nan
        return cls(**d)

    @property
    def score(self) -> float:
        """The number the event payload carries: the p-value, or statistic/threshold when online."""
        if self.p_value is not None:
            return float(self.p_value)
        return float(self.statistic / self.threshold) if self.threshold else math.nan


def reports_to_json(reports: Iterable[DriftReport]) -> str:
    """A JSON list of reports (how a check's reports are stored)."""
    return json.dumps([r.to_dict() for r in reports], sort_keys=True)


def reports_from_json(text: str | bytes) -> list[DriftReport]:
    return [DriftReport.from_dict(d) for d in json.loads(text)]


def _fmt(v: float | None, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def markdown_summary(reports: Sequence[DriftReport], title: str = "Drift check") -> str:
    """A markdown table of the reports plus one line per detector with its drift count."""
    lines = [f"# {title}", ""]
    if not reports:
        return "\n".join(lines + ["No batches were checked."])
    lines += [
        "| batch | detector | drift | p-value | statistic | threshold | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        lines.append(
            f"| {r.batch_id} | {r.detector} | {'**yes**' if r.drift else 'no'} | {_fmt(r.p_value)} | "
            f"{_fmt(r.statistic)} | {_fmt(r.threshold)} | {r.seconds:.2f} |"
        )
    lines.append("")
    for det in dict.fromkeys(r.detector for r in reports):
        rs = [r for r in reports if r.detector == det]
        flagged = [r.batch_id for r in rs if r.drift]
        lines.append(
            f"- {det}: drift in {len(flagged)} of {len(rs)} batches"
            + (f" ({', '.join(flagged[:10])}{', ...' if len(flagged) > 10 else ''})" if flagged else "")
        )
    return "\n".join(lines)


def pvalue_plot_png(
    reports: Sequence[DriftReport], title: str = "Drift p-values over time", drift_span: tuple[int, int] | None = None
) -> bytes:
    """A PNG of each detector's p-value per batch (log scale, its threshold dashed, detections marked
    with a red step as in the lecture's figure); online detectors, which have no p-value, are drawn
    as statistic / threshold on a second panel (drift above 1). ``drift_span=(start, end)`` shades
    the batches (by position) where drift is known to be present.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch_order = list(dict.fromkeys(r.batch_id for r in reports))
    pos = {b: i for i, b in enumerate(batch_order)}
    detectors = list(dict.fromkeys(r.detector for r in reports))
    offline = [d for d in detectors if any(r.p_value is not None for r in reports if r.detector == d)]
    online = [d for d in detectors if d not in offline]
    n_panels = 1 + (1 if online else 0)
    fig, axes = plt.subplots(n_panels, 1, figsize=(9, 3.2 * n_panels), sharex=True, squeeze=False)
    ax = axes[0][0]
    for d in offline:
        rs = [r for r in reports if r.detector == d and r.p_value is not None]
        xs = [pos[r.batch_id] for r in rs]
        ys = [max(float(r.p_value or 0.0), 1e-6) for r in rs]
        (line,) = ax.plot(xs, ys, marker=".", lw=1, label=f"{d} p-value")
        if rs:
            ax.axhline(max(rs[-1].threshold, 1e-6), color=line.get_color(), ls="--", lw=0.8)
        hits = [(x, y) for x, y, r in zip(xs, ys, rs) if r.drift]
        if hits:
            ax.scatter(*zip(*hits), color="red", zorder=3, s=18)
    ax.set_yscale("log")
    ax.set_ylabel("p-value")
    ax.set_title(title)
    flags = [int(any(r.drift for r in reports if r.batch_id == b)) for b in batch_order]
    ax2 = ax.twinx()
    ax2.step(range(len(batch_order)), flags, where="mid", color="red", lw=1, alpha=0.6, label="drift verdict")
    ax2.set_ylim(-0.05, 1.5)
    ax2.set_yticks([0, 1])
    ax2.set_ylabel("drift")
    if online:
        axo = axes[1][0]
        for d in online:
            rs = [r for r in reports if r.detector == d]
            axo.plot([pos[r.batch_id] for r in rs], [r.score for r in rs], marker=".", lw=1, label=d)
        axo.axhline(1.0, color="k", ls="--", lw=0.8)
        axo.set_ylabel("statistic / threshold")
        axo.legend(loc="upper left", fontsize=8)
    for row in axes:
        if drift_span is not None:
            row[0].axvspan(drift_span[0] - 0.5, drift_span[1] - 0.5, color="orange", alpha=0.15)
    if offline:
        ax.legend(loc="lower left", fontsize=8)
    axes[-1][0].set_xlabel("batch")
    if 0 < len(batch_order) <= 12:
        axes[-1][0].set_xticks(range(len(batch_order)), batch_order, rotation=30, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
