"""Prefect task of the tune stage: runs the study (one pure call) and publishes its artifacts.

Artifacts: tables of the Hyperband plan Ray runs, the brackets as they ran (trials per rung,
promoted, stopped, failed), every trial, and the best configuration; the learning curves of every
trial as a PNG. Prefect 3.8.8's ``create_image_artifact`` only stores a URL, so the PNG goes in as a
``data:image/png;base64`` URI (``tasks.ui.publish_image``: an image artifact plus a markdown
artifact showing it inline — the UI renders markdown through DOMPurify, which keeps data: URIs on
``<img>``); the same bytes are returned for the flow to store with the run.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.sources import Splits
from tasks.settings import Settings
from tasks.tuning.plan import ray_hyperband_plan
from tasks.tuning.report import bracket_rows, best_rows, learning_curves_png, plan_rows, study_markdown, trial_rows
from tasks.tuning.search import StudyResult, apply_best_config, run_study
from tasks.ui import publish_image, publish_markdown, publish_table, run_logger

__all__ = ["tune_hyperparameters", "apply_best_config", "publish_study"]


@task(name="tune-hyperparameters", cache_policy=NO_CACHE)
def tune_hyperparameters(splits: Splits, settings: Settings) -> dict[str, Any]:
    """Run (or resume) the configured study on Ray Tune; returns ``best_config`` (the searched
    fields), ``best_metric``, ``study`` (StudyResult as a dict) and ``curves_png``."""
    study = run_study(settings.tuning, splits, seed=settings.seed, store=settings.store,
                      model=settings.model, training=settings.training)
    run_logger().info("tuning study %s: best %s=%.4f with %s (%d trials, %d epochs, %.1f s)",
                          study.study_name, study.metric, study.best_metric, study.best_params,
                          len(study.trials), study.total_epochs, study.wall_seconds)
    png = publish_study(study)
    return {"best_config": dict(study.best_params), "best_metric": study.best_metric, "metric": study.metric,
            "study": study.to_dict(), "curves_png": png}


def publish_study(study: StudyResult) -> bytes:
    """Create the study's Prefect artifacts; returns the learning-curve PNG."""
    if study.scheduler in ("hyperband", "bohb"):
        publish_table("hyperband-plan", plan_rows(ray_hyperband_plan(study.max_t, study.eta)),
                      f"Bracket plan Ray's HyperBandScheduler runs for R={study.max_t}, eta={study.eta} "
                      "(ceil survivors; `driftloop hyperband-plan` compares it with Algorithm 1)")
    publish_table("tuning-brackets", bracket_rows(study),
                  "Brackets as run: trials per rung, promoted, stopped early, failed, completed")
    publish_table("tuning-trials", trial_rows(study), "Every trial: bracket, status, epochs, metric, parameters")
    publish_table("tuning-best-config", best_rows(study), f"Best configuration by {study.metric}")
    png = learning_curves_png(study)
    publish_image("tuning-learning-curves", png, "Validation curve of every trial (stopped trials end early)")
    publish_markdown("tuning-summary", study_markdown(study, png), f"Study {study.study_name}")
    return png
