"""Event-triggered retraining: the drifted batches plus the training data -> the training pipeline,
warm-started from the champion -> the gate promotes the candidate or keeps the champion.

Labelled drifted batches are trained on as they are. When drifted batches have no labels (the
usual case in production), the run does not train on guesses: it pauses with Prefect's interactive
input (a form in the UI for labelled batch URIs, or "skip") and resumes when a user answers, or by
itself when a labels file ``<batch file>.labels.json`` is beside every unlabelled batch
(tasks/drift/labels.py); after ``drift.labels_timeout_seconds`` it ends as "awaiting-labels" and
trains nothing. One run per drift episode: the first run for an episode claims it in the store
before any pause, later deliveries for the same episode (also while it waits) return without
training (the deployment also has a concurrency limit of 1).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import PipelineInputs, run_pipeline
from tasks.drift import steps as drift_steps
from tasks.preflight import preflight
from tasks.settings import Settings, load_settings
from tasks.ui import run_logger


@flow(name="retraining", log_prints=True)
def retraining(
    config: Settings | None = None,
    event_id: str | None = None,
    episode_id: str | None = None,
    batch_ids: list[str] | None = None,
    detector: str | None = None,
    model_version: int | None = None,
) -> dict:
    """Retrain on the training data plus the drifted batches; promote or keep the champion."""
    settings = config if config is not None else load_settings()
    # Before claiming the episode: a run that cannot work must not use up the episode's one retraining.
    preflight(settings)
    log = run_logger()
    # Saved with the claim, the outcome and the model's manifest (a JSON record).
    trigger: dict[str, Any] = {
        "kind": "drift-event" if event_id else "manual",
        "event_id": event_id,
        "episode_id": episode_id,
        "batch_ids": batch_ids or [],
        "detector": detector,
        "model_version": model_version,
    }
    claim_key = episode_id or event_id
    if claim_key is None:
        # A manual trigger within an open drift episode's cooldown joins that episode, so the
        # episode still trains once (pass an episode_id of your own to force a separate run).
        episode = drift_steps.open_episode(settings)
        if episode is not None:
            claim_key = trigger["episode_id"] = episode["episode_id"]
            batch_ids = trigger["batch_ids"] = batch_ids or episode["batch_ids"]
    if claim_key and not drift_steps.claim_retraining(settings, claim_key, trigger):
        reason = f"episode {claim_key} already has a retraining run"
        log.info("skipping: %s", reason)
        return {"status": "duplicate", "reason": reason, "summary": f"retraining skipped: {reason}"}
    refs = drift_steps.resolve_batches(settings, batch_ids or [])
    uris = [r.uri for r in refs if r.labelled]
    unlabelled = [r for r in refs if not r.labelled]
    if unlabelled:
        # No training on guesses: pause for labels (a form in the UI, or labels files beside the
        # batches), within this run, so the episode's claim above still covers it.
        log.info("waiting for labels of %s", [r.batch_id for r in unlabelled])
        got = drift_steps.wait_for_labels(settings, unlabelled, claim_key or "manual")
        trigger["labels"] = {"status": got.status, "resumed_by": got.resumed_by, "uris": got.uris}
        if got.status != "labelled":
            status = "awaiting-labels" if got.status == "timeout" else "skipped-no-labels"
            if claim_key:
                drift_steps.record_outcome(settings, claim_key, {"status": status, "trigger": trigger})
            reason = (
                f"no labels for {[r.batch_id for r in unlabelled]} within drift.labels_timeout_seconds="
                f"{settings.drift.labels_timeout_seconds}"
                if status == "awaiting-labels"
                else "skipped at the labels form"
            )
            log.warning("trained nothing: %s", reason)
            return {"status": status, "reason": reason, "summary": f"retraining {status}: {reason}"}
        uris += got.uris
    result = run_pipeline(settings, PipelineInputs(trigger=trigger, extra_batches=uris, warm_start=True))
    result["status"] = "promoted" if result["promoted"] else "kept-champion"
    if claim_key:
        drift_steps.record_outcome(settings, claim_key, {"status": result["status"], "version": result.get("version")})
    return result


if __name__ == "__main__":
    print(retraining(load_settings())["summary"])
