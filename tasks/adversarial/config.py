"""Configuration of adversarial fine-tuning and robust evaluation (owned by tasks/adversarial)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_base import Section


class AdversarialConfig(Section):
    enabled: bool = True
    mode: Literal["pgd", "delayed", "fast", "natural"] = "delayed"
    norm: Literal["linf", "l2"] = "linf"
    epsilon: float = Field(0.1, description="perturbation budget in input units (digits are scaled to [0, 1])")
    step_size: float = Field(0.025)
    steps: int = Field(7)
    restarts: int = Field(1, ge=1)
    epochs: int = Field(10, ge=1)
    switch_fraction: float | None = Field(0.5, description="delayed mode: switch after this share of the budget")
    switch_epoch: int | None = None
    mix_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of each batch made adversarial")
    lr: float = Field(1e-3, gt=0.0)
    eval_epsilons: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])
    eval_steps: int = Field(10, ge=1)
    eval_restarts: int = Field(1, ge=1)
    clean_tolerance: float = Field(0.02, ge=0.0, le=1.0)
