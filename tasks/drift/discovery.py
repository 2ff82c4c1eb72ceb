"""Batch discovery for the drift check: which files under ``drift.batches_uri`` are new batches.

One bad file must not break a check, so every file is looked at on its own:

* a batch is identified by its **full key** (its path relative to ``drift.batches_uri``) and the
  **sha256 of its content** (:func:`batch_id_for`): two ``b.npz`` in different folders, or
  ``b.npz`` and ``b.csv``, are two batches, and a file rewritten with new content is a new batch
  (checked again), while the same bytes under the same key are never checked twice;
* batch files are those ending in ``.npz``, ``.parquet`` or ``.csv``; other files (a stream's
  ``manifest.json``, the labels files ``<batch file>.labels.json`` of :mod:`tasks.drift.labels`)
  and hidden files or folders are not batches;
* a batch file is *refused* (quarantined on its own, with a report and no content) when it is a
  symbolic link (never followed: a link could point anywhere on the machine), a FIFO, device or
  socket (reading one could block the check or never end), or larger than
  ``drift.max_batch_bytes`` (the report names its size); a file whose key does not fit the
  batch-name rule (:data:`NAME_RULE`) is quarantined with its content;
* a ``drift.batches_uri`` that does not exist is an error (a typo must not read as "0 new
  batches"). On S3 that is a missing bucket: S3 has no folders, so an empty prefix has 0 batches.

Every check reads (and hashes) every batch file under the URI: cheap for the stream sizes this
loop is built for (hundreds of files of kilobytes to megabytes), and the only way to see a file
rewritten in place with the same size.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath

from tasks.data.rules import RULE_BAD_BATCH_NAME, RULE_BATCH_TOO_LARGE, RULE_NOT_REGULAR_FILE
from tasks.errors import DataError, ObjectNotFound

BATCH_SUFFIXES = (".npz", ".parquet", ".csv")
# Each segment of a batch's key: starts with a letter or digit, then letters, digits, ., _, -.
NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_SEGMENT = re.compile(NAME_RULE)


@dataclass(frozen=True)
class BatchFile:
    """A candidate batch file found by :func:`list_batch_files`.

    ``refusal`` is ``(rule, message)`` when the file is refused before it is read (a link, a
    FIFO/device, too large), else None.
    """

    uri: str
    key: str
    size: int | None
    refusal: tuple[str, str] | None = None


@dataclass(frozen=True)
class FoundBatch:
    """A batch file read and identified: its id, content (None when refused) and any refusal."""

    uri: str
    key: str
    batch_id: str
    sha256: str | None
    size: int | None
    raw: bytes | None
    refusal: tuple[str, str] | None = None


def is_batch_file(key: str) -> bool:
    name = PurePosixPath(key).name
    return not name.startswith(".") and PurePosixPath(name).suffix.lower() in BATCH_SUFFIXES


def name_fits(key: str) -> bool:
    """True when every segment of ``key`` fits :data:`NAME_RULE`."""
    return all(_SEGMENT.match(seg) for seg in key.split("/"))


def batch_id_for(key: str, content_id: str) -> str:
    """The batch id: the key made one readable store segment, plus 16 hex digits of
    sha256(key, content hash). The hash keeps ids apart that the readable part would merge
    (``a/b.npz`` and ``a__b.npz``) and changes when the content changes."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key.replace("/", "__")).strip("._-")[:80] or "batch"
    digest = hashlib.sha256(f"{key}\n{content_id}".encode()).hexdigest()[:16]
    return f"{readable}-{digest}"


def _join(base: str, key: str) -> str:
    return base.rstrip("/") + "/" + key


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (not followed)"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _too_large(size: int, max_bytes: int) -> tuple[str, str]:
    return (RULE_BATCH_TOO_LARGE, f"the file holds {size} bytes, more than drift.max_batch_bytes={max_bytes}")


def list_batch_files(batches_uri: str, store_cfg, max_bytes: int) -> list[BatchFile]:
    """The batch files under ``batches_uri`` (a directory, ``file://`` or ``s3://`` prefix), by key.

    Raises DataError naming the URI when it does not exist (a missing directory or S3 bucket).
    Refused files (see the module docstring) are listed with their ``refusal``.
    """
    from tasks.store.backends import _s3_for, parse_store_uri

    scheme, loc, _ = parse_store_uri(batches_uri)
    out: list[BatchFile] = []
    if scheme == "file":
        if not os.path.isdir(loc):
            raise DataError(f"drift.batches_uri {batches_uri!r} does not exist or is not a directory")
        for dirpath, dirnames, filenames in os.walk(loc):  # os.walk does not follow links by default
            rel_dir = os.path.relpath(dirpath, loc)
            keep = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    continue
                key = d if rel_dir == "." else f"{rel_dir}/{d}"
                if os.path.islink(os.path.join(dirpath, d)):
                    out.append(
                        BatchFile(
                            _join(batches_uri, key),
                            key,
                            None,
                            (RULE_NOT_REGULAR_FILE, "a symbolic link to a folder (not followed)"),
                        )
                    )
                    continue
                keep.append(d)
            dirnames[:] = keep
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not is_batch_file(key):
                    continue
                st = os.lstat(os.path.join(dirpath, name))
                refusal = None
                if not stat.S_ISREG(st.st_mode):
                    refusal = (RULE_NOT_REGULAR_FILE, f"{_kind(st.st_mode)}: only regular files are read")
                elif st.st_size > max_bytes:
                    refusal = _too_large(st.st_size, max_bytes)
                out.append(BatchFile(_join(batches_uri, key), key, int(st.st_size), refusal))
        return sorted(out, key=lambda f: f.key)
    backend, prefix = _s3_for(batches_uri, store_cfg)
    under = (prefix + "/") if prefix else ""
    try:
        pages = backend.client.get_paginator("list_objects_v2").paginate(Bucket=backend.bucket, Prefix=under)
        objects = [o for page in pages for o in page.get("Contents", [])]
    except Exception as e:  # noqa: BLE001 - boto3's errors: let the backend name them
        err = backend._error(e, "list", None)
        if isinstance(err, ObjectNotFound):
            raise DataError(f"drift.batches_uri {batches_uri!r} does not exist: {err}") from None
        raise err from None
    for o in objects:
        key = o["Key"][len(under) :]
        if not key or key.endswith("/") or not is_batch_file(key) or any(s.startswith(".") for s in key.split("/")):
            continue
        size = int(o.get("Size", 0))
        out.append(
            BatchFile(
                f"s3://{backend.bucket}/{o['Key']}",
                key,
                size,
                _too_large(size, max_bytes) if size > max_bytes else None,
            )
        )
    return sorted(out, key=lambda f: f.key)


def _read_local(path: str, max_bytes: int) -> tuple[bytes | None, int | None, tuple[str, str] | None]:
    # O_NOFOLLOW and O_NONBLOCK: a file swapped for a link or a FIFO after listing is refused
    # here instead of followed, or blocking the check.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if os.path.islink(path):
            return None, None, (RULE_NOT_REGULAR_FILE, "a symbolic link (not followed)")
        raise ObjectNotFound(f"{path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, None, (RULE_NOT_REGULAR_FILE, f"{_kind(st.st_mode)}: only regular files are read")
        if st.st_size > max_bytes:
            return None, int(st.st_size), _too_large(st.st_size, max_bytes)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                return None, total, _too_large(total, max_bytes)
            chunks.append(chunk)
        return b"".join(chunks), total, None
    finally:
        os.close(fd)


def read_batch_file(f: BatchFile, store_cfg, max_bytes: int) -> FoundBatch:
    """Read and identify one listed file. A refused file gets an id from its key and refusal
    (the same refusal is recorded once); a readable one from its key and content."""
    from tasks.store.backends import parse_store_uri, read_uri

    refusal, raw, size = f.refusal, None, f.size
    if refusal is None:
        if parse_store_uri(f.uri)[0] == "file":
            raw, size, refusal = _read_local(parse_store_uri(f.uri)[1], max_bytes)
        else:
            raw = read_uri(f.uri, store_cfg)
            size = len(raw)
            if size > max_bytes:
                raw, refusal = None, _too_large(size, max_bytes)
    if refusal is not None:
        return FoundBatch(f.uri, f.key, batch_id_for(f.key, f"refused:{refusal[0]}:{size}"), None, size, None, refusal)
    assert raw is not None  # read, or refused above
    sha = hashlib.sha256(raw).hexdigest()
    if not name_fits(f.key):
        refusal = (
            RULE_BAD_BATCH_NAME,
            (f"the key {f.key!r} does not fit the batch-name rule {NAME_RULE} (each folder and file name)"),
        )
    return FoundBatch(f.uri, f.key, batch_id_for(f.key, sha), sha, size, raw, refusal)
