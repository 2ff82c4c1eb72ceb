"""The client's side without Flower: loading and validating its own data, the redacted report, the
local held-out split, the message protocol, the `driftloop supernode` command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.data.config import ValidationConfig
from tasks.data.schema import infer_schema
from tasks.errors import ConfigError
from tasks.federated.client_data import load_local_data, local_split
from tasks.federated.protocol import ClientTask, client_task
from tasks.federated.supernode import supernode_argv

from .conftest import fed_settings


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"age": rng.uniform(20, 60, 120), "income": rng.uniform(1e3, 5e3, 120), "label": rng.integers(0, 3, 120)}
    )
    from tasks.data.sources import _from_frame

    schema = infer_schema(_from_frame(df, "label", "train.csv"))
    d = tmp_path_factory.mktemp("owner")
    good = df.sample(50, random_state=1)
    good.to_csv(d / "good.csv", index=False)
    bad = good.copy()
    bad.loc[bad.index[:3], "age"] = np.nan
    bad.loc[bad.index[3:7], "income"] = 9.9e7
    bad.to_csv(d / "bad.csv", index=False)
    return schema, d


def test_clean_file_is_split_into_train_and_held_out_rows(tabular):
    schema, d = tabular
    data = load_local_data(
        str(d / "good.csv"), schema, ValidationConfig(), label_column="label", held_out_fraction=0.2, seed=5
    )
    assert data.validation.passed and data.validation.rows == 50
    assert len(data.train) == 40 and len(data.held_out) == 10
    assert data.train.x.dtype == np.float32
    again = load_local_data(
        str(d / "good.csv"), schema, ValidationConfig(), label_column="label", held_out_fraction=0.2, seed=5
    )
    assert np.array_equal(again.held_out.x, data.held_out.x)  # the same held-out rows every round


def test_failing_file_reports_rules_counts_and_feature_names_only(tabular):
    schema, d = tabular
    data = load_local_data(
        str(d / "bad.csv"), schema, ValidationConfig(), label_column="label", held_out_fraction=0.2, seed=5
    )
    v = data.validation
    assert not v.passed and v.rows == 50 and len(data.train) == 0
    by_rule = {r.rule: r for r in v.violations}
    assert by_rule["non_finite"].count == 3 and by_rule["non_finite"].features == ["age"]
    assert by_rule["out_of_range"].count == 4 and by_rule["out_of_range"].features == ["income"]
    text = json.dumps(v.to_dict())
    assert "9.9" not in text and "row" not in text.replace("rows", "")


def test_missing_file_is_a_failed_report(tabular, tmp_path):
    schema, _ = tabular
    v = load_local_data(
        str(tmp_path / "nope.csv"), schema, ValidationConfig(), label_column="label", held_out_fraction=0.2, seed=5
    ).validation
    assert not v.passed and v.rules == ["missing_file"]


def test_local_split_edges(tabular):
    from tasks.data.dataset import Dataset

    ds = Dataset(np.zeros((3, 2), np.float32), np.zeros(3, np.int64))
    assert [len(p) for p in local_split(ds, 0.2, 1)] == [2, 1]  # at least one held-out row
    assert [len(p) for p in local_split(ds, 0.0, 1)] == [3, 0]


def test_client_task_round_trips_through_a_config_record(digits_splits):
    from flwr.app import ConfigRecord

    from tasks.models.serialize import model_spec

    s = fed_settings()
    spec = model_spec(s.model, digits_splits.train.sample_shape, 10)
    task = client_task(s, spec, infer_schema(digits_splits.train))
    back = ClientTask.from_config(ConfigRecord(task.to_config()))
    assert back == task


def test_supernode_command_line(tmp_path):
    f = tmp_path / "mine.npz"
    np.savez(f, x=np.zeros((2, 2)), y=np.zeros(2, np.int64))
    argv = supernode_argv("10.0.0.5:9092", str(f), client_id=4)
    assert argv[argv.index("--superlink") + 1] == "10.0.0.5:9092" and "--insecure" in argv
    assert argv[argv.index("--node-config") + 1] == f'data-path="{f.resolve()}" partition-id=4'
    with pytest.raises(ConfigError, match="--data .*no such file"):
        supernode_argv("10.0.0.5:9092", str(tmp_path / "missing.npz"))
    with pytest.raises(ConfigError, match="--tls .*no such file"):
        supernode_argv("10.0.0.5:9092", str(f), tls_ca=str(tmp_path / "ca.crt"))
    assert supernode_argv("h:1", "s3://bucket/k.npz", s3_endpoint="http://s3:8333")[-2].endswith(
        's3-endpoint="http://s3:8333"'
    )


def test_image_folder_is_loaded_and_validated(digits_splits, tmp_path):
    from PIL import Image

    schema = infer_schema(digits_splits.train)
    x, y = digits_splits.train.x[:30], digits_splits.train.y[:30]
    for i, (img, label) in enumerate(zip(x, y)):
        (tmp_path / "imgs" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img[0] * 255).astype(np.uint8), mode="L").save(
            tmp_path / "imgs" / str(label) / f"{i}.png"
        )
    data = load_local_data(
        str(tmp_path / "imgs"), schema, ValidationConfig(), label_column="label", held_out_fraction=0.2, seed=5
    )
    assert data.validation.passed and data.validation.rows == 30
    assert data.train.x.shape[1:] == (1, 8, 8) and len(data.train) + len(data.held_out) == 30
    assert sorted(np.concatenate([data.train.y, data.held_out.y]).tolist()) == sorted(y.tolist())
    # a 16x16 image among the 8x8 ones: the folder is not one array, reported as unreadable
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(tmp_path / "imgs" / "0" / "big.png")
    bad = load_local_data(
        str(tmp_path / "imgs"), schema, ValidationConfig(), label_column="label", held_out_fraction=0.2, seed=5
    ).validation
    assert not bad.passed and bad.rules == ["unreadable_file"]
