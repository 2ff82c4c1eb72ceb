"""The Prefect tasks against a real Prefect API (prefect_test_harness)."""

import time
import uuid

import numpy as np
import pytest

from tasks.drift.report import DriftReport

pytestmark = pytest.mark.integration


def _read_events(resource_id, expect, timeout=20.0):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(
        event=EventNameFilter(name=["driftloop.drift.detected"]), resource=EventResourceFilter(id=[resource_id])
    )
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=flt, limit=50).events
        if len(events) >= expect or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_emit_drift_event_reaches_the_api_once(prefect_api):
    from tasks.drift.events import resource_id
    from tasks.drift.steps import emit_drift_event

    model = f"digits-{uuid.uuid4().hex[:8]}"
    reports = [
        DriftReport("ks_softmax", "batch-00060", True, 0.5, 0.005, 1e-6),
        DriftReport("mmd_embedding", "batch-00060", False, 0.001, 0.05, 0.4),
    ]
    sent = emit_drift_event.fn(model, 3, reports, "episode-1", ["s3://b/batch-00060.npz"])
    again = emit_drift_event.fn(model, 3, reports, "episode-1", ["s3://b/batch-00060.npz"])  # a duplicate delivery
    assert sent["sent"] and sent["event_id"] == again["event_id"]
    assert emit_drift_event.fn(model, 3, [reports[1]], "episode-1") is None  # no drift, no event
    events = _read_events(resource_id(model), 1)
    time.sleep(1.0)
    events = _read_events(resource_id(model), 2, timeout=0)
    assert len(events) == 1, events  # the duplicate (same id) is stored once
    ev = events[0]
    assert str(ev.id) == sent["event_id"]
    assert ev.payload["batch_ids"] == ["batch-00060"] and ev.payload["detector"] == "ks_softmax"
    assert ev.payload["version"] == 3 and ev.payload["episode_id"] == "episode-1"
    assert ev.resource.id == f"driftloop.model.{model}"


def test_detect_drift_task_in_a_flow_with_artifacts(prefect_api, drift_reference, digits_model, digits_splits):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from tasks.drift.steps import detect_drift
    from tasks.errors import DataError
    from tasks.ui import artifact_key

    key = f"drift-test-{uuid.uuid4().hex[:6]}"

    @flow(name="drift-steps-test")
    def check(x):
        return detect_drift(drift_reference, x, digits_model, ["ks_softmax"], None, "batch-00001", key)

    reports = check(digits_splits.test.x[:100])
    assert len(reports) == 1 and reports[0].detector == "ks_softmax"
    with get_client(sync_client=True) as client:
        art = client.read_latest_artifacts()
    assert any(a.key == artifact_key(key, "summary") for a in art)

    @flow(name="drift-steps-bad-batch")
    def bad():
        return detect_drift(drift_reference, np.zeros((0, 1, 8, 8), np.float32), digits_model, ["ks_softmax"])

    with pytest.raises(DataError, match="empty"):
        bad()
