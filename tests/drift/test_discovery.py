"""Batch discovery (tasks.drift.discovery): ids from key + content, refusals, and S3 listings."""

import io

import numpy as np
import pytest

from tasks.drift import discovery as D
from tasks.errors import DataError


def _npz(x) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=x)
    return buf.getvalue()


def test_batch_ids_from_key_and_content():
    a = D.batch_id_for("one/b.npz", "sha-1")
    assert a == D.batch_id_for("one/b.npz", "sha-1")  # stable
    others = {
        D.batch_id_for("two/b.npz", "sha-1"),
        D.batch_id_for("one/b.csv", "sha-1"),
        D.batch_id_for("one/b.npz", "sha-2"),
        D.batch_id_for("one__b.npz", "sha-1"),
    }
    assert a not in others and len(others) == 4  # folder, suffix, content and look-alike keys all differ
    assert a.startswith("one__b.npz-")
    from tasks.data.quarantine import check_batch_id

    check_batch_id(D.batch_id_for("x" * 300 + "/ü b.npz", "s"))  # always a valid store segment
    assert D.name_fits("2026-12-01/batch_1.npz") and not D.name_fits("bad name.npz") and not D.name_fits(".x/b.npz")
    assert D.is_batch_file("a/b.PARQUET") and not D.is_batch_file("a/b.npz.labels.json")


def test_s3_listing_sizes_refusals_and_missing_bucket(s3_store_config):
    from tasks.store.backends import _s3_for

    cfg = s3_store_config
    bucket = cfg.uri.split("/")[2]
    backend, _ = _s3_for(f"s3://{bucket}", cfg)
    small, big = _npz(np.zeros((20, 1, 8, 8), np.float32)), _npz(np.zeros((400, 1, 8, 8), np.float32))
    for key, data in {
        "in/one/b.npz": small,
        "in/two/b.npz": small,
        "in/big.npz": big,
        "in/manifest.json": b"{}",
    }.items():
        backend.put_bytes(key, data)
    # A hidden folder (written with plain boto3: the store's own keys refuse dot segments) is skipped.
    backend.client.put_object(Bucket=bucket, Key="in/.hidden/c.npz", Body=small)
    files = D.list_batch_files(f"s3://{bucket}/in", cfg, max_bytes=len(small) + 10)
    assert [f.key for f in files] == ["big.npz", "one/b.npz", "two/b.npz"]
    assert files[0].refusal[0] == "batch_too_large" and str(len(big)) in files[0].refusal[1]
    found = [D.read_batch_file(f, cfg, len(small) + 10) for f in files[1:]]
    assert found[0].raw == small and found[0].batch_id != found[1].batch_id and found[0].sha256 == found[1].sha256
    assert D.list_batch_files(f"s3://{bucket}/empty-prefix", cfg, 100) == []
    with pytest.raises(DataError, match="does not exist"):
        D.list_batch_files("s3://no-such-bucket-3f9a/in", cfg, 100)
