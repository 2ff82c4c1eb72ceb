"""The outcome of validating one batch: :class:`ValidationReport` and its :class:`Violation` rows.

A report is plain JSON (``to_json`` / ``from_json``) so it can be stored beside a quarantined
batch and read back without this code; ``to_text`` and :func:`violation_details` are what the
command line prints. The rules that fill it are in :mod:`tasks.data.rules`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.errors import DataError


class Violation(BaseModel):
    """One violated rule: how many cells/rows/columns offend and up to ``max_examples`` of them."""

    model_config = ConfigDict(extra="forbid")

    rule: str
    message: str
    count: int
    examples: list[dict[str, Any]] = Field(default_factory=list)


class ValidationReport(BaseModel):
    """The outcome of validating one batch; ``passed`` is True exactly when nothing was violated."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    source: str
    rows: int
    passed: bool
    violations: list[Violation] = Field(default_factory=list)
    rules_checked: list[str] = Field(default_factory=list)
    # Measured values behind the statistical rules (mean_shift, duplicate_fraction, ...).
    stats: dict[str, Any] = Field(default_factory=dict)
    schema_fingerprint: str | None = None
    checked_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # Filled in by :func:`quarantine` in the copy it stores: where the batch went.
    quarantine: dict[str, Any] | None = None
    # Distribution findings kept as drift evidence (``distribution="evidence"``): they do not fail.
    evidence: list[Violation] = Field(default_factory=list)
    # False for a batch without labels accepted with ``labels="optional"``.
    labelled: bool = True

    @property
    def rules(self) -> list[str]:
        """Names of the violated rules, in the order they were found."""
        return [v.rule for v in self.violations]

    def get(self, rule: str) -> Violation | None:
        return next((v for v in self.violations if v.rule == rule), None)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ValidationReport":
        try:
            return cls.model_validate_json(text)
        except Exception as e:
            raise DataError(f"not a valid driftloop validation report: {e}") from e

    def to_text(self) -> str:
        """A human-readable summary for the command line."""
        head = "PASSED" if self.passed else f"FAILED ({len(self.violations)} rule(s) violated)"
        lines = [f"batch {self.batch_id} from {self.source}: {self.rows} rows: {head}"]
        for v in self.violations:
            lines.append(f"  [{v.rule}] {v.message} (count {v.count})")
            for ex in v.examples:
                lines.append("      " + ", ".join(f"{k}={short_value(val)}" for k, val in ex.items()))
        for v in self.evidence:
            lines.append(f"  [{v.rule}] (drift evidence) {v.message} (count {v.count})")
        if not self.labelled:
            lines.append("  unlabelled batch: label rules not applied")
        if self.stats:
            lines.append("  stats: " + ", ".join(f"{k}={short_value(v)}" for k, v in self.stats.items()))
        if self.quarantine:
            lines.append(f"  quarantined at {self.quarantine.get('uri')}")
        return "\n".join(lines)


def short_value(v: Any) -> str:
    """A value as at most 60 characters (floats to 4 significant digits), for one-line summaries."""
    if isinstance(v, float):
        return f"{v:.4g}"
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def jsonable(v: Any) -> Any:
    """Example values as JSON-safe Python values (NaN/inf as strings, numpy scalars unwrapped)."""
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return repr(bytes(v[:40]))
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


def read_report(batch_id: str, source: str, rule: str, message: str) -> ValidationReport:
    """A failed report for a batch that could not be read at all (``missing_file``, ``unreadable_file``)."""
    return ValidationReport(
        batch_id=batch_id,
        source=source,
        rows=0,
        passed=False,
        violations=[Violation(rule=rule, message=message, count=1, examples=[{"source": source}])],
        rules_checked=[rule],
    )


def violation_details(report: ValidationReport, per_rule: int = 3) -> list[str]:
    """One line per violated rule naming the features and values that broke it (from the
    report's examples), e.g. ``out_of_range: row 3 feature 'age' = 200 (allowed 18..162)``."""
    lines = []
    for v in report.violations:
        parts = []
        for ex in v.examples[:per_rule]:
            if "feature" in ex and "value" in ex:
                where = f"row {ex['row']} " if "row" in ex else ""
                allowed = (
                    f" (allowed {short_value(ex['allowed_min'])}..{short_value(ex['allowed_max'])})"
                    if "allowed_min" in ex
                    else ""
                )
                parts.append(f"{where}feature {ex['feature']!r} = {short_value(ex['value'])}{allowed}")
            elif "feature" in ex and "shift" in ex:
                parts.append(
                    f"feature {ex['feature']!r} mean {short_value(ex['batch_mean'])} vs training "
                    f"{short_value(ex['train_mean'])} ({short_value(ex['shift'])} std)"
                )
            elif ex:
                parts.append(", ".join(f"{k}={short_value(val)}" for k, val in ex.items()))
        more = f" and {v.count - len(parts)} more" if v.count > len(parts) and parts else ""
        lines.append(f"{v.rule}: {'; '.join(parts) or v.message}{more}")
    return lines
