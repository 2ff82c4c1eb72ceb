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


class _HashFollower:
    """A seekable file wrapper for s3transfer's parallel download that computes the sha256 of the
    file while it is being written.

    s3transfer writes parts out of order (``seek(offset); write(data)``) from its IO thread. This
    wrapper tracks which ranges are on disk; a second thread hashes the contiguous prefix as it
    grows, re-reading it with ``pread`` from the page cache (no data is held in memory), so the
    sha256 is ready right after the last byte lands instead of costing a second pass afterwards.
    """

    def __init__(self, f) -> None:
        self.f = f  # opened unbuffered (raw FileIO)
        self._pos = 0
        self._ranges: dict[int, int] = {}  # start -> end of written ranges beyond the frontier
        self._frontier = 0  # bytes [0, frontier) are written
        self._done = False
        self._cond = threading.Condition()
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sha256-follower", daemon=True)
        self._thread.start()

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = self.f.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        while view:  # an unbuffered file may write less than asked
            view = view[self.f.write(view) :]
        start, self._pos = self._pos, self._pos + n
        with self._cond:
            self._ranges[start] = max(self._ranges.get(start, start), start + n)
            advanced = False
            while self._frontier in self._ranges:
                self._frontier = self._ranges.pop(self._frontier)
                advanced = True
            if advanced:
                self._cond.notify()
        return n

    def _run(self) -> None:
        fd = self.f.fileno()
        try:
            while True:
                with self._cond:
                    while self._hashed >= self._frontier and not self._done:
                        self._cond.wait()
                    target, done = self._frontier, self._done
                while self._hashed < target:
                    chunk = os.pread(fd, min(_COPY_CHUNK, target - self._hashed), self._hashed)
                    if not chunk:
                        raise OSError(f"short read at byte {self._hashed} while hashing")
                    self._hash.update(chunk)
                    self._hashed += len(chunk)
                if done and self._hashed >= self._frontier:
                    return
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self._error = e

    def stop(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify()
        self._thread.join()

    def finish(self) -> tuple[str, int]:
        """Wait for the hash of everything written; ``(sha256 hex, size)``."""
        self.stop()
        if self._error is not None:
            raise self._error
        if self._ranges:
            raise OSError(f"download left a gap at byte {self._frontier}")
        return self._hash.hexdigest(), self._hashed
