"""The Prefect tasks of the data concern: thin wrappers, retried only on transient I/O errors,
and a flow that stops at a failed validation with the batch quarantined."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.data import steps
from tasks.data.config import DataConfig, ValidationConfig
from tasks.data.dataset import Dataset
from tasks.data.sources import to_npz_bytes
from tasks.errors import DataError, IntegrityError, ObjectNotFound, PreconditionFailed, StoreError, ValidationFailed
from tasks.store.backends import open_backend

from .conftest import frame_bytes


@pytest.mark.parametrize(
    "exc, transient",
    [
        (StoreError("S3 put failed: SlowDown"), True),
        (ConnectionResetError("reset"), True),
        (TimeoutError("slow"), True),
        (ObjectNotFound("s3://b/k does not exist"), False),
        (IntegrityError("sha256 mismatch"), False),
        (PreconditionFailed("s3://b/k exists (write-once)"), False),
        (DataError("bad file"), False),
        (ValidationFailed("rules"), False),
        (FileNotFoundError("x"), False),
        (ValueError("bug"), False),
        (None, False),
    ],
)
def test_is_transient(exc, transient):
    assert steps.is_transient(exc) is transient


def test_retry_condition_reads_the_exception_from_the_state():
    from prefect.states import Failed

    assert steps.retry_on_io(None, None, Failed(data=StoreError("unreachable"))) is True
    assert steps.retry_on_io(None, None, Failed(data=DataError("corrupt"))) is False


def test_task_bodies(tmp_path, local_store_config, table):
    ds = steps.load_data.fn(DataConfig(), local_store_config)
    assert ds.name == "digits" and ds.x.shape[1:] == (1, 8, 8)
    sp = steps.split_data.fn(ds, 5, DataConfig(max_train_samples=100))
    assert len(sp.train) == 100
    schema = steps.infer_schema_task.fn(sp.train)
    assert schema.num_rows == 100
    path = tmp_path / "t.csv"
    path.write_bytes(frame_bytes(table, ".csv"))
    tab = steps.load_data.fn(DataConfig(source=str(path)), local_store_config)
    assert tab.feature_names == ["age", "score", "ratio"] and tab.x.dtype == np.float32
    with pytest.raises(ObjectNotFound):
        steps.load_data.fn(DataConfig(source=str(tmp_path / "missing.csv")), local_store_config)


@pytest.mark.integration
def test_flow_stops_at_failed_validation(prefect_api, tmp_path, local_store_config, digits_splits, digits_schema):
    from prefect import flow, task

    ran = []

    @task
    def downstream(x):
        ran.append(x)

    @flow
    def pipeline(uri: str):
        checked = steps.validate_or_quarantine(
            uri, digits_schema, ValidationConfig(), local_store_config, batch_id="flow-batch"
        )
        downstream(len(checked.dataset))
        return checked.report.passed

    t = digits_splits.test
    good = tmp_path / "good.npz"
    good.write_bytes(to_npz_bytes(Dataset(t.x[:40], t.y[:40])))
    assert pipeline(str(good)) is True and ran == [40]

    x = t.x[:40].copy()
    x[:, 0, 4, 4] = np.nan
    bad = tmp_path / "bad.npz"
    bad.write_bytes(to_npz_bytes(Dataset(x, t.y[:40])))
    with pytest.raises(ValidationFailed, match=r"non_finite.*quarantined at file://"):
        pipeline(str(bad))
    assert ran == [40]
    backend = open_backend(local_store_config)
    assert backend.get_bytes("quarantine/flow-batch/bad.npz") == bad.read_bytes()
    assert backend.exists("quarantine/flow-batch/report.json")


@pytest.mark.integration
def test_retry_condition_in_a_flow(prefect_api):
    from prefect import flow, task

    calls = {"io": 0, "data": 0}

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=steps.retry_on_io)
    def flaky_io():
        calls["io"] += 1
        if calls["io"] < 3:
            raise StoreError("S3 get failed: connection reset")
        return "ok"

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=steps.retry_on_io)
    def corrupt():
        calls["data"] += 1
        raise DataError("b.parquet cannot be read")

    @flow
    def run():
        return flaky_io()

    @flow
    def run_bad():
        return corrupt()

    assert run() == "ok" and calls["io"] == 3
    with pytest.raises(DataError):
        run_bad()
    assert calls["data"] == 1
