"""Rules a candidate must pass before any comparison with the champion: a model that cannot be
right is never promoted, however good its test accuracy looks.

A training file whose labels were all one class trained a "model" with test accuracy 1.0 that
replaced a real champion; its schema then refused every good batch. So, before the accuracy or
robustness gate may promote, each of these must hold (each reported with its numbers):

1. ``at_least_two_classes``: the training split holds at least two classes.
2. ``keeps_champion_classes``: the candidate knows every class the champion knows, unless the
   dropped classes are absent from a declared label set (``data.classes``: the config says the label
   set changed).
3. ``enough_training_rows``: at least ``registry.min_train_rows`` training rows.
4. ``reliable_evaluation``: the test metrics are finite, the test split has at least
   ``registry.min_test_rows`` rows and two classes (an accuracy over a handful of rows, or over one
   class, says nothing).

The one decision type both comparisons return (the accuracy gate here, the robustness gate in
``tasks.adversarial.gate``) is :class:`GateDecision`; :func:`apply_sanity` adds this verdict to it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence


@dataclass
class GateRule:
    name: str
    passed: bool
    detail: str


# The sanity rules are gate rules (same name, passed, detail).
SanityRule = GateRule


@dataclass
class CandidateFacts:
    """What the rules look at, gathered by the pipeline from the splits, metrics and champion schema."""

    train_rows: int
    train_labels: list[int]
    test_rows: int
    test_labels: list[int]
    metrics: Mapping[str, Any]
    champion_labels: list[int] | None = None
    declared_classes: list[int] | None = None


@dataclass
class SanityVerdict:
    passed: bool
    rules: list[SanityRule] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(f"{r.name}: {r.detail}" for r in self.rules if not r.passed)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rules": [asdict(r) for r in self.rules]}


@dataclass
class GateDecision:
    """May the candidate replace the champion: the verdict of the accuracy or the robustness gate,
    with the sanity verdict once :func:`apply_sanity` added it.

    ``candidate``, ``champion``, ``clean_tolerance`` and ``rules`` are the numbers a comparison of
    robust evaluations looked at; the accuracy gate has only its reason (``candidate`` is None).
    """

    promote: bool
    reason: str
    candidate: dict[str, Any] | None = None
    champion: dict[str, Any] | None = None
    clean_tolerance: float | None = None
    rules: list[GateRule] = field(default_factory=list)
    sanity: SanityVerdict | None = None

    def as_dict(self) -> dict[str, Any]:
        """The decision as stored in the manifest and returned by the flows."""
        out: dict[str, Any] = {"promote": self.promote, "reason": self.reason}
        if self.candidate is not None:
            out.update(
                candidate=self.candidate,
                champion=self.champion,
                clean_tolerance=self.clean_tolerance,
                rules=[asdict(r) for r in self.rules],
            )
        if self.sanity is not None:
            out["sanity"] = self.sanity.as_dict()
        return out


def accuracy_gate(
    metrics: Mapping[str, Any], champion_metrics: Mapping[str, Any] | None, tolerance: float
) -> GateDecision:
    """Promote when there is no champion, or the candidate's test accuracy >= champion's - tolerance."""
    if champion_metrics is None:
        return GateDecision(True, "no champion yet (or not comparable): the first model becomes champion")
    c, ch = metrics["test_accuracy"], champion_metrics["test_accuracy"]
    if c >= ch - tolerance:
        return GateDecision(True, f"test accuracy {c:.4f} >= champion {ch:.4f} - tolerance {tolerance}")
    return GateDecision(False, f"test accuracy {c:.4f} < champion {ch:.4f} - tolerance {tolerance}")


def sanity_rules(facts: CandidateFacts, min_train_rows: int, min_test_rows: int) -> SanityVerdict:
    """Check a candidate against the rules of the module docstring."""
    rules = [
        SanityRule(
            "at_least_two_classes",
            len(facts.train_labels) >= 2,
            f"training labels {facts.train_labels[:20]} ({len(facts.train_labels)} classes)",
        )
    ]
    if facts.champion_labels is not None:
        dropped = sorted(set(facts.champion_labels) - set(facts.train_labels))
        declared_gone = facts.declared_classes is not None and not set(dropped) & set(facts.declared_classes)
        ok = not dropped or declared_gone
        detail = (
            "candidate knows every champion class"
            if not dropped
            else f"candidate drops champion classes {dropped}"
            + (
                " (data.classes declares them gone)"
                if declared_gone
                else "; if the label set really changed, declare it with data.classes"
            )
        )
        rules.append(SanityRule("keeps_champion_classes", ok, detail))
    rules.append(
        SanityRule(
            "enough_training_rows",
            facts.train_rows >= min_train_rows,
            f"{facts.train_rows} training rows (registry.min_train_rows={min_train_rows})",
        )
    )
    bad = [
        k
        for k, v in facts.metrics.items()
        if k.startswith("test_") and isinstance(v, (int, float)) and not math.isfinite(v)
    ]
    problems = (
        ([f"non-finite {bad}"] if bad else [])
        + (
            [f"{facts.test_rows} test rows < registry.min_test_rows={min_test_rows}"]
            if facts.test_rows < min_test_rows
            else []
        )
        + ([f"test labels {facts.test_labels} hold fewer than two classes"] if len(facts.test_labels) < 2 else [])
    )
    rules.append(
        SanityRule(
            "reliable_evaluation",
            not problems,
            "; ".join(problems) or f"{facts.test_rows} test rows over {len(facts.test_labels)} classes",
        )
    )
    return SanityVerdict(all(r.passed for r in rules), rules)


def apply_sanity(decision: GateDecision, verdict: SanityVerdict) -> GateDecision:
    """The gate's decision with the sanity verdict: refused (whatever the comparison said) when a rule fails."""
    if verdict.passed:
        return replace(decision, sanity=verdict)
    return replace(
        decision, sanity=verdict, promote=False, reason=f"refused, the candidate cannot be right: {verdict.reason}"
    )


def labels_of(*ys: Sequence[int]) -> list[int]:
    return sorted({int(v) for y in ys for v in y})


def candidate_facts(
    splits, metrics: Mapping[str, Any], champion_labels: Sequence[int] | None, declared_classes: Sequence[int] | None
) -> CandidateFacts:
    """The facts of a candidate trained on ``splits`` (a :class:`tasks.data.dataset.Splits`)."""
    return CandidateFacts(
        train_rows=len(splits.train),
        train_labels=labels_of(splits.train.y),
        test_rows=len(splits.test),
        test_labels=labels_of(splits.test.y),
        metrics=dict(metrics),
        champion_labels=None if champion_labels is None else [int(c) for c in champion_labels],
        declared_classes=None if declared_classes is None else [int(c) for c in declared_classes],
    )
