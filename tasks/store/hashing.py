"""Streaming sha256 of a file for the store (a download is hashed as it streams in: tasks/store/s3_download.py)."""

from __future__ import annotations

import hashlib
import os

_COPY_CHUNK = 8 * 1024 * 1024


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    """sha256 hex digest and size of a file, read in 8 MiB chunks (hashlib releases the GIL)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_COPY_CHUNK)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
    return h.hexdigest(), size
