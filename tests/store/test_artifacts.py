"""Runs in the artifact store: manifest last, aborts leave nothing, every read sha256-verified."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import numpy as np
import pytest
import torch

from tasks.errors import IntegrityError, ObjectNotFound, StoreError
from tasks.settings import load_settings
from tasks.store.artifacts import (
    MANIFEST,
    ArtifactStore,
    RunWriter,
    new_run_id,
    package_versions,
    parse_run_id,
    write_run,
)
from tests.store.conftest import flip_one_byte, tiny_model


class RecordingBackend:
    """Wraps a backend and records the order of writes."""

    def __init__(self, inner):
        self.inner = inner
        self.puts: list[str] = []

    def put_bytes(self, key, data, **kw):
        self.puts.append(key)
        return self.inner.put_bytes(key, data, **kw)

    def put_file(self, key, path):
        self.puts.append(key)
        return self.inner.put_file(key, path)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_run_roundtrip_and_manifest(store, tmp_path):
    settings = load_settings(profile="smoke", overrides={"store.secret_access_key": "hunter2-secret"})
    model, spec = tiny_model()
    big = tmp_path / "features.bin"
    big.write_bytes(np.arange(3_000_000, dtype=np.int32).tobytes())  # 12 MB: multipart on S3
    with store.begin_run("training") as w:
        w.put_bytes("raw.bin", b"\x00\x01\x02")
        w.put_json("metrics.json", {"accuracy": np.float32(0.75), "per_class": np.arange(3)})
        w.put_npz("reference.npz", x=np.ones((4, 2), np.float32), y=np.arange(4))
        w.put_model(spec, model)
        w.put_file("features.bin", big)
        assert store.list_runs() == []  # not visible before its manifest exists
        man = w.commit(
            {
                "config": settings,
                "data_fingerprint": "abc123",
                "metrics": {"accuracy": 0.75},
                "parent_model": {"model": "digits", "version": 2},
                "seed": 1337,
            }
        )
    rid = w.run_id
    assert man["run_id"] == rid and store.list_runs() == [rid] and store.list_runs("training") == [rid]
    assert store.list_runs("drift") == []
    # provenance
    assert man["data_fingerprint"] == "abc123" and man["seed"] == 1337 and man["parent_model"]["version"] == 2
    assert man["config"]["training"]["epochs"] == 12
    assert man["config"]["store"]["secret_access_key"] == "**********"
    assert "hunter2-secret" not in json.dumps(store.manifest(rid))
    pv = man["package_versions"]
    assert {"python", "driftloop", "torch", "numpy", "prefect", "ray", "flwr", "boto3"} <= set(pv)
    assert pv["numpy"] == np.__version__
    assert man["git_revision"] is None or re.fullmatch(r"[0-9a-f]{40}", man["git_revision"])
    assert dt.datetime.fromisoformat(man["created_at"]).tzinfo is not None
    assert set(man["objects"]) == {
        "raw.bin",
        "metrics.json",
        "reference.npz",
        "model.json",
        "model.safetensors",
        "features.bin",
    }
    assert man["objects"]["features.bin"]["size"] == 12_000_000
    # reads
    assert store.get_bytes(rid, "raw.bin") == b"\x00\x01\x02"
    assert store.get_json(rid, "metrics.json") == {"accuracy": 0.75, "per_class": [0, 1, 2]}
    arrays = store.get_npz(rid, "reference.npz")
    assert arrays["x"].shape == (4, 2) and arrays["y"].tolist() == [0, 1, 2, 3]
    sd = store.get_state_dict(rid, "model.safetensors")
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    out = store.get_file(rid, "features.bin", tmp_path / "dl" / "features.bin")
    assert out.read_bytes() == big.read_bytes()
    assert store.verify_run(rid)["run_id"] == rid
    assert store.manifest(rid) == man


def test_manifest_is_written_last(store):
    rec = RecordingBackend(store.backend)
    s = ArtifactStore(rec)
    with s.begin_run("training") as w:
        w.put_bytes("a.bin", b"a")
        w.put_json("b.json", {"b": 1})
        w.commit({})
    assert rec.puts[-1] == f"runs/{w.run_id}/{MANIFEST}" and len(rec.puts) == 3
    with pytest.raises(StoreError, match="committed"):
        w.put_bytes("late.bin", b"x")
    # a manifest is write-once: a second writer of the same run id cannot replace it
    with pytest.raises(StoreError, match="already has a manifest"):
        RunWriter(s, "training", w.run_id).commit({"metrics": {"forged": 1}})
    assert s.manifest(w.run_id)["metrics"] == {}


def test_exception_in_block_deletes_the_partial_run(store):
    with pytest.raises(RuntimeError, match="training blew up"):
        with store.begin_run("training") as w:
            w.put_bytes("model.safetensors", b"partial")
            w.put_npz("reference.npz", x=np.zeros(3))
            raise RuntimeError("training blew up")
    assert w.state == "aborted"
    assert store.backend.list(f"runs/{w.run_id}/") == [] and store.list_runs() == []
    with pytest.raises(ObjectNotFound, match=w.run_id):
        store.manifest(w.run_id)


def test_leaving_without_commit_is_an_error_and_cleans_up(store):
    with pytest.raises(StoreError, match="without commit"):
        with store.begin_run("training") as w:
            w.put_bytes("a.bin", b"a")
    assert store.backend.list("runs/") == []


def test_write_run_failing_midway_leaves_nothing(store):
    with pytest.raises(StoreError, match="JSON"):
        write_run(store, "training", {"a.bin": b"a", "bad.json": {"x": object()}}, {"metrics": {}})
    assert store.backend.list() == []
    man = write_run(store, "training", {"a.bin": b"a", "m.json": {"x": 1}, "r.npz": {"x": np.ones(2)}})
    assert store.list_runs() == [man["run_id"]] and store.get_json(man["run_id"], "m.json") == {"x": 1}


def test_sha256_mismatch_raises_integrity_error_naming_the_key(store, tmp_path):
    man = write_run(store, "training", {"weights.bin": b"0123456789" * 100})
    rid = man["run_id"]
    key = f"runs/{rid}/weights.bin"
    flip_one_byte(store.backend, key, at=500)
    with pytest.raises(IntegrityError) as ei:
        store.get_bytes(rid, "weights.bin")
    assert store.backend.url(key) in str(ei.value)
    dest = tmp_path / "downloads" / "weights.bin"
    with pytest.raises(IntegrityError, match="weights.bin"):
        store.get_file(rid, "weights.bin", dest)
    assert list(dest.parent.iterdir()) == []  # nothing unverified was left
    with pytest.raises(IntegrityError):
        store.verify_run(rid)


def test_a_corrupted_multipart_download_fails_naming_the_key_and_leaves_nothing(store, tmp_path):
    """On S3 the 12 MiB object downloads in 5 MiB parts written out of order; the sha256 computed
    as they land still catches one flipped byte in the last part."""
    import hashlib
    import os

    data = os.urandom(12 * 1024 * 1024 + 3)
    rid = write_run(store, "training", {"big.bin": data})["run_id"]
    dest = tmp_path / "downloads" / "big.bin"
    store.get_file(rid, "big.bin", dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    dest.unlink()
    key = f"runs/{rid}/big.bin"
    flip_one_byte(store.backend, key, at=len(data) - 10)
    with pytest.raises(IntegrityError) as ei:
        store.get_file(rid, "big.bin", dest)
    assert store.backend.url(key) in str(ei.value)
    assert list(dest.parent.iterdir()) == []  # no partial or unverified file


def test_missing_object_and_run_are_named(store):
    man = write_run(store, "training", {"a.bin": b"a"})
    with pytest.raises(ObjectNotFound, match="no object 'b.bin'"):
        store.get_bytes(man["run_id"], "b.bin")
    with pytest.raises(ObjectNotFound, match="training-20000101T000000-abcdef"):
        store.get_bytes("training-20000101T000000-abcdef", "a.bin")


def test_writer_refuses_bad_input_before_writing(store):
    w = store.begin_run("drift")
    with pytest.raises(StoreError, match="dtype object"):
        w.put_npz("ref.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(StoreError, match="reserved for the store"):
        w.put_bytes(MANIFEST, b"{}")
    w.put_bytes("a.bin", b"a")
    with pytest.raises(StoreError, match="already written"):
        w.put_bytes("a.bin", b"b")
    with pytest.raises(StoreError, match="set by the store"):
        w.commit({"objects": {}})
    with pytest.raises(StoreError, match="safetensors"):
        w.put_model({"model": {}}, b"not safetensors at all")
    w.abort()
    assert store.backend.list() == []


def test_npz_with_pickled_objects_is_refused_on_read(store):
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"a": 1}], dtype=object))  # numpy pickles object arrays
    man = write_run(store, "drift", {"ref.npz": buf.getvalue()})
    with pytest.raises(StoreError, match="pickle"):
        store.get_npz(man["run_id"], "ref.npz")


def test_run_ids_sort_by_time_and_list_runs_filters(store):
    t0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    ids = [new_run_id("training", t0 + dt.timedelta(seconds=s)) for s in (30, 0, 10)]
    assert re.fullmatch(r"training-20300102T030435-[0-9a-f]{6}", ids[0])
    assert parse_run_id(ids[0]) == ("training", "20300102T030435")
    assert len({new_run_id("x") for _ in range(200)}) == 200
    for rid in ids:
        write_run(store, "training", {"a.bin": b"a"}, run_id=rid)
    drift = write_run(store, "drift-check", {"a.bin": b"a"}, run_id=new_run_id("drift-check", t0))["run_id"]
    assert store.list_runs("training") == sorted(ids)
    assert store.list_runs("drift-check") == [drift]
    assert store.list_runs("drift") == []  # a kind is matched exactly, not as a prefix
    assert store.list_runs()[0] in (drift, sorted(ids)[0])
    with pytest.raises(StoreError, match="already has objects"):
        store.begin_run("training", ids[0])
    with pytest.raises(StoreError, match="not of kind"):
        store.begin_run("drift", ids[0])
    with pytest.raises(StoreError, match="invalid run kind"):
        store.begin_run("Bad Kind")
    store.delete_run(ids[0])
    assert ids[0] not in store.list_runs() and store.backend.list(f"runs/{ids[0]}/") == []


def test_package_versions_come_from_metadata():
    pv = package_versions()
    assert pv["python"].count(".") == 2 and pv["torch"].startswith(torch.__version__.split("+")[0])


def test_put_file_records_the_sha256_of_a_multipart_upload(store, tmp_path):
    """11 MiB + 1: three 5 MiB parts on S3; the manifest's sha256 and size are the file's."""
    import hashlib
    import os

    data = os.urandom(11 * 1024 * 1024 + 1)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    with store.begin_run("training") as w:
        entry = w.put_file("big.bin", src)
        man = w.commit()
    assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert man["objects"]["big.bin"] == entry
    store.verify_run(man["run_id"])


def test_a_failed_multipart_upload_leaves_no_manifest_entry_and_no_parts(s3_store_config, tmp_path):
    """The 3rd part fails: the writer records nothing for the file, the block's abort removes the
    run, and the multipart upload was aborted (no pending uploads)."""
    import os

    store = ArtifactStore.from_config(s3_store_config.model_copy(update={"multipart_chunk_bytes": 5 * 1024 * 1024}))
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(16 * 1024 * 1024))

    def fail_third(params, **kw):
        if params.get("PartNumber") == 3:
            raise RuntimeError("injected failure on part 3")

    store.backend.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_third)
    writer = None
    with pytest.raises(StoreError, match="part 3"):
        with store.begin_run("training") as w:
            writer = w
            w.put_bytes("small.json", b"{}")
            w.put_file("big.bin", src)
    assert writer is not None and "big.bin" not in writer.objects
    assert store.backend.list() == [] and store.list_runs() == []
    client = store.backend.client
    assert client.list_multipart_uploads(Bucket=store.backend.bucket).get("Uploads", []) == []
