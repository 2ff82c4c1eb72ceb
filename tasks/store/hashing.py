"""Streaming sha256 helpers for the store: hash a file, or hash a download as it is written."""

from __future__ import annotations

import hashlib
import os
import threading

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


class _HashingWriter:
    """A non-seekable file wrapper for s3transfer's parallel download that hashes it on the way in.

    Non-seekable, so s3transfer puts the parts (downloaded in parallel) back in order (its
    DeferQueue) and writes them sequentially from its IO thread. Each chunk written is also handed,
    by reference (no copy), to a hashing thread: the sha256 runs beside the writes (hashlib releases
    the GIL) instead of after them, and no byte is read back from the file."""

    def __init__(self, f) -> None:
        import queue

        self.f = f
        self._hash = hashlib.sha256()
        self._size = 0
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sha256-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            data = self._q.get()
            if data is None:
                return
            self._hash.update(data)

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:
        n = self.f.write(data)
        self._size += len(data)
        self._q.put(data)
        return n

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join()

    def finish(self) -> tuple[str, int]:
        self.stop()
        return self._hash.hexdigest(), self._size
