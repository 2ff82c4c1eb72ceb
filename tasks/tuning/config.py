"""Configuration of the Hyperband search on Ray Tune (owned by tasks/tuning).

The search space is a mapping from a field of ``model`` (arch, width, depth, dropout) or
``training`` (lr, batch_size, weight_decay, optimizer, momentum) to a distribution:
``{"type": "loguniform"|"uniform", "low": a, "high": b}``, ``{"type": "randint", "low": a,
"high": b}`` (b excluded) or ``{"type": "choice", "values": [...]}``. It is checked, with errors
naming the key, before any trial starts (``tasks.tuning.search.validate_tuning``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from tasks.config_base import Section


class TrialResources(Section):
    cpu: float = Field(1.0, gt=0.0)
    # a number (fractions allowed: 0.25 puts four trials on one GPU) or "auto": when the cluster
    # has GPUs at the start of the study, each trial gets an equal share (1/k of a GPU, k the
    # number of trials that run at once), else none.
    gpu: float | Literal["auto"] = "auto"


class TuningConfig(Section):
    enabled: bool = True
    # hyperband: ray.tune HyperBandScheduler (synchronous Hyperband, Li et al. 2018; reproducible)
    # asha: ASHAScheduler (asynchronous successive halving, Li et al. 2020), one bracket
    # bohb: HyperBandForBOHB + TuneBOHB (Falkner et al. 2018); needs hpbandster and ConfigSpace<1 (the dev extra)
    scheduler: Literal["hyperband", "asha", "bohb"] = "hyperband"
    max_t: int = Field(27, ge=1, description="maximum resource R per configuration, in epochs")
    eta: int = Field(3, ge=2, description="reduction factor")
    num_samples: int = Field(
        27,
        ge=1,
        description="configurations sampled (one full Ray band: 49 for R=27, eta=3; see `driftloop hyperband-plan`)",
    )
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
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
    # None: a local Ray started by the task with this machine's CPUs and GPUs (and stopped after).
    # "auto", "HOST:6379" (inside the cluster, e.g. a Ray Job) or "ray://HOST:10001" (Ray Client).
    ray_address: str | None = None
    resources_per_trial: TrialResources = TrialResources()
    max_failures: int = Field(2, ge=0, description="retries of a failing trial, each from its last checkpoint")
    max_concurrent_trials: int | None = Field(None, ge=1)
    # A running trial that reports nothing for this long is stopped and retried from its last
    # checkpoint (a hung worker, an actor Ray calls "temporarily unavailable" for good). None: 10x the
    # slowest epoch seen in the study so far, at least 120 s (900 s before the first epoch is timed).
    trial_stall_s: float | None = Field(
        None, gt=0, description="seconds of silence after which a running trial is stopped and retried (None: adaptive)"
    )
    # Where Tune keeps results and checkpoints, under the artifact store (store.uri).
    storage_subpath: str = Field("tuning", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    # None: a name derived from the study's configuration, seed and data fingerprint, so that
    # running the same study again resumes it (Tuner.restore) instead of starting over.
    study_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    resume: bool = True
    checkpoints_to_keep: int | None = Field(2, ge=1, description="latest checkpoints kept per trial (None: all)")
    # A trial checkpoints where Hyperband may pause it (its rung milestones); with this set, also
    # every k epochs, so that a retry after a crash or a lost node repeats fewer epochs. Each
    # checkpoint costs a copy into the study's storage (an upload with S3).
    checkpoint_every: int | None = Field(
        None, ge=1, description="also checkpoint every k epochs (None: only where Hyperband may pause)"
    )

    @field_validator("storage_subpath")
    @classmethod
    def _inside_the_store(cls, v: str) -> str:
        # The pattern allows dots for names like "v1.2"; a ".." segment would climb out of store.uri.
        if any(part in ("..", ".") for part in v.split("/")) or "//" in v or v.endswith("/"):
            raise ValueError(
                f"{v!r} must be a relative path inside the store: no '.' or '..' segments, no empty segments"
            )
        return v
