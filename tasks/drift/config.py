"""Configuration of drift detection (owned by tasks/drift)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_base import Section


class DriftConfig(Section):
    detectors: list[Literal["ks_softmax", "mmd_embedding", "lsdd", "cvm_online", "mmd_online"]] = Field(
        default_factory=lambda: ["ks_softmax"]
    )
    p_val: float = Field(0.05, gt=0.0, lt=1.0)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    reference_size: int = Field(500, ge=10)
    batches_uri: str = ".driftloop/batches"
    schedule_cron: str = "*/15 * * * *"
    cooldown_seconds: float = Field(600.0, ge=0.0)
    ert: int = Field(200, ge=10, description="online detectors: expected run time in batches")
    window_size: int = Field(50, ge=2)
