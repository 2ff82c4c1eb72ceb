"""The local-directory backend: atomic writes by temporary file and rename, CAS under a lock file."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from filelock import FileLock

from tasks.errors import ObjectNotFound, PreconditionFailed, StoreError
from tasks.store.base import Backend
from tasks.store.hashing import _COPY_CHUNK, sha256_file
from tasks.store.uri import validate_key


class LocalBackend(Backend):
    """A directory on a local (or shared POSIX) filesystem."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(root))
        self.root_uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def _tmp_for(self, path: Path) -> Path:
        return path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:12]}")

    def _write_tmp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_for(path)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must never expose a file whose bytes are not on disk
        return tmp

    def _lock(self, key: str):
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"
        # A new FileLock per acquisition opens its own file description, so the flock excludes other
        # threads of this process as well as other processes.
        return FileLock(locks / name)

    def put_bytes(self, key: str, data: bytes, if_absent: bool = False, if_match: str | None = None) -> None:
        path = self._path(key)
        if if_absent and if_match is not None:
            raise StoreError(f"put {self.url(key)}: if_absent and if_match are exclusive")
        try:
            tmp = self._write_tmp(path, bytes(data))
        except OSError as e:
            raise StoreError(f"write {self.url(key)} failed: {e.strerror or e}") from e
        try:
            if if_absent:
                # link() fails if the name exists, and the name appears with its full content
                # (O_EXCL on the final name would expose a half-written file to readers).
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailed(f"{self.url(key)} already exists (write-once)") from None
            elif if_match is not None:
                with self._lock(key):
                    try:
                        current = path.read_bytes()
                    except FileNotFoundError:
                        raise PreconditionFailed(
                            f"{self.url(key)} does not exist (expected version {if_match[:12]})"
                        ) from None
                    if hashlib.sha256(current).hexdigest() != if_match:
                        raise PreconditionFailed(f"{self.url(key)} changed since it was read (compare-and-swap lost)")
                    os.replace(tmp, path)
            else:
                os.replace(tmp, path)
        except OSError as e:
            raise StoreError(f"write {self.url(key)} failed: {e.strerror or e}") from e
        finally:
            if tmp.exists():
                tmp.unlink()

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.url(key)} does not exist") from None
        except IsADirectoryError:
            raise ObjectNotFound(f"{self.url(key)} is a directory, not an object") from None
        except OSError as e:
            raise StoreError(f"read {self.url(key)} failed: {e.strerror or e}") from e

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, hashlib.sha256(data).hexdigest()

    def put_file(self, key: str, path: str | os.PathLike) -> tuple[str, int]:
        dest = self._path(key)
        src = Path(path)
        if not src.is_file():
            raise ObjectNotFound(f"local file {str(src)!r} does not exist (uploading to {self.url(key)})")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_for(dest)
        try:
            # Hash on a second thread while the kernel copies (hashlib releases the GIL).
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as pool:
                hashed = pool.submit(sha256_file, src)
                shutil.copyfile(src, tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                digest, size = hashed.result()
            os.replace(tmp, dest)
            return digest, size
        except OSError as e:
            raise StoreError(f"copy {str(src)!r} to {self.url(key)} failed: {e.strerror or e}") from e
        finally:
            if tmp.exists():
                tmp.unlink()

    def get_file(self, key: str, path: str | os.PathLike) -> tuple[str, int]:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"{self.url(key)} does not exist")
        return _atomic_copy(src, Path(path), f"copy {self.url(key)} to {str(path)!r}")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .locks, temporaries
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"delete {self.url(key)} failed: {e.strerror or e}") from e
        # Remove directories the deletion emptied, so an aborted run leaves no trace.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def _atomic_copy(src: Path, dest: Path, what: str) -> tuple[str, int]:
    """Copy ``src`` to ``dest`` via a temporary name, hashing the bytes on the way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
    h, size = hashlib.sha256(), 0
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(_COPY_CHUNK):
                h.update(chunk)
                fout.write(chunk)
                size += len(chunk)
        os.replace(tmp, dest)
        return h.hexdigest(), size
    except OSError as e:
        raise StoreError(f"{what} failed: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
