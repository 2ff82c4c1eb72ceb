"""Prefect tasks of the drift concern: each a decorator plus a call to one pure function.

Over 400 lines (``ruff format`` layout): the drift check's Prefect tasks, each a thin wrapper over a
pure module; splitting them would only scatter the task names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.input import RunInput
from pydantic import Field

from tasks.data.steps import IO_RETRY
from tasks.drift import detectors as _detectors
from tasks.drift import discovery as _discovery
from tasks.drift import events as _events
from tasks.drift import features as _features
from tasks.drift import labels as _labels
from tasks.drift import ledger as _ledger
from tasks.drift import reference as _reference
from tasks.drift import verdict as _verdict
from tasks.drift.report import DriftReport, markdown_summary
from tasks.errors import DataError, ObjectNotFound
from tasks.seeding import derive_seed
from tasks.ui import artifact_key, publish_markdown, publish_table


# Models, arrays and detectors are not worth hashing for a cache key: NO_CACHE throughout.
@task(name="detect-drift", cache_policy=NO_CACHE)
def detect_drift(
    reference,
    x_batch: np.ndarray,
    model,
    detectors=None,
    cfg=None,
    batch_id: str = "batch",
    artifact_prefix: str | None = "drift-check",
) -> list[DriftReport]:
    """Run the detectors on one batch and publish the reports as a table and a markdown artifact."""
    reports = _detectors.check_batch(reference, x_batch, model, detectors, cfg, batch_id)
    if artifact_prefix:
        publish_table(
            artifact_key(artifact_prefix, "reports"),
            [{k: v for k, v in r.to_dict().items() if k != "details"} for r in reports],
            f"drift reports of {batch_id}",
        )
        publish_markdown(
            artifact_key(artifact_prefix, "summary"), markdown_summary(reports, f"Drift check of {batch_id}")
        )
    return reports


@task(name="emit-drift-event", cache_policy=NO_CACHE)
def emit_drift_event(
    model: str,
    version: int | str | None,
    reports: Sequence[DriftReport],
    episode_id: str,
    batch_uris: Sequence[str] | None = None,
    harm: list[dict] | None = None,
    unlabelled: list[str] | None = None,
) -> dict[str, Any] | None:
    """Emit ``driftloop.drift.detected`` for the model when a report found drift; no drift, no event.

    Returns ``{"event_id", "payload", "sent"}``, or None when there was no drift. ``sent`` is False
    when Prefect had no API to send to (emit_event then drops the event); the send itself is
    asynchronous (Prefect's events worker), so the event reaches the API shortly after.
    """
    spec = _events.drift_event(model, version, reports, episode_id, batch_uris)
    if spec is None:
        return None
    if harm is not None:
        spec["payload"]["harm"] = harm
    if unlabelled is not None:
        spec["payload"]["unlabelled_batch_ids"] = unlabelled
    sent = emit_event(**spec)
    return {"event_id": str(spec["id"]), "payload": spec["payload"], "sent": sent is not None}


# ---- the drift loop's store-backed state (tasks.drift.ledger) and references beside models ----

# Store I/O: transient failures only (IO_RETRY); a missing reference or bad batch fails at once.
_IO = dict(**IO_RETRY, cache_policy=NO_CACHE)


@task(name="drift-reference-files", cache_policy=NO_CACHE)
def reference_files_for(model, splits, settings) -> dict[str, bytes]:
    """The drift reference of a candidate as files to store beside its weights.

    Inputs are the held-out validation and test splits: softmax outputs on the data a model was
    fitted on are over-confident, and KS on them would flag clean batches.
    """
    # Both splits as one input, never concatenated (only the sampled rows are copied). The labels
    # calibrate CBPE (tasks.drift.harm): the estimated accuracy reported with each verdict.
    x, y = [splits.val.x, splits.test.x], [splits.val.y, splits.test.y]
    # Training rows for the agreement estimate of accuracy without labels (tasks.drift.harm).
    agreement = (splits.train.x, splits.train.y) if settings.drift.harm_estimator == "agreement" else None
    ref = _reference.build_reference(
        model.module(),
        x,
        settings.drift,
        derive_seed(settings.seed, "drift-reference"),
        meta={"model": settings.registry.model_name},
        y_inputs=y,
        agreement_inputs=agreement,
    )
    return _reference.reference_to_files(ref)


@task(name="load-drift-reference", **_IO)
def load_reference(settings, champion: dict) -> _reference.DriftReference | None:
    """The champion's stored reference (sha256-verified), or None when it has none."""
    from tasks.store.artifacts import ArtifactStore

    store = ArtifactStore.from_config(settings.store)
    objects = store.manifest(champion["run_id"]).get("objects", {})
    if not all(n in objects for n in _reference.REFERENCE_FILES):
        return None
    files = {n: store.get_bytes(champion["run_id"], n) for n in _reference.REFERENCE_FILES}
    return _reference.reference_from_files(files, origin=f"run {champion['run_id']}")


@task(name="list-batches", **_IO)
def list_batches(settings) -> list[_discovery.BatchFile]:
    """Every batch file under ``drift.batches_uri`` (tasks.drift.discovery); a missing URI is an error."""
    return _discovery.list_batch_files(settings.drift.batches_uri, settings.store, settings.drift.max_batch_bytes)


@task(name="checked-batch-ids", **_IO)
def checked_ids(settings) -> set[str]:
    from tasks.store.backends import open_backend

    return _ledger.checked_ids(open_backend(settings.store), settings.registry.model_name)


@task(name="read-batch", **_IO)
def read_batch(settings, f: _discovery.BatchFile) -> _discovery.FoundBatch:
    """Read one listed batch file safely (no links, no FIFOs, size-capped) and identify it."""
    return _discovery.read_batch_file(f, settings.store, settings.drift.max_batch_bytes)


@task(name="quarantine-refused-batch", **_IO)
def quarantine_refused(settings, found: _discovery.FoundBatch) -> str:
    """Quarantine a batch discovery refused (link, FIFO, too large, bad name) on its own; its URI."""
    from tasks.data.quarantine import quarantine
    from tasks.data.report import read_report
    from tasks.store.backends import open_backend

    assert found.refusal is not None, "only a batch discovery refused is quarantined here"
    rule, message = found.refusal
    report = read_report(found.batch_id, found.uri, rule, message)
    return quarantine(open_backend(settings.store), found.batch_id, found.raw, found.key.rsplit("/", 1)[-1], report)


@task(name="judge-batch", cache_policy=NO_CACHE)
def judge_batch(reference, batch, model, settings, batch_id: str, uri: str) -> _verdict.BatchVerdict:
    """Detectors + distribution evidence + CBPE on one validated batch: its verdict (tasks.drift.verdict)."""
    from tasks.models.train import predict_proba

    cfg = settings.drift
    x = batch.dataset.x
    reports = _detectors.check_batch(reference, x, model, cfg=cfg, batch_id=batch_id)
    evidence = _verdict.evidence_report(
        batch_id, batch.report.evidence, batch.report.stats, len(x), cfg.evidence_is_drift
    )
    probs = predict_proba(model, np.ascontiguousarray(x, dtype=np.float32), _features.torch_device(cfg.device))
    agreement = None
    aset = reference.agreement() if cfg.harm_estimator == "agreement" else None
    if aset is not None and len(x):
        agreement = _harm_agreement(model, aset, x, probs)
    return _verdict.judge(
        batch_id,
        uri,
        reports,
        probs,
        batch.dataset.y,
        batch.report.labelled,
        reference.cbpe(),
        cfg.trigger,
        cfg.max_estimated_drop,
        evidence,
        agreement=agreement,
    )


def _harm_agreement(model, aset, x: np.ndarray, probs: np.ndarray, chunk: int = 65536) -> float:
    """The agreement estimate on a batch, standardized and compared chunk by chunk (no full copy)."""
    from tasks.drift.harm import agreement_accuracy
    from tasks.models.standardize import standardized_inputs

    pred, agree = probs.argmax(axis=1), 0.0
    for i in range(0, len(x), chunk):
        part = standardized_inputs(model, np.ascontiguousarray(x[i : i + chunk], dtype=np.float32))
        agree += agreement_accuracy(pred[i : i + chunk], aset, part) * len(part)
    return agree / len(x)


@task(name="emit-quarantine-event", cache_policy=NO_CACHE)
def emit_quarantine_event(model: str, version, quarantined: list[dict]) -> dict[str, Any] | None:
    """Emit ``driftloop.data.quarantined`` naming the check's quarantined batches; None when none."""
    spec = _events.quarantine_event(model, version, quarantined)
    if spec is None:
        return None
    sent = emit_event(**spec)
    return {"event_id": str(spec["id"]), "payload": spec["payload"], "sent": sent is not None}


@task(name="record-check", **_IO)
def record_check(settings, batch_id: str, record: dict) -> bool:
    from tasks.store.backends import open_backend

    return _ledger.record_check(open_backend(settings.store), settings.registry.model_name, batch_id, record)


@task(name="publish-drift-history", **_IO)
def publish_history(settings) -> int:
    """The p-value-over-time plot of every recorded check (one point per batch and detector)."""
    from tasks.drift.report import DriftReport
    from tasks.store.backends import open_backend
    from tasks.ui import publish_image, publish_table

    hist = _ledger.check_history(open_backend(settings.store), settings.registry.model_name)
    reports = [DriftReport.from_dict(r) for h in hist if h.get("status") == "checked" for r in h.get("reports", [])]
    if reports:
        from tasks.drift.report import pvalue_plot_png

        publish_image("drift-pvalues", pvalue_plot_png(reports), "Drift p-values over time (one point per batch)")
    publish_table(
        "drift-history",
        [
            {
                "batch_id": h["batch_id"],
                "status": h.get("status"),
                "drift": any(r.get("drift") for r in h.get("reports", [])),
                "rules": ",".join(h.get("rules", [])),
            }
            for h in hist[-200:]
        ],
        "Every checked batch (latest 200)",
    )
    return len(hist)


@task(name="update-drift-episode", **_IO)
def update_episode(settings, version, batch_ids: list[str]) -> dict:
    """Place this check's drift in the current episode (a new one after the cooldown)."""
    import time

    from tasks.store.backends import open_backend

    backend = open_backend(settings.store)
    name = settings.registry.model_name
    episode, _new = _events.assign_episode(
        _ledger.load_episode(backend, name), name, version, time.time(), settings.drift.cooldown_seconds, batch_ids
    )
    _ledger.save_episode(backend, episode)
    return episode.as_dict()


@task(name="open-drift-episode", **_IO)
def open_episode(settings) -> dict | None:
    """The model's current drift episode while within ``drift.cooldown_seconds`` of its start, else None."""
    import time

    from tasks.store.backends import open_backend

    episode = _ledger.load_episode(open_backend(settings.store), settings.registry.model_name)
    if episode is None or not 0.0 <= time.time() - episode.started_at <= settings.drift.cooldown_seconds:
        return None
    return episode.as_dict()


@task(name="claim-retraining", **_IO)
def claim_retraining(settings, episode_id: str, info: dict) -> bool:
    from tasks.store.backends import open_backend

    return _ledger.claim_retraining(open_backend(settings.store), settings.registry.model_name, episode_id, info)


@task(name="resolve-batches", **_IO)
def resolve_batches(settings, batch_ids: list[str]) -> list[_labels.BatchRef]:
    """The named batches as the drift check recorded them (URI, labelled or not); an unknown id is
    an error naming it. A federated client's check (``source = "federation"``) is known but has no
    rows here (they never leave the client's node): it starts the retraining, and the federated
    stage trains on the clients' own data; it adds no batch to train on centrally."""
    from tasks.store.backends import open_backend

    backend = open_backend(settings.store)
    out, missing = [], []
    for b in batch_ids:
        rec = _ledger.get_check(backend, settings.registry.model_name, b)
        if rec is None or rec.get("status") != "checked":
            missing.append(b)
        elif rec.get("source") == "federation":
            continue
        else:
            out.append(_labels.BatchRef(b, rec["uri"], bool(rec.get("labelled", True))))
    if missing:
        raise DataError(
            f"batches {missing} were never checked (no drift-check record) for "
            f"{settings.registry.model_name} under {settings.drift.batches_uri}"
        )
    return out


# ---- labels for unlabelled drifted batches (tasks.drift.labels): Prefect's interactive pause ----


class LabelsInput(RunInput):
    """The form the Prefect UI shows while a retraining run waits for labels."""

    labelled_batch_uris: list[str] = Field(
        default_factory=list,
        description="Labelled copies of the drifted batches (npz with x and y; csv/parquet with the label column). "
        "Leave empty if you wrote <batch file>.labels.json beside each batch instead.",
    )
    skip: bool = Field(False, description="Train nothing for this drift episode.")
    resumed_by: str = Field("user", description="Who resumed the run: user, labels-files or timeout.")


@dataclass
class LabelsOutcome:
    """How a wait for labels ended: ``labelled`` (``uris`` to train on), ``skipped`` or ``timeout``."""

    status: str
    uris: list[str] = field(default_factory=list)
    resumed_by: str = ""


@task(name="labelled-batches", **_IO)
def labelled_batches(settings, refs: list) -> list[str] | None:
    """Labelled copies of ``refs`` from their labels files, written to the store under
    ``drift/<model>/labelled/``; None while a labels file is missing. A malformed one is an error."""
    return _labels.write_labelled_copies(refs, settings.store, settings.registry.model_name, settings.data.label_column)


def _labels_present(settings, refs) -> bool:
    from tasks.store.backends import read_uri

    for r in refs:
        try:
            read_uri(_labels.labels_uri(r.uri), settings.store)
        except ObjectNotFound:
            return False
    return True


def _watch_for_labels(settings, refs, flow_run_id, stop, timeout: float, poll: float) -> None:
    """Resume the paused run through the API when every labels file is there, or at the timeout.

    A thread beside the blocked ``pause_flow_run``: the run resumes the same way a UI user resumes
    it, so the labels-file path and the form path are one path. A resume before the run is paused
    (labels that arrive at once) is refused by the API and retried at the next poll.
    """
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus

    deadline = time.monotonic() + timeout
    run_input: dict[str, Any]
    while not stop.wait(poll):
        if _labels_present(settings, refs):
            run_input = {"resumed_by": "labels-files"}
        elif time.monotonic() >= deadline:
            run_input = {"resumed_by": "timeout", "skip": True}
        else:
            continue
        try:
            with get_client(sync_client=True) as client:
                result = client.resume_flow_run(flow_run_id, run_input=run_input)
            if result.status == SetStateStatus.ACCEPT:
                return
        except Exception:  # noqa: BLE001 - not paused yet, or the API blinked: try again next poll
            pass


def wait_for_labels(settings, refs: list, episode_id: str) -> LabelsOutcome:
    """Pause the calling flow run until labels for the unlabelled ``refs`` arrive (Prefect's
    ``pause_flow_run(wait_for_input=LabelsInput)``: a form in the UI), a labels file is beside
    every batch, or ``drift.labels_timeout_seconds`` pass. Called from the flow, not a task."""
    import contextvars
    import threading

    from prefect.context import FlowRunContext
    from prefect.flow_runs import pause_flow_run

    uris = labelled_batches(settings, refs)
    if uris is not None:
        return LabelsOutcome("labelled", uris, "labels-files")
    cfg = settings.drift
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("wait_for_labels pauses the calling flow run: call it from a flow")
    stop = threading.Event()
    # The watcher runs in a copy of this context: it talks to the same Prefect API as the run.
    watcher = threading.Thread(
        target=contextvars.copy_context().run,
        name="labels-watcher",
        daemon=True,
        args=(
            _watch_for_labels,
            settings,
            refs,
            ctx.flow_run.id,
            stop,
            cfg.labels_timeout_seconds,
            cfg.labels_poll_seconds,
        ),
    )
    watcher.start()
    try:
        # Prefect's own pause timeout is a backstop a minute after the watcher's.
        answer = pause_flow_run(
            wait_for_input=LabelsInput,
            timeout=int(cfg.labels_timeout_seconds) + 60,
            poll_interval=max(1, int(cfg.labels_poll_seconds)),
            key=f"labels-{episode_id}",
        )
    except Exception as e:  # FlowPauseTimeout: nobody resumed it, not even the watcher
        if type(e).__name__ != "FlowPauseTimeout":
            raise
        answer = LabelsInput(skip=True, resumed_by="timeout")
    finally:
        stop.set()
        watcher.join(timeout=10)
    if answer.resumed_by == "timeout":
        return LabelsOutcome("timeout", [], "timeout")
    if answer.skip:
        return LabelsOutcome("skipped", [], answer.resumed_by)
    if answer.labelled_batch_uris:
        return LabelsOutcome("labelled", list(answer.labelled_batch_uris), answer.resumed_by)
    uris = labelled_batches(settings, refs)
    if uris is None:
        raise DataError(
            f"resumed without labelled batch URIs, and labels files are missing for "
            f"{[r.batch_id for r in refs]} (expected at <batch file>{_labels.LABELS_SUFFIX})"
        )
    return LabelsOutcome("labelled", uris, answer.resumed_by)


@task(name="record-retraining-outcome", **_IO)
def record_outcome(settings, episode_id: str, outcome: dict) -> None:
    from tasks.store.backends import open_backend

    _ledger.save_retraining_outcome(open_backend(settings.store), settings.registry.model_name, episode_id, outcome)
