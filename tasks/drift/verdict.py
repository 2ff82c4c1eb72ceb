"""A batch's drift verdict: the detectors' reports, validation's distribution evidence, and the
champion's accuracy on the batch (estimated by CBPE; measured where labels exist).

Pure: no Prefect. ``tasks.drift.steps.judge_batch`` runs it inside the drift check.

* The detectors test the model's outputs (tasks.drift.detectors).
* Distribution evidence (values out of the training range, shifted feature means: the rules of
  ``tasks.data.rules.DISTRIBUTION_RULES``) becomes one more report, detector
  ``data_rules`` (kind ``evidence``), drift when any rule fired and ``drift.evidence_is_drift``.
  A batch whose features were scaled up is then "drift" even if the model's outputs barely moved.
* ``triggers``: whether this verdict should start retraining under ``drift.trigger``: any drift
  (``drift``), or drift with harm (``drift_and_harm``: the accuracy drop, measured or estimated,
  above ``drift.max_estimated_drop``). A reference without CBPE calibration (built by an older
  release, without labels) cannot estimate harm: its drift triggers, as under ``drift``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from tasks.drift.harm import Calibration, HarmEstimate, estimate_harm
from tasks.drift.report import DriftReport

EVIDENCE_DETECTOR = "data_rules"


def evidence_report(
    batch_id: str, evidence: Sequence[Any], stats: dict[str, Any], n: int, is_drift: bool = True
) -> DriftReport:
    """The ``data_rules`` report of a batch from its validation evidence (Violation objects or dicts).

    ``statistic`` is the number of rules that fired (threshold 1); the details list them with
    their messages, counts and the measured ``mean_shift``.
    """
    items = [e if isinstance(e, dict) else e.model_dump(mode="json") for e in evidence]
    rules = [e["rule"] for e in items]
    return DriftReport(
        EVIDENCE_DETECTOR,
        batch_id,
        bool(rules) and is_drift,
        float(len(rules)),
        1.0,
        None,
        0.0,
        n=n,
        kind="evidence",
        details={
            "rules": rules,
            "messages": [e["message"] for e in items],
            "counts": [e["count"] for e in items],
            "mean_shift": stats.get("mean_shift"),
            "counts_as_drift": bool(is_drift),
        },
    )


@dataclass
class BatchVerdict:
    """Everything the drift check records and reports about one checked batch."""

    batch_id: str
    uri: str
    labelled: bool
    reports: list[DriftReport]
    harm: HarmEstimate | None
    trigger: str
    evidence_rules: list[str] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return any(r.drift for r in self.reports)

    @property
    def triggers(self) -> bool:
        """Whether this verdict should start retraining under the trigger policy."""
        if not self.drift:
            return False
        if self.trigger == "drift_and_harm" and self.harm is not None:
            return self.harm.harmful
        return True

    def record(self) -> dict[str, Any]:
        """The check record stored in the drift ledger (JSON)."""
        return {
            "status": "checked",
            "uri": self.uri,
            "labelled": self.labelled,
            "drift": self.drift,
            "triggers": self.triggers,
            "trigger": self.trigger,
            "evidence_rules": self.evidence_rules,
            "harm": self.harm.as_dict() if self.harm else None,
            "reports": [r.to_dict() for r in self.reports],
        }


def judge(
    batch_id: str,
    uri: str,
    reports: Sequence[DriftReport],
    probs: np.ndarray,
    y: np.ndarray | None,
    labelled: bool,
    calibration: Calibration | None,
    trigger: str,
    max_drop: float,
    evidence: DriftReport | None = None,
    agreement: float | None = None,
) -> BatchVerdict:
    """Combine the detector reports, the evidence report and the accuracy estimate (``agreement``
    when given, else CBPE) into the batch's verdict."""
    all_reports = list(reports) + ([evidence] if evidence is not None else [])
    harm = None
    if calibration is not None and len(probs):
        harm = estimate_harm(calibration, probs, batch_id, max_drop, y if labelled else None, agreement=agreement)
    rules = list(evidence.details["rules"]) if evidence is not None else []
    return BatchVerdict(batch_id, uri, labelled, all_reports, harm, trigger, rules)


def harm_line(v: BatchVerdict) -> str:
    """One markdown line on a verdict's estimated (and measured) accuracy."""
    if v.harm is None:
        return f"- {v.batch_id}: no CBPE calibration in the reference"
    h = v.harm
    meas = "-" if h.measured_accuracy is None else f"{h.measured_accuracy:.3f}"
    return (
        f"- {v.batch_id}: drift={'yes' if v.drift else 'no'}, estimated accuracy {h.estimated_accuracy:.3f}, "
        f"measured {meas}, reference {h.reference_accuracy:.3f}, drop {h.drop:+.3f} ({h.basis}, {h.estimator}; "
        f"{'harmful' if h.harmful else 'harmless'} at {h.max_drop:g})"
    )
