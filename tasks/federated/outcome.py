"""What the federated stage hands on: the global model and the numbers the manifest records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FederatedOutcome:
    run_id: str
    metrics: dict[str, Any]
    model_spec: dict[str, Any]
    weights: bytes
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FederatedOutcome":
        """From the dict ``tasks.federated.steps.federate`` returns."""
        return cls(d["run_id"], d["metrics"], d["model_spec"], d["weights"], d["rounds"])

    def summary(self) -> dict[str, Any]:
        """The part stored in the candidate's manifest (``extra.federated``)."""
        return {"run_id": self.run_id, "metrics": self.metrics, "rounds": self.rounds}
