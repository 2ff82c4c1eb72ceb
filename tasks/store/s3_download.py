"""A lean parallel ranged S3 download that hashes the object (sha256) while its bytes stream in.

Why not s3transfer's ``download_fileobj`` (issue 16): on a machine whose cores are busy (the S3
server on the same host, training beside it) wall time follows CPU time, and s3transfer spends a
lot of it per byte: a future and an IO-executor hop per 256 KiB, a ``bytes`` object per read, a
re-ordering queue for a non-seekable writer. A verified download also hashes every byte, so to keep
up with plain ``download_file`` it must spend less than s3transfer on the transfer itself.

Here ``concurrency`` threads fetch the parts in order (``Range`` GETs of ``part_bytes``; the first
one also tells the size, so there is no HEAD) and read each body with http.client's ``readinto``
into a reusable 256 KiB buffer (urllib3's ``readinto`` would read into a new ``bytes`` and copy it),
then ``os.pwrite`` it at its offset (cheaper than faulting pages of an ``mmap`` in). The worker
whose slice is next in order hashes it from that buffer while it is still in cache (hashlib
releases the GIL); bytes that arrived ahead of the hash (another part) are hashed by the calling
thread from the page cache (``preadv``) once the prefix before them is complete. Nothing is held in
memory but one buffer per thread. botocore's own response checksums (CRC, when a server sends them
for a ranged GET) are not computed: the body is read beneath them, and the caller verifies the
sha256, which is stronger.

``If-Match`` on the first response's ETag makes an object replaced mid-download fail (412) instead
of mixing versions. A body that breaks off is resumed from its last byte, up to ``max_attempts``
times per part; errors before the body (status, connection) are botocore's to retry. Any failure
stops the other threads; the caller owns the file and removes it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
from collections.abc import Callable
from typing import Any

from tasks.errors import StoreError

# readinto granularity: how often the hasher learns of new bytes of the part it waits on.
# 256 KiB, s3transfer's own read size: with 1 MiB reads, the first downloads after a large upload
# (the server and the page cache still busy with it) cost 2.5-3.5x the CPU (0.3-0.45 s per 100 MB
# against 0.13) in the part threads' reads and writes; with 256 KiB they cost the same as later ones.
_SLICE = 1 << 18


class ShortRead(Exception):
    """A part's body ended (or was answered for another range) before its last byte."""


class LocalWriteError(StoreError):
    """Writing the downloaded bytes to the local file failed (not retried: the disk will not heal)."""


def _retryable() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

    return (
        ShortRead,
        OSError,  # ConnectionError, socket timeouts
        http.client.HTTPException,  # IncompleteRead
        ProtocolError,
        Urllib3ReadTimeout,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )


def _total_size(resp: dict[str, Any]) -> int | None:
    """The object's size from ``Content-Range: bytes a-b/total`` (None: the server sent it all)."""
    cr = resp.get("ContentRange")
    if not cr:
        return None
    total = str(cr).rpartition("/")[2]
    if not total.isdigit():
        raise ShortRead(f"unusable Content-Range {cr!r}")
    return int(total)


def _range_start(resp: dict[str, Any]) -> int:
    cr = resp.get("ContentRange")
    return int(str(cr).split()[1].split("-")[0]) if cr else 0


class _Body:
    """Reads a GetObject body into a buffer: http.client's ``readinto`` under urllib3 when it is there
    (urllib3's own ``readinto`` reads into a new ``bytes`` and copies), else ``read`` and a copy."""

    def __init__(self, resp: dict[str, Any]):
        self.resp = resp
        self.body = resp["Body"]
        raw = getattr(self.body, "_raw_stream", None)
        fp = getattr(raw, "_fp", None)
        self.raw = raw
        self.fp = fp if isinstance(fp, http.client.HTTPResponse) else None

    def readinto(self, view: memoryview) -> int:
        if self.fp is not None:
            return self.fp.readinto(view)
        data = self.body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def done(self) -> None:
        """The body was read to its end: hand the connection back to the pool."""
        if self.fp is not None and self.raw is not None:
            self.raw.release_conn()
        else:
            self.body.close()

    def close(self) -> None:
        """The body is abandoned: drop its connection (it still carries unread bytes)."""
        if self.raw is not None:
            self.raw.close()
        else:
            self.body.close()


def _pwrite_all(fd: int, data: memoryview, pos: int, f: Any) -> None:
    try:
        while data:
            w = os.pwrite(fd, data, pos)
            data, pos = data[w:], pos + w
    except OSError as e:
        raise LocalWriteError(f"writing {f.name}: {e}") from None


def ranged_download(
    fetch: Callable[[int, int | None, str | None], dict[str, Any]],
    f: Any,
    *,
    part_bytes: int,
    concurrency: int,
    max_attempts: int,
) -> tuple[str, int]:
    """Download into the open file ``f`` (``w+b``); returns (sha256 hex, size).

    ``fetch(first, last, etag)`` is one GetObject of bytes ``first..last`` (inclusive; ``last`` None:
    no Range header) with ``If-Match: etag`` when given; it raises what botocore raises.
    """
    from botocore.exceptions import ClientError

    try:
        first = fetch(0, part_bytes - 1, None)
    except ClientError as e:
        # Any Range on a zero-byte object is unsatisfiable (416): fetch it whole.
        if e.response.get("Error", {}).get("Code") != "InvalidRange":
            raise
        first = fetch(0, None, None)
    size = _total_size(first)
    if size is None:  # no Range applied (zero bytes, or a server that ignores Range): one part
        size = int(first["ContentLength"])
    first_len = int(first["ContentLength"])
    if size == 0:
        _Body(first).done()
        return hashlib.sha256().hexdigest(), 0
    etag = first.get("ETag")
    bounds = [(0, first_len)] + [(s, min(s + part_bytes, size)) for s in range(first_len, size, part_bytes)]
    fd = f.fileno()
    h = hashlib.sha256()
    filled = [b[0] for b in bounds]  # absolute offset up to which each part is in the file
    cond = threading.Condition()
    # hashed: bytes [0, hashed) are in h; busy: a thread is hashing [hashed, ...) now.
    st = {"next": 1, "hashed": 0, "busy": False}
    errors: list[BaseException] = []
    abort = threading.Event()
    retryable = _retryable()

    def read_part(i: int, resp: dict[str, Any] | None, buf: bytearray, mv: memoryview) -> None:
        start, end = bounds[i]
        attempts = 0
        while filled[i] < end:
            if resp is None:
                resp = fetch(filled[i], end - 1, etag)
            body = _Body(resp)
            resp = None
            try:
                if _range_start(body.resp) != filled[i] or int(body.resp["ContentLength"]) != end - filled[i]:
                    got = body.resp.get("ContentRange") or f"{body.resp['ContentLength']} bytes"
                    raise ShortRead(f"asked for bytes {filled[i]}-{end - 1}, got {got}")
                while filled[i] < end:
                    if abort.is_set():
                        body.close()
                        return
                    pos = filled[i]
                    n = body.readinto(mv[: min(len(buf), end - pos)])
                    if not n:
                        raise ShortRead(f"body ended at byte {pos} of {start}-{end - 1}")
                    _pwrite_all(fd, mv[:n], pos, f)
                    with cond:
                        filled[i] = pos + n
                        inline = not st["busy"] and st["hashed"] == pos
                        st["busy"] = st["busy"] or inline
                        cond.notify_all()
                    if inline:  # the next bytes to hash: from this buffer, while still in cache
                        h.update(mv[:n])
                        with cond:
                            st["hashed"], st["busy"] = pos + n, False
                            cond.notify_all()
                body.done()
            except retryable:
                body.close()
                attempts += 1
                if attempts >= max_attempts:
                    raise

    def worker(resp: dict[str, Any] | None) -> None:
        buf = bytearray(_SLICE)
        mv = memoryview(buf)
        try:
            while not abort.is_set():
                with cond:
                    if resp is not None:
                        i = 0
                    else:
                        i = st["next"]
                        st["next"] += 1
                if i >= len(bounds):
                    return
                read_part(i, resp, buf, mv)
                resp = None
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            with cond:
                errors.append(e)
                abort.set()
                cond.notify_all()

    def available() -> int:
        """End of the contiguous downloaded prefix that starts at ``hashed`` (caller holds cond)."""
        pos = st["hashed"]
        for i in range(part_of(pos), len(bounds)):
            if filled[i] < bounds[i][1]:
                return filled[i]
        return size

    def part_of(pos: int) -> int:
        return min(len(bounds) - 1, 0 if pos < first_len else 1 + (pos - first_len) // part_bytes)

    threads = [
        threading.Thread(target=worker, args=(first if t == 0 else None,), name=f"s3-part-{t}", daemon=True)
        for t in range(max(1, min(concurrency, len(bounds))))
    ]
    buf = bytearray(_SLICE)
    mv = memoryview(buf)
    try:
        for t in threads:
            t.start()
        # Catch up on what no worker could hash from its buffer (bytes that arrived ahead of the
        # hash): read back from the page cache, in order, as soon as the prefix before them is there.
        while True:
            with cond:
                while not errors and (st["busy"] or available() <= st["hashed"]) and st["hashed"] < size:
                    cond.wait(0.5)
                if errors:
                    raise errors[0]
                if st["hashed"] >= size:
                    break
                pos, avail = st["hashed"], available()
                st["busy"] = True
            while pos < avail:
                n = os.preadv(fd, [mv[: min(len(buf), avail - pos)]], pos)
                if not n:
                    raise LocalWriteError(f"reading back {f.name}: ended at byte {pos}, {avail} written")
                h.update(mv[:n])
                pos += n
            with cond:
                st["hashed"], st["busy"] = avail, False
                cond.notify_all()
    except BaseException:
        abort.set()
        raise
    finally:
        for t in threads:
            t.join()
    return h.hexdigest(), size
