"""Configuration of the Hyperband search on Ray Tune (owned by tasks/tuning)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasks.config_base import Section


class TrialResources(Section):
    cpu: float = Field(1.0, gt=0.0)
    # a number (fractions allowed: 0.25 puts four trials on one GPU) or "auto": a share when the cluster has GPUs
    gpu: float | Literal["auto"] = "auto"


class TuningConfig(Section):
    enabled: bool = True
    scheduler: Literal["hyperband", "asha", "bohb"] = "hyperband"
    max_t: int = Field(27, ge=1, description="maximum resource R per configuration, in epochs")
    eta: int = Field(3, ge=2, description="reduction factor")
    num_samples: int = Field(27, ge=1)
    metric: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    # param -> {"type": "loguniform"|"uniform"|"choice"|"randint", ...}
    search_space: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
            "batch_size": {"type": "choice", "values": [32, 64, 128]},
            "width": {"type": "choice", "values": [32, 64, 128]},
            "depth": {"type": "choice", "values": [1, 2, 3]},
            "weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-3},
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.4},
            "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
        }
    )
    ray_address: str | None = None
    resources_per_trial: TrialResources = TrialResources()
    max_failures: int = Field(2, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)
