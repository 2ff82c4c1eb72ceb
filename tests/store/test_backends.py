"""The two storage backends behave the same: keys, conditional writes, errors, no leaked secrets."""

from __future__ import annotations

import os
import threading
import traceback

import pytest

from tasks.errors import ConfigError, ObjectNotFound, PreconditionFailed, StoreError
from tasks.store.access import list_uri, open_backend, pyarrow_filesystem, read_uri, write_uri
from tasks.store.config import StoreConfig
from tasks.store.local import LocalBackend
from tasks.store.uri import parse_store_uri


@pytest.fixture
def backend(store_cfg):
    return open_backend(store_cfg)


def test_put_get_list_delete(backend):
    backend.put_bytes("a/b/one.bin", b"1")
    backend.put_bytes("a/b/two.bin", b"22")
    backend.put_bytes("a/c.txt", b"333")
    backend.put_bytes("z.json", b"{}")
    assert backend.get_bytes("a/b/two.bin") == b"22"
    assert backend.exists("a/c.txt") and not backend.exists("a/nope")
    assert backend.list() == ["a/b/one.bin", "a/b/two.bin", "a/c.txt", "z.json"]
    assert backend.list("a/b/") == ["a/b/one.bin", "a/b/two.bin"]
    assert backend.list("a/b/t") == ["a/b/two.bin"]  # a plain string prefix, not only directories
    backend.put_bytes("a/c.txt", b"overwritten")
    assert backend.get_bytes("a/c.txt") == b"overwritten"
    backend.delete("a/b/one.bin")
    backend.delete("a/b/one.bin")  # deleting a missing key is not an error
    assert backend.list("a/") == ["a/b/two.bin", "a/c.txt"]
    assert backend.url("z.json").endswith("/z.json")


def test_missing_key_names_the_uri(backend):
    with pytest.raises(ObjectNotFound) as ei:
        backend.get_bytes("runs/nothing/here.bin")
    assert backend.url("runs/nothing/here.bin") in str(ei.value)


def test_if_absent_is_write_once(backend):
    backend.put_bytes("once.json", b"first", if_absent=True)
    with pytest.raises(PreconditionFailed):
        backend.put_bytes("once.json", b"second", if_absent=True)
    assert backend.get_bytes("once.json") == b"first"


def test_if_match_compare_and_swap(backend):
    backend.put_bytes("ptr.json", b"v1")
    _, token = backend.get_with_token("ptr.json")
    backend.put_bytes("ptr.json", b"v2", if_match=token)
    with pytest.raises(PreconditionFailed):  # the token is stale now
        backend.put_bytes("ptr.json", b"v3", if_match=token)
    assert backend.get_bytes("ptr.json") == b"v2"
    with pytest.raises(PreconditionFailed):  # nothing to match
        backend.put_bytes("absent.json", b"x", if_match=token)


def test_concurrent_compare_and_swap_has_one_winner(backend):
    backend.put_bytes("ptr.json", b"start")
    _, token = backend.get_with_token("ptr.json")
    barrier = threading.Barrier(6)
    wins, losses = [], []

    def writer(i):
        barrier.wait()
        try:
            backend.put_bytes("ptr.json", f"writer-{i}".encode(), if_match=token)
            wins.append(i)
        except PreconditionFailed:
            losses.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 5
    assert backend.get_bytes("ptr.json") == f"writer-{wins[0]}".encode()


def test_file_transfer_roundtrip(backend, tmp_path):
    # 11 MiB: three 5 MiB parts on S3 (the fixture's multipart chunk size)
    src = tmp_path / "big.bin"
    payload = os.urandom(11 * 1024 * 1024)
    src.write_bytes(payload)
    backend.put_file("files/big.bin", src)
    dest = tmp_path / "out" / "big.bin"
    backend.get_file("files/big.bin", dest)
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["big.bin"]  # no temporary left
    with pytest.raises(ObjectNotFound):
        backend.get_file("files/absent.bin", tmp_path / "absent.bin")
    assert not (tmp_path / "absent.bin").exists()


def test_put_file_of_a_missing_local_file_names_it(backend, tmp_path):
    missing = tmp_path / "nope.bin"
    with pytest.raises(ObjectNotFound, match="nope.bin") as ei:
        backend.put_file("files/x.bin", missing)
    assert "local file" in str(ei.value) and backend.url("files/x.bin") in str(ei.value)
    assert backend.list() == []


def test_unsafe_keys_are_refused(backend):
    for key in ["", "/abs", "a//b", "a/../b", "a/./b", ".hidden", "a/.tmp-x", "a\\b"]:
        with pytest.raises(StoreError, match="invalid store key"):
            backend.put_bytes(key, b"x")
    assert backend.list() == []


def test_local_write_is_atomic_when_rename_fails(tmp_path, monkeypatch):
    backend = LocalBackend(tmp_path / "root")
    backend.put_bytes("k.bin", b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError, match="k.bin"):
        backend.put_bytes("k.bin", b"new")
    monkeypatch.undo()
    assert backend.get_bytes("k.bin") == b"old"
    assert sorted(p.name for p in (tmp_path / "root").iterdir() if p.name != ".locks") == ["k.bin"]


def test_missing_bucket_names_the_bucket(s3_store_config):
    # (No write here: SeaweedFS creates a missing bucket on an admin's PUT.)
    cfg = s3_store_config.model_copy(update={"uri": "s3://no-such-bucket-x1/prefix"})
    backend = open_backend(cfg)
    for op in (
        lambda: backend.get_bytes("runs/a/manifest.json"),
        lambda: backend.list("runs/"),
        lambda: read_uri("s3://no-such-bucket-x1/data/batch.npz", cfg),
    ):
        with pytest.raises(ObjectNotFound, match="no-such-bucket-x1"):
            op()
    with pytest.raises(ObjectNotFound, match="bucket 'no-such-bucket-x1' does not exist"):
        backend.get_file("x.bin", "/tmp/driftloop-never-written.bin")


@pytest.mark.parametrize("which", ["bad-access-key", "bad-secret"])
def test_credentials_never_appear_in_errors_or_reprs(s3_server, s3_bucket, which, tmp_path):
    access = "AKIDLEAKCHECK1234" if which == "bad-access-key" else s3_server.access_key
    secret = "SECRETLEAKCHECK-5678-do-not-print"
    cfg = StoreConfig(
        uri=f"s3://{s3_bucket}/p",
        endpoint_url=s3_server.endpoint_url,
        region="us-east-1",
        access_key_id=access,
        secret_access_key=secret,
        max_attempts=1,
    )
    backend = open_backend(cfg)
    texts = [repr(cfg), str(cfg), cfg.model_dump_json(), repr(backend)]
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * (cfg.multipart_chunk_bytes + 1))
    for op in (
        lambda: backend.put_bytes("k", b"x"),
        lambda: backend.put_file("k", src),
        lambda: backend.get_bytes("k"),
        lambda: backend.list(),
        lambda: backend.exists("k"),
    ):
        with pytest.raises(StoreError) as ei:
            op()
        assert "403" in str(ei.value) and "credentials" in str(ei.value)
        texts += [str(ei.value), repr(ei.value), "".join(traceback.format_exception(ei.value))]
    joined = "\n".join(texts)
    assert secret not in joined
    if which == "bad-access-key":
        assert access not in joined


def test_store_uri_forms(tmp_path):
    assert parse_store_uri("s3://bkt/a/b/") == ("s3", "bkt", "a/b/")
    assert parse_store_uri("s3://bkt") == ("s3", "bkt", "")
    assert parse_store_uri(f"file://{tmp_path}") == ("file", str(tmp_path), "")
    assert parse_store_uri("rel/dir")[1] == os.path.abspath("rel/dir")
    for bad in ("gs://bkt/x", "s3:///nobucket", "file://host/x", ""):
        with pytest.raises(ConfigError):
            parse_store_uri(bad)


def test_uri_helpers(store_cfg, tmp_path):
    """read_uri / write_uri / list_uri on local paths, file:// URIs and s3:// URIs."""
    scheme = parse_store_uri(store_cfg.uri)[0]
    base = f"s3://{parse_store_uri(store_cfg.uri)[1]}/incoming" if scheme == "s3" else str(tmp_path / "incoming")
    write_uri(f"{base}/b.npz", b"B", store_cfg)
    write_uri(f"{base}/a.npz", b"A", store_cfg)
    write_uri(f"{base}/sub/c.csv", b"C", store_cfg)
    assert read_uri(f"{base}/a.npz", store_cfg) == b"A"
    assert list_uri(base, store_cfg) == [f"{base}/a.npz", f"{base}/b.npz", f"{base}/sub/c.csv"]
    assert list_uri(f"{base}/b.npz", store_cfg) == [f"{base}/b.npz"]
    with pytest.raises(ObjectNotFound, match="missing.npz"):
        read_uri(f"{base}/missing.npz", store_cfg)
    if scheme == "file":
        as_uri = (tmp_path / "incoming").as_uri()
        assert list_uri(as_uri, store_cfg)[0] == f"{as_uri}/a.npz"
        assert read_uri(f"{as_uri}/sub/c.csv", store_cfg) == b"C"
        with pytest.raises(ObjectNotFound):
            list_uri(str(tmp_path / "nowhere"), store_cfg)


def test_pyarrow_filesystem_reads_what_the_store_wrote(store_cfg):
    fs, path = pyarrow_filesystem(store_cfg, "tune")
    with fs.open_output_stream(f"{path}/probe.txt") as f:
        f.write(b"hello")
    with fs.open_input_stream(f"{path}/probe.txt") as f:
        assert f.read() == b"hello"
    assert open_backend(store_cfg).get_bytes("tune/probe.txt") == b"hello"


# The S3 download (tasks/store/s3_download.py): parallel ranged GETs, hashed as they stream in.
CHUNK = 5 * 1024 * 1024  # the smallest multipart chunk StoreConfig allows


@pytest.fixture
def s3_backend(s3_store_config):
    return open_backend(s3_store_config.model_copy(update={"multipart_chunk_bytes": CHUNK, "max_concurrency": 4}))


def _record_fetches(monkeypatch, backend, fail_on: int | None = None, exc: Exception | None = None):
    """Wrap the part fetch: record (first byte, last byte, thread) per call; raise ``exc`` on call ``fail_on``."""
    calls: list[tuple[int, int | None, str]] = []
    real = type(backend)._fetch_range

    def fetch(self, k, first, last, etag):
        calls.append((first, last, threading.current_thread().name))
        if fail_on is not None and len(calls) == fail_on:
            raise exc or RuntimeError("injected")
        return real(self, k, first, last, etag)

    monkeypatch.setattr(type(backend), "_fetch_range", fetch)
    return calls


@pytest.mark.parametrize(
    "size, gets",
    [(0, 2), (1, 1), (CHUNK - 1, 1), (CHUNK, 1), (CHUNK + 1, 2), (3 * CHUNK + 12345, 4)],
    ids=["empty", "one-byte", "chunk-1", "chunk", "chunk+1", "four-parts"],
)
def test_s3_download_in_ranged_parts_returns_the_bytes_and_their_sha256(s3_backend, tmp_path, monkeypatch, size, gets):
    """One GET per chunk (a single GET below one chunk; an empty object answers any Range with 416,
    then comes whole), parts fetched in parallel, the sha256 and size those of the bytes written."""
    import hashlib

    payload = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    s3_backend.put_file("files/obj.bin", src)
    calls = _record_fetches(monkeypatch, s3_backend)
    dest = tmp_path / "out" / "obj.bin"
    digest, got = s3_backend.get_file("files/obj.bin", dest)
    assert (digest, got) == (hashlib.sha256(payload).hexdigest(), size)
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["obj.bin"]
    assert len(calls) == gets
    if gets > 2:
        starts = sorted(c[0] for c in calls)
        assert starts == list(range(0, size, CHUNK))
        assert len({c[2] for c in calls if c[0] > 0}) >= 2  # parts after the first: not one thread after the other


def test_s3_download_failing_part_leaves_no_file(s3_backend, tmp_path, monkeypatch):
    """The 3rd part's GET fails (after botocore's retries): a StoreError naming the object, and
    neither the file nor its temporary is left."""
    from botocore.exceptions import ConnectionClosedError

    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(4 * CHUNK + 7))
    s3_backend.put_file("files/big.bin", src)
    _record_fetches(monkeypatch, s3_backend, fail_on=3, exc=ConnectionClosedError(endpoint_url="http://x"))
    out = tmp_path / "out"
    with pytest.raises(StoreError, match="download") as ei:
        s3_backend.get_file("files/big.bin", out / "big.bin")
    assert s3_backend.url("files/big.bin") in str(ei.value) and "ConnectionClosedError" in str(ei.value)
    assert list(out.iterdir()) == []


def test_s3_download_resumes_a_broken_body_from_its_last_byte(s3_backend, tmp_path, monkeypatch):
    """A body that breaks off mid-part is fetched again from the first byte not yet written; one
    that keeps breaking gives up after max_attempts with no file left."""
    import hashlib

    from tasks.store import s3_download

    payload = os.urandom(3 * CHUNK + 5)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    s3_backend.put_file("files/big.bin", src)
    calls = _record_fetches(monkeypatch, s3_backend)
    real = s3_download._Body.readinto
    broken = {"times": 1, "at_read": 2}  # how many bodies break, and on which read (2: 1 MiB in)

    def readinto(self, view):
        self.reads = getattr(self, "reads", 0) + 1
        if self.reads == broken["at_read"] and broken["times"] > 0:
            broken["times"] -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return real(self, view)

    monkeypatch.setattr(s3_download._Body, "readinto", readinto)
    dest = tmp_path / "out" / "big.bin"
    assert s3_backend.get_file("files/big.bin", dest) == (hashlib.sha256(payload).hexdigest(), len(payload))
    assert dest.read_bytes() == payload
    assert len(calls) == 5  # 4 parts and one resumed
    assert any(first % CHUNK for first, _, _ in calls)  # resumed mid-part, not from the part's start

    broken.update(times=10**6, at_read=1)  # every body breaks before its first byte
    dest2 = tmp_path / "out2" / "big.bin"
    with pytest.raises(StoreError, match="ConnectionResetError"):
        s3_backend.get_file("files/big.bin", dest2)
    assert list(dest2.parent.iterdir()) == []


def test_s3_download_of_an_object_replaced_midway_fails(s3_backend, tmp_path, monkeypatch):
    """Later parts carry If-Match on the first part's ETag: an object overwritten during the
    download fails (412) instead of mixing two versions."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(2 * CHUNK + 1))
    s3_backend.put_file("files/big.bin", src)
    real = type(s3_backend)._fetch_range

    def fetch(self, k, first, last, etag):
        resp = real(self, k, first, last, etag)
        if first == 0:
            s3_backend.put_bytes("files/big.bin", os.urandom(2 * CHUNK + 1))
        return resp

    monkeypatch.setattr(type(s3_backend), "_fetch_range", fetch)
    dest = tmp_path / "out" / "big.bin"
    with pytest.raises(PreconditionFailed, match="big.bin"):
        s3_backend.get_file("files/big.bin", dest)
    assert list(dest.parent.iterdir()) == []


# The S3 upload (tasks/store/s3_upload.py): one hash pass, a server-verified SHA-256 per part.
def _record_uploads(backend, fail_part: int | None = None):
    """Record each PutObject/UploadPart (part number, thread, requests in flight); raise on part ``fail_part``."""
    calls: list[tuple[str, int, str, int]] = []
    lock = threading.Lock()
    state = {"in_flight": 0}

    def before(params, model, **kw):
        number = params.get("PartNumber", 0)
        if fail_part is not None and number == fail_part:
            raise RuntimeError(f"injected failure on part {number}")
        with lock:
            state["in_flight"] += 1
            calls.append((model.name, number, threading.current_thread().name, state["in_flight"]))

    def after(model, **kw):
        with lock:
            state["in_flight"] -= 1

    events = backend.client.meta.events
    for op in ("PutObject", "UploadPart"):
        events.register(f"before-parameter-build.s3.{op}", before)
        events.register(f"after-call.s3.{op}", after)
    return calls


def _upload_backend(s3_store_config, checksum: str):
    cfg = s3_store_config.model_copy(
        update={"multipart_chunk_bytes": CHUNK, "max_concurrency": 4, "upload_checksum": checksum}
    )
    backend = open_backend(cfg)
    assert backend.upload_checksum == checksum  # (backends are cached per configuration)
    return backend


def _pending_uploads(backend) -> list:
    return backend.client.list_multipart_uploads(Bucket=backend.bucket).get("Uploads", [])


@pytest.mark.parametrize("checksum", ["CRC32", "SHA256"])
@pytest.mark.parametrize(
    "size, parts",
    [(0, 0), (1, 0), (CHUNK, 0), (CHUNK + 1, 2), (3 * CHUNK + 12345, 4)],
    ids=["empty", "one-byte", "one-part-exactly", "part+1", "four-parts"],
)
def test_s3_upload_in_parts_returns_the_sha256_and_stores_a_verified_checksum(
    s3_store_config, tmp_path, size, parts, checksum
):
    """A single PutObject up to one part, else one UploadPart per part (in parallel, at most
    max_concurrency in flight); the returned sha256 and size are the file's, the bytes round-trip,
    the server holds the checksum we sent (of the object, or per part), and no multipart upload is
    left pending."""
    import base64
    import hashlib
    import zlib

    payload = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    s3_backend = _upload_backend(s3_store_config, checksum)
    calls = _record_uploads(s3_backend)
    assert s3_backend.put_file("files/obj.bin", src) == (hashlib.sha256(payload).hexdigest(), size)
    assert s3_backend.get_bytes("files/obj.bin") == payload
    if parts == 0:
        assert [c[:2] for c in calls] == [("PutObject", 0)]
    else:
        assert sorted(c[1] for c in calls) == list(range(1, parts + 1))
        assert {c[0] for c in calls} == {"UploadPart"}
        assert max(c[3] for c in calls) <= 4  # max_concurrency of the fixture
        if parts > 2:
            assert len({c[2] for c in calls}) >= 2  # not one part after the other on one thread
    key = s3_backend._key("files/obj.bin")
    head = s3_backend.client.head_object(Bucket=s3_backend.bucket, Key=key, ChecksumMode="ENABLED")
    stored = head.get(f"Checksum{checksum}")
    assert stored, head  # the server checked and kept the checksum we sent
    if parts == 0:
        digest = hashlib.sha256(payload).digest() if checksum == "SHA256" else zlib.crc32(payload).to_bytes(4, "big")
        assert stored == base64.b64encode(digest).decode()
    else:
        assert stored.endswith(f"-{parts}")  # a checksum of the parts' checksums
    assert _pending_uploads(s3_backend) == []


def test_s3_upload_failing_part_aborts_the_multipart_upload(s3_backend, tmp_path):
    """The 3rd part fails: a StoreError naming the object, no object, no pending multipart upload."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(5 * CHUNK + 3))
    _record_uploads(s3_backend, fail_part=3)
    with pytest.raises(StoreError, match="upload") as ei:
        s3_backend.put_file("files/big.bin", src)
    assert s3_backend.url("files/big.bin") in str(ei.value) and "injected failure on part 3" in str(ei.value)
    assert not s3_backend.exists("files/big.bin")
    assert _pending_uploads(s3_backend) == []


@pytest.mark.parametrize("checksum", ["CRC32", "SHA256"])
@pytest.mark.parametrize("size", [CHUNK - 1, 2 * CHUNK + 9], ids=["single-put", "multipart"])
def test_s3_upload_of_bytes_that_differ_from_the_hashed_ones_is_refused(
    s3_store_config, tmp_path, monkeypatch, checksum, size
):
    """Bytes that change between the hash pass and the send (a file rewritten in place, a flipped
    bit) fail the checksum on the server: the upload fails and is aborted, nothing is stored."""
    from tasks.store import s3_upload

    s3_backend = _upload_backend(s3_store_config, checksum)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    real = s3_upload.FilePart.read
    target = CHUNK if size > CHUNK else 0  # the second part, or the single PUT

    def read(self, amt=-1):
        pos = self.pos
        data = real(self, amt)
        if self.offset == target and pos == 0 and data:  # one bit of the first block
            data = bytes([data[0] ^ 1]) + data[1:]
        return data

    monkeypatch.setattr(s3_upload.FilePart, "read", read)
    with pytest.raises(StoreError, match="BadDigest"):
        s3_backend.put_file("files/big.bin", src)
    assert not s3_backend.exists("files/big.bin")
    assert _pending_uploads(s3_backend) == []


def test_s3_upload_retries_a_part_from_its_first_byte(s3_backend, tmp_path):
    """A connection that breaks after part 2's body was partly read: botocore retries the part,
    rewinding it to the part's first byte (not the file's), and the object is the file."""
    import hashlib

    from botocore.exceptions import ConnectionClosedError

    payload = os.urandom(3 * CHUNK + 77)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    broken: list[int] = []

    def before_send(request, **kw):
        if "partNumber=2" not in request.url:
            return
        if not broken:
            broken.append(len(request.body.read(12345)))
            raise ConnectionClosedError(endpoint_url=request.url)
        if request.body.tell() != 0:  # fail now, not after the server's wait for the missing bytes
            raise RuntimeError(f"retry starts at byte {request.body.tell()} of the part")

    s3_backend.client.meta.events.register("before-send.s3.UploadPart", before_send)
    assert s3_backend.put_file("files/big.bin", src) == (hashlib.sha256(payload).hexdigest(), len(payload))
    assert broken == [12345]
    assert s3_backend.get_bytes("files/big.bin") == payload


def test_s3_upload_keeps_at_most_max_concurrency_parts_in_flight(s3_store_config, tmp_path):
    """Five parts with max_concurrency 2: two at a time, never more (the memory/connection bound)."""
    backend = open_backend(s3_store_config.model_copy(update={"multipart_chunk_bytes": CHUNK, "max_concurrency": 2}))
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(4 * CHUNK + 1))
    calls = _record_uploads(backend)
    backend.put_file("files/big.bin", src)
    assert sorted(c[1] for c in calls) == [1, 2, 3, 4, 5]
    assert max(c[3] for c in calls) <= 2
