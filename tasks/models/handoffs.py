"""What the training pipeline's model stages hand each other: small typed values, no Prefect.

``flows.pipeline`` composes the stages; the decisions they need (may the champion's weights start
this run, which numbers the gate compares) live here and in ``tasks.models.gate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.models.config import ModelConfig
from tasks.models.serialize import model_spec, same_architecture
from tasks.models.trained import TrainedModel


@dataclass
class Champion:
    """The registry's champion as the run sees it (all None when there is none yet)."""

    record: dict[str, Any] | None = None
    schema: Any = None  # tasks.data.schema.Schema the champion was trained on
    trained_rows: Any = None  # row ids its lineage trained on (never in the test split)

    @property
    def version(self) -> int | None:
        return self.record["version"] if self.record else None

    @property
    def labels(self) -> list[int] | None:
        return self.schema.labels if self.schema is not None else None


@dataclass
class Evaluation:
    """Candidate and champion on the same test split (champion numbers None when not comparable)."""

    metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None = None
    robust: Any = None  # tasks.adversarial.evaluation.RobustEvaluation with hardening on
    champion_robust: Any = None


@dataclass
class RegisteredModel:
    """A registered candidate: its run, registry version, manifest and stored artifacts."""

    run_id: str
    version: int
    manifest_uri: str
    artifacts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegisteredModel":
        return cls(d["run_id"], d["version"], d["manifest_uri"], dict(d.get("artifacts", {})))


def warm_start_compatible(
    initial: TrainedModel, cfg: ModelConfig, sample_shape: tuple[int, ...], num_classes: int
) -> bool:
    """True when the champion's weights load into the configured architecture for this data
    (standardization statistics aside: a warm start recomputes them)."""
    return same_architecture(initial.spec, model_spec(cfg, sample_shape, num_classes))
