"""The robustness gate: may a candidate model replace the champion?

Rules, all of which must hold (each reported with its numbers):

1. ``reliable``: the candidate's robust evaluation passed every sanity check. An unreliable
   evaluation may be gradient masking, whose robust accuracy means nothing.
2. ``comparable``: both were evaluated at the same epsilon, norm, attack steps and restarts
   (otherwise the numbers cannot be compared and the gate raises ``ValueError``: re-evaluate the
   champion with the candidate's settings, on the same test split).
3. ``clean_within_tolerance``: candidate clean accuracy >= champion clean accuracy - ``clean_tolerance``.
4. ``robust_not_lower``: candidate robust accuracy >= champion robust accuracy.

With no champion, a reliable candidate is promoted. If the champion's own evaluation is unreliable
its robust accuracy cannot be trusted, so rule 4 is waived (and says so): otherwise a masked
champion's inflated number would block every honest successor.
"""

from __future__ import annotations

from typing import Any, Mapping

from tasks.adversarial.evaluation import RobustEvaluation
from tasks.models.gate import GateDecision, GateRule

__all__ = ["GateDecision", "GateRule", "robustness_gate"]

_COMPARED = ("epsilon", "norm", "steps", "restarts")


def _numbers(ev: RobustEvaluation | Mapping[str, Any], who: str) -> dict[str, Any]:
    d = ev.summary() if isinstance(ev, RobustEvaluation) else dict(ev)
    missing = [k for k in ("clean_accuracy", "robust_accuracy", "reliable", *_COMPARED) if k not in d]
    if missing:
        raise ValueError(f"robustness gate: the {who}'s numbers lack {missing} (pass RobustEvaluation.summary())")
    return d


def robustness_gate(
    candidate: RobustEvaluation | Mapping[str, Any],
    champion: RobustEvaluation | Mapping[str, Any] | None,
    clean_tolerance: float,
) -> GateDecision:
    """Decide whether ``candidate`` becomes champion (rules in the module docstring).

    Both arguments are a :class:`RobustEvaluation` or its ``summary()`` dict; ``champion`` is None
    when the registry has no champion yet.
    """
    if not 0.0 <= clean_tolerance <= 1.0:
        raise ValueError(f"robustness gate: clean_tolerance must lie in [0, 1], got {clean_tolerance}")
    cand = _numbers(candidate, "candidate")
    champ = None if champion is None else _numbers(champion, "champion")
    rules = [
        GateRule(
            "reliable",
            bool(cand["reliable"]),
            "candidate's evaluation passed every sanity check"
            if cand["reliable"]
            else f"candidate's evaluation failed {cand.get('failed_checks') or 'a sanity check'} "
            "(possible gradient masking)",
        )
    ]
    if champ is not None:
        diff = {k: (cand[k], champ[k]) for k in _COMPARED if cand[k] != champ[k]}
        if diff:
            raise ValueError(
                "robustness gate: candidate and champion were evaluated differently "
                + ", ".join(f"{k}: {a} vs {b}" for k, (a, b) in diff.items())
                + "; re-evaluate the champion with the candidate's settings"
            )
        floor = champ["clean_accuracy"] - clean_tolerance
        rules.append(
            GateRule(
                "clean_within_tolerance",
                cand["clean_accuracy"] >= floor,
                f"candidate clean {cand['clean_accuracy']:.4f} vs champion {champ['clean_accuracy']:.4f} "
                f"- tolerance {clean_tolerance:g} = {floor:.4f}",
            )
        )
        if champ["reliable"]:
            rules.append(
                GateRule(
                    "robust_not_lower",
                    cand["robust_accuracy"] >= champ["robust_accuracy"],
                    f"candidate robust {cand['robust_accuracy']:.4f} vs champion {champ['robust_accuracy']:.4f} "
                    f"at {cand['norm']} epsilon {cand['epsilon']:g}",
                )
            )
        else:
            rules.append(
                GateRule(
                    "robust_not_lower",
                    True,
                    f"waived: the champion's evaluation is unreliable ({champ.get('failed_checks')}), its robust "
                    f"accuracy {champ['robust_accuracy']:.4f} cannot be trusted",
                )
            )
    promote = all(r.passed for r in rules)
    if promote:
        reason = (
            "no champion yet and the candidate's evaluation is reliable"
            if champ is None
            else "candidate is reliable, its clean accuracy is within tolerance and its robust accuracy is not lower"
        )
    else:
        reason = "refused: " + "; ".join(f"{r.name}: {r.detail}" for r in rules if not r.passed)
    return GateDecision(promote, reason, cand, champ, clean_tolerance, rules)
