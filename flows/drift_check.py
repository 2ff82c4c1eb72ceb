"""The scheduled drift check: new batches -> validate -> detect -> report -> emit a drift event.

Reads batch files from ``drift.batches_uri`` (a local directory or an S3 prefix), skips batches
already checked, validates each against the champion's schema (a bad batch is quarantined and gets
no verdict), runs the configured detectors against the champion's stored reference, records every
report, and on drift emits ``driftloop.drift.detected`` with a deterministic event id per episode.
"""

from __future__ import annotations

from prefect import flow

from tasks.data import steps as data_steps
from tasks.drift import steps as drift_steps
from tasks.errors import ValidationFailed
from tasks.models import steps as model_steps
from tasks.settings import Settings, load_settings
from tasks.ui import publish_markdown, run_logger


@flow(name="drift-check", log_prints=True)
def drift_check(config: Settings | None = None) -> dict:
    """Check every new batch for drift against the champion; emit one event per drifting check."""
    settings = config if config is not None else load_settings()
    log = run_logger()
    name = settings.registry.model_name

    champion = model_steps.get_champion(settings)
    if champion is None:
        return _skip(f"no champion for model {name!r} yet: run the training flow first")
    reference = drift_steps.load_reference(settings, champion)
    if reference is None:
        return _skip(f"champion version {champion['version']} has no drift reference; retrain or re-promote it")
    schema = model_steps.champion_schema(settings, champion)
    model = model_steps.load_champion_model(settings, champion).module()

    validation = settings.data.validation.model_copy(update={"check_shift": settings.drift.validate_shift})
    batches = drift_steps.new_batches(settings)
    log.info("%d new batch(es) under %s", len(batches), settings.drift.batches_uri)
    checked, quarantined, reports = [], [], []
    for uri in batches:
        batch_id = drift_steps.batch_id_of(uri)
        try:
            batch = data_steps.validate_or_quarantine(uri, schema, validation, settings.store,
                                                      batch_id=batch_id, label_column=settings.data.label_column)
        except ValidationFailed as e:
            drift_steps.record_check(settings, batch_id, {"status": "quarantined", "uri": uri,
                                                          "rules": e.report.rules if e.report else [],
                                                          "quarantine_uri": e.quarantine_uri,
                                                          "model_version": champion["version"]})
            quarantined.append(batch_id)
            continue
        batch_reports = drift_steps.detect_drift(reference, batch.dataset.x, model, cfg=settings.drift,
                                                 batch_id=batch_id)
        if drift_steps.record_check(settings, batch_id, {"status": "checked", "uri": uri,
                                                         "model_version": champion["version"],
                                                         "reports": [r.to_dict() for r in batch_reports]}):
            checked.append(batch_id)
            reports.extend(batch_reports)
    drift_steps.publish_history(settings)

    event = None
    drifted = sorted({r.batch_id for r in reports if r.drift})
    if drifted:
        episode = drift_steps.update_episode(settings, champion["version"], drifted)
        event = drift_steps.emit_drift_event(name, champion["version"], [r for r in reports if r.drift],
                                             episode["episode_id"])
        log.warning("drift in %s (episode %s): event %s", drifted, episode["episode_id"], event and event["event_id"])
    summary = (f"# Drift check of {name} v{champion['version']}\n\n* new batches: {len(batches)}\n"
               f"* checked: {len(checked)}\n* quarantined (no verdict): {quarantined or 'none'}\n"
               f"* drift: {drifted or 'none'}\n* event: {event['event_id'] if event else 'none'}\n")
    publish_markdown("drift-check-summary", summary, "What this drift check found")
    return {"status": "drift" if drifted else "ok", "checked": checked, "quarantined": quarantined,
            "drifted": drifted, "event": event, "model_version": champion["version"], "summary": summary}


def _skip(reason: str) -> dict:
    run_logger().warning("drift check skipped: %s", reason)
    publish_markdown("drift-check-summary", f"# Drift check skipped\n\n{reason}\n", "Why no check ran")
    return {"status": "skipped", "reason": reason, "checked": [], "quarantined": [], "drifted": [], "event": None,
            "summary": f"drift check skipped: {reason}"}


if __name__ == "__main__":
    print(drift_check(load_settings())["summary"])
