"""The scheduled drift check: new batches -> validate -> detect -> report -> emit a drift event.

Reads batch files from ``drift.batches_uri`` (a local directory or an S3 prefix; one bad file
never breaks the check: tasks/drift/discovery.py), skips batches already checked (same key, same
content), validates each against the champion's schema, labelled or not (an integrity violation
quarantines the batch, which gets no verdict; distribution findings are drift evidence), runs the
configured detectors against the champion's stored reference, estimates the champion's accuracy
(CBPE; measured where labels exist), records every verdict, and emits ``driftloop.drift.detected``
(with a deterministic event id per episode) for the verdicts that trigger under ``drift.trigger``,
and ``driftloop.data.quarantined`` when batches were quarantined.

With ``drift.source = "federation"`` (or ``"both"``) the check also asks the federation at
``federated.superlink_address``: each client runs the champion's detectors on its own new data and
replies p-values and verdicts only; a drifting client is recorded, reported (naming the client and
its node), put in the episode and emitted exactly like a drifting batch (tasks/federated/drift_verdicts.py).

Status: ``ok``, ``drift``, ``quarantined`` or ``drift-and-quarantined``; ``driftloop run
drift-check`` exits 3 when any batch was quarantined (flows/cli/run.py).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.data import steps as data_steps
from tasks.drift import steps as drift_steps
from tasks.drift.verdict import harm_line
from tasks.errors import ValidationFailed
from tasks.federated import drift_verdicts as fed_verdicts
from tasks.federated import steps as fed_steps
from tasks.federated.client_drift import ClientDrift
from tasks.models import steps as model_steps
from tasks.settings import Settings, load_settings
from tasks.ui import publish_markdown, run_logger


@flow(name="drift-check", log_prints=True)
def drift_check(config: Settings | None = None) -> dict:
    """Check every new batch for drift against the champion; emit one event per drifting check."""
    settings = config if config is not None else load_settings()
    log = run_logger()
    name = settings.registry.model_name
    assert name is not None, "Settings derives registry.model_name from data.source"

    champion = model_steps.get_champion(settings)
    if champion is None:
        return _skip(f"no champion for model {name!r} yet: run the training flow first")
    reference = drift_steps.load_reference(settings, champion)
    if reference is None:
        return _skip(f"champion version {champion['version']} has no drift reference; retrain or re-promote it")
    schema = model_steps.champion_schema(settings, champion)
    trained = model_steps.load_champion_model(settings, champion)
    model = trained.module()

    validation = settings.data.validation.model_copy(update={"check_shift": settings.drift.validate_shift})
    source = settings.drift.source
    files = drift_steps.list_batches(settings) if source in ("batches", "both") else []
    done = drift_steps.checked_ids(settings)
    checked, quarantined, verdicts, too_small, n_new = [], [], [], [], 0
    for f in files:
        found = drift_steps.read_batch(settings, f)
        if found.batch_id in done:
            continue
        n_new += 1
        if found.refusal is not None:
            # Refused by discovery (link, FIFO/device, too large, bad name): quarantined on its own.
            q_uri = drift_steps.quarantine_refused(settings, found)
            entry: dict[str, Any] = {
                "batch_id": found.batch_id,
                "uri": found.uri,
                "rules": [found.refusal[0]],
                "message": found.refusal[1],
                "quarantine_uri": q_uri,
            }
        else:
            try:
                # Integrity violations quarantine; distribution findings come back as evidence.
                batch = data_steps.validate_or_quarantine(
                    found.uri,
                    schema,
                    validation,
                    settings.store,
                    batch_id=found.batch_id,
                    raw_bytes=found.raw,
                    label_column=settings.data.label_column,
                    labels="optional",
                    distribution="evidence",
                )
            except ValidationFailed as e:
                entry = {
                    "batch_id": found.batch_id,
                    "uri": found.uri,
                    "rules": e.report.rules if e.report else [],
                    "quarantine_uri": e.quarantine_uri,
                }
            else:
                if len(batch.dataset) < settings.drift.min_batch_size:
                    # Too few rows for the tests to mean anything: recorded (never rechecked), no verdict.
                    if drift_steps.record_check(
                        settings,
                        found.batch_id,
                        {
                            "status": "too-small",
                            "uri": found.uri,
                            "key": found.key,
                            "rows": len(batch.dataset),
                            "model_version": champion["version"],
                        },
                    ):
                        too_small.append(found.batch_id)
                    continue
                verdict = drift_steps.judge_batch(reference, batch, model, settings, found.batch_id, found.uri)
                if drift_steps.record_check(
                    settings,
                    found.batch_id,
                    {
                        **verdict.record(),
                        "key": found.key,
                        "sha256": found.sha256,
                        "model_version": champion["version"],
                    },
                ):
                    checked.append(found.batch_id)
                    verdicts.append(verdict)
                continue
        if drift_steps.record_check(
            settings,
            found.batch_id,
            {"status": "quarantined", "key": found.key, "model_version": champion["version"], **entry},
        ):
            quarantined.append(entry)
    clients: list[ClientDrift] = []
    not_checked: list[ClientDrift] = []
    if source in ("federation", "both"):
        # Ask the federation: every client's verdict on its own new data becomes one more verdict,
        # recorded, reported and triggering exactly like a batch file's (tasks/federated/drift_verdicts.py).
        clients, not_checked = fed_verdicts.split_replies(fed_steps.ask_federation(settings, trained, reference))
        for reply in clients:
            verdict = fed_verdicts.client_verdict(
                reply, champion["version"], settings.drift.trigger, settings.federated.superlink_address
            )
            n_new += verdict.batch_id not in done
            if drift_steps.record_check(
                settings,
                verdict.batch_id,
                {**verdict.record(), **fed_verdicts.client_record(reply), "model_version": champion["version"]},
            ):
                checked.append(verdict.batch_id)
                verdicts.append(verdict)
    drift_steps.publish_history(settings)
    log.info(
        "%d new batch(es) under %s: %d checked, %d quarantined",
        n_new,
        settings.drift.batches_uri if source != "federation" else settings.federated.superlink_address,
        len(checked),
        len(quarantined),
    )

    event = q_event = None
    drifted = [v.batch_id for v in verdicts if v.drift]
    triggering = [v for v in verdicts if v.triggers]
    if triggering:
        ids = [v.batch_id for v in triggering]
        episode = drift_steps.update_episode(settings, champion["version"], ids)
        event = drift_steps.emit_drift_event(
            name,
            champion["version"],
            [r for v in triggering for r in v.reports if r.drift],
            episode["episode_id"],
            [v.uri for v in triggering],
            harm=[v.harm.as_dict() for v in triggering if v.harm],
            unlabelled=[v.batch_id for v in triggering if not v.labelled],
        )
        log.warning("drift in %s (episode %s): event %s", ids, episode["episode_id"], event and event["event_id"])
    if quarantined:
        q_event = drift_steps.emit_quarantine_event(name, champion["version"], quarantined)
        log.warning("quarantined %s: event %s", [q["batch_id"] for q in quarantined], q_event and q_event["event_id"])
    harmless = [b for b in drifted if b not in {v.batch_id for v in triggering}]
    status = (
        ("drift" if drifted else "ok") if not quarantined else ("drift-and-quarantined" if drifted else "quarantined")
    )
    summary = (
        f"# Drift check of {name} v{champion['version']}\n\n* status: {status}\n* new batches: {n_new}\n"
        f"* checked: {len(checked)}\n* too small to test (drift.min_batch_size): {too_small or 'none'}\n"
        f"* quarantined (no verdict): "
        f"{[q['batch_id'] for q in quarantined] or 'none'}\n* drift: {drifted or 'none'}\n"
        f"* drift not retrained on (drift.trigger={settings.drift.trigger}): {harmless or 'none'}\n"
        f"* event: {event['event_id'] if event else 'none'}\n\n## Accuracy (CBPE estimate; measured where labelled)\n\n"
        + "\n".join(harm_line(v) for v in verdicts if not fed_verdicts.is_client_verdict(v))
        + "\n"
    )
    if source != "batches":
        summary += (
            f"\n## Federation ({settings.federated.superlink_address}): each client's verdict on its own new data\n\n"
            + fed_verdicts.summary_lines(clients + not_checked)
            + "\n"
        )
    publish_markdown("drift-check-summary", summary, "What this drift check found")
    return {
        "status": status,
        "checked": checked,
        "too_small": too_small,
        "quarantined": [q["batch_id"] for q in quarantined],
        "quarantine": quarantined,
        "drifted": drifted,
        "triggering": [v.batch_id for v in triggering],
        "keys": {v.batch_id: v.uri for v in verdicts},
        "harm": {v.batch_id: v.harm.as_dict() for v in verdicts if v.harm},
        "event": event,
        "quarantine_event": q_event,
        "model_version": champion["version"],
        **fed_verdicts.result_entries(clients, not_checked, champion["version"]),
        "summary": summary,
    }


def _skip(reason: str) -> dict:
    run_logger().warning("drift check skipped: %s", reason)
    publish_markdown("drift-check-summary", f"# Drift check skipped\n\n{reason}\n", "Why no check ran")
    return {
        "status": "skipped",
        "reason": reason,
        "checked": [],
        "quarantined": [],
        "drifted": [],
        "event": None,
        "quarantine": [],
        "triggering": [],
        "keys": {},
        "harm": {},
        "quarantine_event": None,
        "too_small": [],
        "clients": {},
        "clients_not_checked": [],
        "summary": f"drift check skipped: {reason}",
    }


if __name__ == "__main__":
    print(drift_check(load_settings())["summary"])
