"""Prefect tasks for data: load, split, infer the schema, validate or quarantine.

Each task is a decorator plus a call to one pure function (:mod:`tasks.data.sources`,
:mod:`tasks.data.schema`, :mod:`tasks.data.validation`). Reading from the store is retried, but
only for transient failures (store unreachable, connection reset): a missing file, a corrupt file
or a failed validation is final and retrying it would only delay the report.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.config import DataConfig, ValidationConfig
from tasks.data.dataset import Dataset, Splits
from tasks.data.labels import check_label_set
from tasks.data.schema import Schema, infer_schema
from tasks.data.sources import load_dataset, split_dataset
from tasks.data.validation import ValidatedBatch
from tasks.data.validation import validate_or_quarantine as _validate_or_quarantine
from tasks.errors import DataError, IntegrityError, ObjectNotFound, PreconditionFailed, StoreError, ValidationFailed

IO_RETRIES = 3
IO_RETRY_DELAYS = [1, 4, 10]


def is_transient(exc: BaseException | None) -> bool:
    """True for errors worth retrying: store or network trouble, not bad or missing data."""
    if exc is None or isinstance(
        exc,
        (
            DataError,
            ValidationFailed,
            ObjectNotFound,
            IntegrityError,
            PreconditionFailed,
            FileNotFoundError,
            IsADirectoryError,
            NotADirectoryError,
            PermissionError,
        ),
    ):
        return False
    return isinstance(exc, (StoreError, ConnectionError, TimeoutError, OSError))


def retry_on_io(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed with a transient error."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:
            return False
    return is_transient(exc if isinstance(exc, BaseException) else None)


# The one retry preset for tasks that touch the store or the network: transient failures only (a
# sha256 mismatch, a missing object, bad data or a registry rule fails at once; retrying them only
# delayed the same error by 15 s). Use as ``@task(name=..., **IO_RETRY, cache_policy=...)``.
IO_RETRY: dict[str, Any] = dict(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=retry_on_io)


@task(name="load-data", **IO_RETRY, cache_policy=NO_CACHE)
def load_data(data_cfg: DataConfig, store_cfg) -> Dataset:
    """Load the configured dataset (digits, a file/URI or an image folder read through the store)."""
    from tasks.store.backends import list_uri, read_uri

    ds = load_dataset(
        data_cfg.source,
        lambda uri: read_uri(uri, store_cfg),
        data_cfg.label_column,
        data_cfg.sample_shape,
        lambda uri: list_uri(uri, store_cfg),
        data_cfg.image_size,
        data_cfg.image_mode,
    )
    check_label_set(ds.y, ds.name, data_cfg.classes)  # before anything counts classes (np.bincount)
    return ds


@task(name="split-data", cache_policy=NO_CACHE)
def split_data(ds: Dataset, seed: int, data_cfg: DataConfig, exclude_from_test=None) -> Splits:
    """Train/validation/test by a hash of each row and the seed; rows in ``exclude_from_test``
    (what a compared model trained on) never land in the test split."""
    return split_dataset(
        ds, seed, data_cfg.val_fraction, data_cfg.test_fraction, data_cfg.max_train_samples, exclude_from_test
    )


@task(name="infer-schema", cache_policy=NO_CACHE)
def infer_schema_task(ds: Dataset) -> Schema:
    """Infer the schema of the training split."""
    return infer_schema(ds)


@task(name="validate-or-quarantine", **IO_RETRY, cache_policy=NO_CACHE)
def validate_or_quarantine(
    batch: Dataset | str,
    schema: Schema,
    cfg: ValidationConfig,
    store_cfg,
    batch_id: str | None = None,
    label_column: str = "label",
    raw_bytes: bytes | None = None,
    labels: str = "required",
    distribution: str = "fail",
    raw_uri: str | None = None,
) -> ValidatedBatch:
    """Validate a batch; on failure quarantine it and raise ValidationFailed (naming rules and location)."""
    return _validate_or_quarantine(
        batch,
        schema,
        cfg,
        store_cfg,
        batch_id=batch_id,
        label_column=label_column,
        raw_bytes=raw_bytes,
        labels=labels,
        distribution=distribution,
        raw_uri=raw_uri,
    )
