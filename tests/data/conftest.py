"""Fixtures for the data tests: digits splits and schema, a small tabular dataset as csv/parquet
bytes, and a local-directory store configuration."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from tasks.data.schema import infer_schema
from tasks.data.sources import load_digits_dataset, split_dataset


@pytest.fixture(scope="session")
def digits_splits():
    return split_dataset(load_digits_dataset(), seed=1337, val_fraction=0.15, test_fraction=0.2)


@pytest.fixture(scope="session")
def digits_schema(digits_splits):
    return infer_schema(digits_splits.train)


def make_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A small tabular dataset: an integer, a gaussian and a bounded column, three classes."""
    r = np.random.default_rng(seed)
    age = r.integers(18, 91, n)
    score = r.normal(0.0, 1.0, n)
    ratio = r.uniform(0.0, 1.0, n)
    label = (score > 0).astype(int) + (ratio > 0.7).astype(int)
    return pd.DataFrame({"age": age, "score": score, "ratio": ratio, "label": label})


def frame_bytes(df: pd.DataFrame, suffix: str) -> bytes:
    buf = io.BytesIO()
    if suffix == ".csv":
        df.to_csv(buf, index=False)
    else:
        df.to_parquet(buf, index=False)
    return buf.getvalue()


@pytest.fixture(scope="session")
def table():
    return make_table()


@pytest.fixture
def local_store_config(tmp_path):
    from tasks.store.config import StoreConfig

    return StoreConfig(uri=str(tmp_path / "store"))
