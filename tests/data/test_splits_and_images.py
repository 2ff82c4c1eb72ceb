"""Hash splits (a row's split depends on the row and the seed only), image folders (local and S3),
default model names, and the calibrated range rule on clean held-out rows of several datasets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.data.config import ValidationConfig
from tasks.data.dataset import Dataset
from tasks.data.schema import infer_schema
from tasks.data.sources import (
    concat_datasets,
    load_dataset,
    load_digits_dataset,
    model_name_for_source,
    split_dataset,
)
from tasks.data.splits import SplitIds, row_ids
from tasks.data.validation import validate_batch
from tasks.errors import DataError
from tasks.store.backends import list_uri, read_uri


def test_adding_rows_never_moves_a_row_and_duplicates_share_a_split():
    ds = load_digits_dataset()
    base = ds.subset(np.arange(1200))
    grown = concat_datasets(base, ds.subset(np.arange(1200, len(ds))))
    a, b = split_dataset(base, 7, 0.15, 0.2), split_dataset(grown, 7, 0.15, 0.2)
    for name in ("train", "val", "test"):
        assert set(getattr(a.ids, name)) <= set(getattr(b.ids, name)), name
    # Roughly the configured fractions, and no id in two splits.
    n = len(grown)
    assert abs(len(b.test) / n - 0.2) < 0.04 and abs(len(b.val) / n - 0.15) < 0.04
    assert not (set(b.ids.train) & set(b.ids.test)) and not (set(b.ids.val) & set(b.ids.test))
    # Row ids follow content only: a copy of a row gets its id, a changed pixel does not.
    twice = concat_datasets(base, base.subset(np.arange(50)))
    ids = row_ids(twice)
    assert (ids[:50] == ids[1200:]).all()
    changed = base.subset(np.arange(5))
    changed.x = changed.x.copy()
    changed.x[0, 0, 4, 4] += 0.001
    assert row_ids(changed)[0] != row_ids(base.subset(np.arange(5)))[0]
    # Another seed gives another split; excluded rows never stay in test.
    c = split_dataset(grown, 8, 0.15, 0.2, exclude_from_test=a.ids.train)
    assert not (set(c.ids.test) & set(a.ids.train)) and c.ids.moved_from_test > 0
    back = SplitIds.from_npz_bytes(c.ids.to_npz_bytes())
    assert (back.test == c.ids.test).all() and back.moved_from_test == c.ids.moved_from_test


def _write_folder(root, classes=("circle", "square"), per_class=12, size=(10, 12), rgb=False, seed=0):
    r = np.random.default_rng(seed)
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = (r.uniform(0, 60, size) + 150 * k).clip(0, 255).astype(np.uint8)
            im = Image.fromarray(np.stack([a, a // 2, 255 - a], -1) if rgb else a)
            im.save(root / cls / f"{i:03d}.{'jpg' if (rgb and i % 2) else 'png'}")
    return root


def _local_loader(root, **kw):
    from tasks.store.config import StoreConfig

    cfg = StoreConfig()
    return load_dataset(str(root), lambda u: read_uri(u, cfg), list_uris=lambda u: list_uri(u, cfg), **kw)


def test_image_folder_grayscale_rgb_and_resize(tmp_path):
    ds = _local_loader(_write_folder(tmp_path / "gray"))
    assert ds.x.shape == (24, 1, 10, 12) and ds.x.dtype == np.float32
    assert ds.meta["class_names"] == ["circle", "square"] and list(np.bincount(ds.y)) == [12, 12]
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert ds.x[ds.y == 1].mean() > ds.x[ds.y == 0].mean() + 0.4
    rgb = _local_loader(_write_folder(tmp_path / "rgb", rgb=True), image_size=8)
    assert rgb.x.shape == (24, 3, 8, 8) and rgb.meta["image_mode"] == "rgb"
    assert _local_loader(tmp_path / "rgb", image_size=[6, 5], image_mode="grayscale").x.shape == (24, 1, 6, 5)
    # Differing sizes without data.image_size: the error names the key and a file.
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "gray" / "square" / "odd.png")
    with pytest.raises(DataError, match=r"data.image_size.*|odd.png"):
        _local_loader(tmp_path / "gray")
    (tmp_path / "gray" / "square" / "odd.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="odd.png: cannot be read as an image"):
        _local_loader(tmp_path / "gray", image_size=10)


@pytest.mark.integration
def test_image_folder_under_an_s3_prefix(tmp_path, s3_store_config):
    from tasks.store.backends import write_uri

    local = _write_folder(tmp_path / "imgs", rgb=True)
    bucket = s3_store_config.uri.split("/")[2]
    for f in sorted(local.rglob("*.*")):
        write_uri(f"s3://{bucket}/images/{f.relative_to(local)}", f.read_bytes(), s3_store_config)
    ds = load_dataset(
        f"s3://{bucket}/images/",
        lambda u: read_uri(u, s3_store_config),
        list_uris=lambda u: list_uri(u, s3_store_config),
        image_size=8,
    )
    assert ds.x.shape == (24, 3, 8, 8)
    assert np.allclose(ds.x, _local_loader(local, image_size=8).x)


def test_model_name_follows_the_source():
    assert model_name_for_source("digits") == "digits-classifier"
    assert model_name_for_source("/data/breast cancer.parquet") == "breast-cancer-classifier"
    assert model_name_for_source("s3://bucket/shop/images/") == "images-classifier"


def _tabular(name: str) -> Dataset:
    import sklearn.datasets as sd

    if name == "generated":
        r = np.random.default_rng(3)
        x = r.normal(size=(2000, 20)).astype(np.float32)
        x[:, :5] = np.exp(x[:, :5])  # long right tails
        return Dataset(x, (x[:, 5] + x[:, 6] > 0).astype(np.int64), name)
    x, y = getattr(sd, f"load_{name}")(return_X_y=True)
    return Dataset(x.astype(np.float32), y.astype(np.int64), name)


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine", "iris", "generated"])
def test_held_out_rows_pass_the_schema_of_their_train_split(name):
    ds = load_digits_dataset() if name == "digits" else _tabular(name)
    for seed in range(8):
        sp = split_dataset(ds, seed, 0.15, 0.2)
        held = (np.concatenate([sp.val.x, sp.test.x]), np.concatenate([sp.val.y, sp.test.y]))
        rep = validate_batch(held, infer_schema(sp.train), ValidationConfig(), f"held-{seed}")
        assert rep.passed, rep.to_text()


def test_failure_message_names_the_features_and_values(tmp_path):
    import pandas as pd

    from tasks.data.validation import validate_or_quarantine
    from tasks.errors import ValidationFailed
    from tasks.store.config import StoreConfig

    r = np.random.default_rng(0)
    df = pd.DataFrame({"age": r.integers(18, 91, 300), "income": r.uniform(1e3, 9e4, 300)})
    df["label"] = (df["income"] > 4e4).astype(int)
    df.to_csv(tmp_path / "train.csv", index=False)
    cfg = StoreConfig(uri=str(tmp_path / "store"))
    ds = load_dataset(str(tmp_path / "train.csv"), lambda u: read_uri(u, cfg))
    schema = infer_schema(split_dataset(ds, 0, 0.15, 0.2).train)
    bad = df.head(40).copy()
    bad.loc[3, "income"] = 9e7  # a unit error: cents instead of dollars
    bad.to_csv(tmp_path / "batch.csv", index=False)
    with pytest.raises(ValidationFailed) as e:
        validate_or_quarantine(str(tmp_path / "batch.csv"), schema, ValidationConfig(), cfg)
    assert "out_of_range: row 3 feature 'income' = 9e+07 (allowed" in str(e.value)
