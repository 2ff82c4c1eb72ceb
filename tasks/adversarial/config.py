"""Configuration of adversarial fine-tuning and robust evaluation (owned by tasks/adversarial).

Every rule a bad value could break is checked here, when the configuration is loaded, so that
``load_settings`` reports it as a :class:`~tasks.errors.ConfigError` naming the key before any
training starts (pydantic's ``ValidationError`` is turned into ``ConfigError`` by
``tasks.settings``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.config_base import Section


class AdversarialConfig(Section):
    enabled: bool = True
    # natural: no adversary (the baseline); pgd: every epoch adversarial with PGD-k (Madry et al.
    # 2017); delayed: natural epochs first, then PGD-k (Gupta et al. 2020); fast: FGSM from a
    # random start with step fast_step_factor * epsilon (Wong et al. 2020).
    mode: Literal["pgd", "delayed", "fast", "natural"] = "delayed"
    norm: Literal["linf", "l2"] = "linf"
    # Epsilons and steps are fractions of each feature's training range (tasks/adversarial/scale.py):
    # images, pixels in [0, 1]: 0.1 = a tenth of the pixel range; a table's column: a tenth of its
    # P1..P99 range (about 0.47 standard deviations for normal data; 20..90 evenly: 6.9 units).
    epsilon: float = Field(
        0.1, description="perturbation budget as a fraction of each feature's training range (P1..P99 for tables)"
    )
    step_size: float = Field(
        0.025, description="PGD step during training, as a fraction of each feature's training range"
    )
    steps: int = Field(7, description="PGD steps per adversarial example during training (the k of PGD-k)")
    restarts: int = Field(1, ge=1, description="PGD random restarts during training")
    epochs: int = Field(10, ge=1)
    switch_fraction: float | None = Field(0.5, description="delayed mode: switch after this share of the budget")
    # delayed mode: the number of natural epochs before the switch (0: adversarial from the start).
    # When set it wins over switch_fraction.
    switch_epoch: int | None = None
    mix_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of each batch made adversarial")
    lr: float = Field(1e-3, gt=0.0)
    # Fine-tuning a trained model trades clean accuracy for robustness. The harden stage keeps the
    # most robust epoch whose natural validation accuracy is at most this far below the model's before
    # fine-tuning (the starting weights always qualify); None: the last epoch whatever it costs.
    max_clean_drop: float | None = Field(
        0.02, ge=0.0, le=1.0, description="most clean validation accuracy fine-tuning may cost (None: no limit)"
    )
    # Batch size of fine-tuning; None: training.batch_size.
    batch_size: int | None = Field(None, ge=1)
    # Fast adversarial training's FGSM step, as a multiple of epsilon (Wong et al. 2020 use 1.25).
    fast_step_factor: float = Field(1.25, gt=0.0)
    # Per-epoch history: natural and robust accuracy on at most this many validation samples.
    history_samples: int = Field(300, ge=1)
    eval_epsilons: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])
    eval_steps: int = Field(10, ge=1)
    eval_restarts: int = Field(1, ge=1)
    # PGD step at evaluation = eval_step_factor * eps / eval_steps (Madry et al.'s 2.5 eps / k rule).
    eval_step_factor: float = Field(2.5, gt=0.0)
    # Robust evaluation uses at most this many test samples (None: all).
    eval_max_samples: int | None = Field(None, ge=1)
    # Sanity checks. Accuracies are compared on the same samples, so no sampling noise enters;
    # what remains is the attack's own randomness, which these tolerances absorb (see evaluation.py).
    monotone_tolerance: float = Field(0.0, ge=0.0, le=1.0)
    strength_tolerance: float = Field(0.0, ge=0.0, le=1.0)
    # At an epsilon covering the whole data range, accuracy must be <= 1/num_classes + chance_margin.
    chance_margin: float = Field(0.1, ge=0.0, le=1.0)
    clean_tolerance: float = Field(0.02, ge=0.0, le=1.0)

    @field_validator("epsilon")
    @classmethod
    def _epsilon(cls, v: float) -> float:
        if not v >= 0.0:  # also rejects NaN
            raise ValueError(f"adversarial.epsilon must be >= 0 (a fraction of the training range), got {v}")
        return v

    @field_validator("step_size")
    @classmethod
    def _step_size(cls, v: float) -> float:
        if not v > 0.0:
            raise ValueError(f"adversarial.step_size must be > 0, got {v}")
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"adversarial.steps must be >= 1 (zero steps is no attack), got {v}")
        return v

    @field_validator("eval_epsilons")
    @classmethod
    def _eval_epsilons(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not e >= 0.0]
        if bad:
            raise ValueError(f"adversarial.eval_epsilons must all be >= 0, got {bad}")
        return sorted(set(float(e) for e in v))

    @field_validator("switch_fraction")
    @classmethod
    def _switch_fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"adversarial.switch_fraction must lie in [0, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _budget(self):
        if self.switch_epoch is not None:
            if self.switch_epoch < 0:
                raise ValueError(f"adversarial.switch_epoch must be >= 0, got {self.switch_epoch}")
            if self.switch_epoch > self.epochs:
                raise ValueError(
                    f"adversarial.switch_epoch={self.switch_epoch} is beyond the budget of "
                    f"adversarial.epochs={self.epochs}"
                )
        if self.mode == "delayed":
            if self.switch_epoch is None and self.switch_fraction is None:
                raise ValueError("adversarial.mode='delayed' needs switch_epoch or switch_fraction")
            if self.switch_epoch_resolved() >= self.epochs:
                raise ValueError(
                    f"adversarial.mode='delayed' switches at epoch {self.switch_epoch_resolved()} of "
                    f"{self.epochs}: no adversarial epoch is left (lower switch_epoch/switch_fraction)"
                )
        if self.mode != "natural" and self.mix_ratio == 0.0:
            raise ValueError("adversarial.mix_ratio=0 makes every batch natural; use mode='natural' instead")
        return self

    def switch_epoch_resolved(self) -> int:
        """Natural epochs before adversarial training starts: ``switch_epoch`` when set, else
        ``round(switch_fraction * epochs)`` in delayed mode; 0 for pgd/fast, ``epochs`` for natural."""
        if self.mode == "natural":
            return self.epochs
        if self.mode != "delayed":
            return 0
        if self.switch_epoch is not None:
            return self.switch_epoch
        return int(round((self.switch_fraction or 0.0) * self.epochs))
