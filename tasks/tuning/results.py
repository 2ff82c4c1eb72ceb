"""What a study returns: one :class:`TrialRecord` per trial and the :class:`StudyResult`; the rung
milestones a report needs to lay trials out by bracket. Pure (no prefect, no Ray)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.errors import DriftloopError
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.tuning.plan import ray_rung_milestones


@dataclass
class TrialRecord:
    """One trial as it ran: its config, per-epoch curves, how far it got and why it ended.

    ``status``: ``completed`` (reached max_t), ``stopped`` (stopped early by the scheduler),
    ``error``, or ``unfinished`` (the study was interrupted before the trial ended). ``band``/``bracket`` are Ray's
    Hyperband band index and bracket s (None for ASHA;
    with hyperband a trial retried after a failure keeps its bracket; ASHA/BOHB place it again). ``resumes`` counts
    starts from a checkpoint (Hyperband pausing and resuming, or a
    retry); ``failures`` the errors Tune retried (``FailureConfig``) or gave up on.
    ``epochs_this_session`` counts the epochs trained by this ``run_study`` call (0 for a trial
    that had finished before a resume). ``node_id``/``gpu_ids``: where its last epoch ran.
    """

    trial_id: str
    config: dict[str, Any]
    status: str
    epochs: int
    val_accuracy: list[float]
    val_loss: list[float]
    train_seconds: float
    band: int | None = None
    bracket: int | None = None
    resumes: int = 0
    failures: int = 0
    epochs_this_session: int = 0
    error: str | None = None
    # Where the trial's last epoch ran: the Ray node id and the GPU ids Ray gave it ("" for none).
    node_id: str | None = None
    gpu_ids: str | None = None
    nodes: list[str] = field(default_factory=list)  # every node it trained on (more than one after a lost node)

    def curve(self, metric: str) -> list[float]:
        return self.val_accuracy if metric == "val_accuracy" else self.val_loss


class StudyInterrupted(DriftloopError):
    """The study stopped before every trial ended (Ctrl+C / SIGUSR1); running the same study
    again resumes it. ``partial`` holds what had been reached (a :class:`StudyResult`)."""

    def __init__(self, message: str, partial: "StudyResult"):
        super().__init__(message)
        self.partial = partial


@dataclass
class StudyResult:
    """What a study returns. ``best_params`` holds the searched fields; ``best_model`` and
    ``best_training`` are the full configurations with them applied (what the next stage uses).
    ``best_metric`` is the best value of ``metric`` seen at any epoch of any trial (Hyperband
    returns "the configuration with the smallest intermediate loss seen so far"), reached at
    ``best_epoch`` of ``best_trial_id``."""

    study_name: str
    storage_uri: str
    scheduler: str
    metric: str
    mode: str
    max_t: int
    eta: int
    best_params: dict[str, Any]
    best_model: dict[str, Any]
    best_training: dict[str, Any]
    best_metric: float
    best_epoch: int
    best_trial_id: str
    trials: list[TrialRecord]
    total_epochs: int
    epochs_this_session: int
    wall_seconds: float
    train_seconds: float
    ray_start_seconds: float
    resumed: bool
    resources_per_trial: dict[str, float]
    finished: bool = True
    plan: dict = field(default_factory=dict)
    # (trial id, seconds silent) of each trial the stall guard stopped in this session
    stalled: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def best_configs(self) -> tuple[ModelConfig, TrainingConfig]:
        return ModelConfig(**self.best_model), TrainingConfig(**self.best_training)


def asha_milestones(max_t: int, eta: int, grace_period: int = 1) -> list[int]:
    """The rungs (cumulative epochs) of Ray's one-bracket ASHAScheduler: grace * eta^k below max_t, then max_t."""
    out, r = [], grace_period
    while r < max_t:
        out.append(r)
        r *= eta
    return out + [max_t]


def rung_milestones(scheduler: str, max_t: int, eta: int, bracket: int | None) -> list[int]:
    """The epochs at which a trial of ``bracket`` is compared (Hyperband/BOHB) or ASHA's rungs."""
    if scheduler in ("hyperband", "bohb") and bracket is not None:
        return ray_rung_milestones(max_t, eta, bracket)
    return asha_milestones(max_t, eta)
