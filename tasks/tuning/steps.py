"""Prefect task of the tune stage: runs the study (one pure call) and publishes its artifacts.

While the study runs: a live line in the terminal and the ``tuning-progress`` progress artifact
(trials finished, running, paused, stopped early, best so far), from a Ray Tune callback
(``tasks.tuning.progress``). After it, tables of the Hyperband plan Ray runs, the brackets as they ran (trials per rung,
promoted, stopped, failed), every trial, and the best configuration; the learning curves of every
trial as a PNG. Prefect's (3.8.8, 3.9.1) ``create_image_artifact`` only stores a URL, so the PNG goes in as a
``data:image/png;base64`` URI (``tasks.ui.publish_image``: an image artifact plus a markdown
artifact showing it inline — the UI renders markdown through DOMPurify, which keeps data: URIs on
``<img>``); the same bytes are returned for the flow to store with the run.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from tasks.data.dataset import Splits
from tasks.settings import Settings
from tasks.tuning.plan import ray_hyperband_plan
from tasks.tuning.progress import Reporter, StudyProgress, TerminalLine
from tasks.tuning.report import (
    best_rows,
    bracket_rows,
    learning_curves_png,
    placement_rows,
    plan_rows,
    study_markdown,
    trial_rows,
)
from tasks.tuning.search import StudyResult, apply_best_config, run_study
from tasks.ui import in_prefect_run, publish_image, publish_markdown, publish_table, run_logger

__all__ = ["tune_hyperparameters", "apply_best_config", "publish_study", "ProgressArtifact", "progress_reporter"]


@task(name="tune-hyperparameters", cache_policy=NO_CACHE)
def tune_hyperparameters(splits: Splits, settings: Settings) -> dict[str, Any]:
    """Run (or resume) the configured study on Ray Tune; returns ``best_config`` (the searched
    fields), ``best_metric``, ``study`` (StudyResult as a dict) and ``curves_png``."""
    study = run_study(
        settings.tuning,
        splits,
        seed=settings.seed,
        store=settings.store,
        model=settings.model,
        training=settings.training,
        progress=progress_reporter(TerminalLine(), ProgressArtifact()),
    )
    run_logger().info(
        "tuning study %s: best %s=%.4f with %s (%d trials, %d epochs, %.1f s)",
        study.study_name,
        study.metric,
        study.best_metric,
        study.best_params,
        len(study.trials),
        study.total_epochs,
        study.wall_seconds,
    )
    png = publish_study(study)
    return {
        "best_config": dict(study.best_params),
        "best_metric": study.best_metric,
        "metric": study.metric,
        "study": study.to_dict(),
        "curves_png": png,
    }


class ProgressArtifact:
    """A Prefect progress artifact (``tuning-progress``: percent of trials finished, the live line as
    its description), created on the first report and updated when a trial finishes or every 5 s."""

    def __init__(self, key: str = "tuning-progress", min_interval_s: float = 5.0):
        self.key, self.min_interval_s = key, min_interval_s
        self.artifact_id: UUID | None = None
        self._last: tuple[int, float] = (-1, 0.0)

    def __call__(self, p: StudyProgress) -> None:
        if not in_prefect_run():
            return
        now = time.monotonic()
        if p.finished == self._last[0] and now - self._last[1] < self.min_interval_s:
            return
        self._last = (p.finished, now)
        if self.artifact_id is None:
            created = create_progress_artifact(p.percent, key=self.key, description=p.line())
            # Prefect's async_dispatch returns a coroutine only inside an async task or flow.
            assert isinstance(created, UUID), "the progress artifact is created from sync code"
            self.artifact_id = created
        else:
            update_progress_artifact(self.artifact_id, p.percent, description=p.line())


def progress_reporter(*reporters: Reporter) -> Reporter:
    """One reporter that calls each of ``reporters`` in turn."""

    def report(p: StudyProgress) -> None:
        for r in reporters:
            r(p)

    return report


def publish_study(study: StudyResult) -> bytes:
    """Create the study's Prefect artifacts; returns the learning-curve PNG."""
    if study.scheduler in ("hyperband", "bohb"):
        publish_table(
            "hyperband-plan",
            plan_rows(ray_hyperband_plan(study.max_t, study.eta)),
            f"Bracket plan Ray's HyperBandScheduler runs for R={study.max_t}, eta={study.eta} "
            "(ceil survivors; `driftloop hyperband-plan` compares it with Algorithm 1)",
        )
    publish_table(
        "tuning-brackets",
        bracket_rows(study),
        "Brackets as run: trials per rung, promoted, stopped early, failed, completed",
    )
    publish_table(
        "tuning-trials", trial_rows(study), "Every trial: bracket, status, epochs, metric, node, GPU ids, parameters"
    )
    publish_table("tuning-placement", placement_rows(study), "Trials per Ray node and the GPU ids they were given")
    publish_table("tuning-best-config", best_rows(study), f"Best configuration by {study.metric}")
    png = learning_curves_png(study)
    publish_image("tuning-learning-curves", png, "Validation curve of every trial (stopped trials end early)")
    publish_markdown("tuning-summary", study_markdown(study, png), f"Study {study.study_name}")
    return png
