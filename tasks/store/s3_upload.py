"""A lean S3 upload: one pass over the file computes its sha256 (for the manifest) and each part's
checksum (for the server), then the parts go out straight from the page cache.

Why not s3transfer's ``upload_file`` (issue 16): on a machine whose cores are busy (the S3 server on
the same host, training beside it) wall time follows CPU time, and the store also needs the file's
sha256. Beside ``upload_file`` that was a second read and a second hash of every byte, on top of
what botocore already spends per part on a plain-HTTP endpoint: a sha256 for the SigV4 payload hash
and a CRC32 for its default request checksum, each read through s3transfer's chunk reader. Here the
file is read once for hashing (1 MiB ``preadv`` into a reused buffer) and each slice feeds both the
file's sha256 and the current part's checksum while it is in cache; the part's checksum goes in an
``x-amz-checksum-*`` header, and botocore computes nothing over the body (the backend's client has
``payload_signing_enabled=False``, and a checksum given by the caller is not recomputed).

Integrity, per part (and for the single PUT of an object no larger than one part): the server
recomputes the checksum over the bytes it received and refuses a mismatch (``BadDigest``; SeaweedFS
4.48, MinIO and AWS S3 do), and the header is covered by the SigV4 signature. ``CRC32`` (the default,
``StoreConfig.upload_checksum``) is the check botocore makes by default; ``SHA256`` also rules out a
deliberate change, at one more sha256 of every byte on each side. Either way the bytes sent are
checked against the bytes that were hashed into the manifest, so a file rewritten between the hash
pass and the send fails its part instead of storing bytes the manifest does not describe (SHA256:
certainly; CRC32: short of a 2^-32 collision). The SigV4 payload hash that is no longer sent is not
checked by SeaweedFS 4.48 (a body altered under a signed payload hash is accepted; a wrong checksum
header is refused). Every later read is verified against the manifest's sha256 by the store.

Sending: each part is a :class:`FilePart`, a seekable window on the open file that botocore reads in
its 128 KiB blocks with ``os.pread`` and rewinds to retry the part; nothing is buffered but those
blocks, so memory is one 1 MiB hash buffer plus ``concurrency`` blocks, whatever the part size. At
most ``concurrency`` parts are in flight (the hash pass waits for a free slot). Any failure aborts
the multipart upload (no object, no pending parts) and re-raises.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

# Hash-pass granularity: large enough to amortise the Python loop, small enough to stay in cache
# between the two hashes that read it.
_SLICE = 1 << 20


class FilePart:
    """Bytes ``[offset, offset + length)`` of an open file, as a seekable read-only stream."""

    def __init__(self, fd: int, offset: int, length: int, name: str = ""):
        self.fd, self.offset, self.length, self.name = fd, offset, length, name
        self.pos = 0

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"FilePart({self.name!r}, offset={self.offset}, length={self.length})"

    def read(self, amt: int | None = -1) -> bytes:
        left = self.length - self.pos
        n = left if amt is None or amt < 0 else min(amt, left)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.offset + self.pos)
        if not data:
            raise OSError(f"{self.name}: file ended at byte {self.offset + self.pos} (truncated while uploading?)")
        self.pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = min(max(0, base + pos), self.length)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


class _Crc32:
    """zlib's CRC32 with hashlib's ``update``/``digest`` (big-endian, as S3 encodes it)."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: Any) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return (self.value & 0xFFFFFFFF).to_bytes(4, "big")


_CHECKSUMS: dict[str, Any] = {"CRC32": _Crc32, "SHA256": hashlib.sha256}


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def upload_file(
    client: Any,
    bucket: str,
    key: str,
    path: str | os.PathLike,
    *,
    part_bytes: int,
    concurrency: int,
    checksum: str = "CRC32",
) -> tuple[str, int]:
    """Upload ``path`` to ``bucket``/``key``; returns (sha256 hex, size) of the bytes uploaded.

    Multipart above ``part_bytes`` (at most ``concurrency`` parts in flight), a single ``PutObject``
    otherwise; every request carries its ``checksum`` (``CRC32`` or ``SHA256``) for the server to
    verify. Raises what botocore raises (or OSError reading the file); a multipart upload that
    fails is aborted first.
    """
    if checksum not in _CHECKSUMS:
        raise ValueError(f"unsupported upload checksum {checksum!r} (one of {sorted(_CHECKSUMS)})")
    new_checksum, header = _CHECKSUMS[checksum], "Checksum" + checksum
    name = str(path)
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        whole = hashlib.sha256()
        buf = bytearray(_SLICE)
        mv = memoryview(buf)

        def hash_part(offset: int, length: int) -> bytes:
            """Feed bytes ``[offset, offset+length)`` to the file's sha256; returns their own checksum."""
            part = new_checksum()
            pos, end = offset, offset + length
            while pos < end:
                n = os.preadv(fd, [mv[: min(_SLICE, end - pos)]], pos)
                if not n:
                    raise OSError(f"{name}: file ended at byte {pos}, expected {size} (truncated while uploading?)")
                chunk = mv[:n]
                whole.update(chunk)
                part.update(chunk)
                pos += n
            return part.digest()

        if size <= part_bytes:
            digest = hash_part(0, size)
            client.put_object(
                Bucket=bucket,
                Key=key,
                Body=FilePart(fd, 0, size, name) if size else b"",
                **{header: _b64(digest)},
            )
            return whole.hexdigest(), size

        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=checksum)["UploadId"]
        slots = threading.BoundedSemaphore(concurrency)
        failed = threading.Event()

        def send(number: int, offset: int, length: int, value: str) -> dict[str, Any]:
            try:
                if failed.is_set():
                    raise RuntimeError("upload abandoned")
                resp = client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=FilePart(fd, offset, length, name),
                    **{header: value},
                )
                return {"PartNumber": number, "ETag": resp["ETag"], header: value}
            except BaseException:
                failed.set()
                raise
            finally:
                slots.release()

        futures: list[Future] = []
        try:
            with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-put") as pool:
                try:
                    for number, offset in enumerate(range(0, size, part_bytes), start=1):
                        length = min(part_bytes, size - offset)
                        value = _b64(hash_part(offset, length))
                        slots.acquire()
                        if failed.is_set():
                            slots.release()
                            break
                        futures.append(pool.submit(send, number, offset, length, value))
                except BaseException:
                    failed.set()
                    raise
            parts = [fut.result() for fut in futures]  # the first failure, in part order
            if len(parts) != -(-size // part_bytes):
                raise RuntimeError(f"{name}: {len(parts)} parts sent of {-(-size // part_bytes)}")
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            _abort(client, bucket, key, upload_id)
            raise
    return whole.hexdigest(), size


def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    """Abort the multipart upload (its parts are deleted); a failure here must not hide the first one."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception:  # noqa: BLE001, S110 - the original error is the one to report
        pass
