"""Storage backends of the artifact store: a local directory and S3-compatible object storage.

Both implement one small key/value interface (:class:`Backend`) over keys relative to the store's
root URI (``runs/<run_id>/model.safetensors``). Writes are atomic from a reader's view: the local
backend writes a temporary file in the destination directory and renames it into place
(``os.replace``), S3 objects are atomic per PUT. Two conditional writes support the model registry:

* ``if_absent=True``: create-only (S3 ``If-None-Match: *``; locally a hard link, which fails when
  the name exists, so the object appears complete or not at all).
* ``if_match=token``: compare-and-swap against the token :meth:`Backend.get_with_token` returned
  (S3 ``If-Match: <ETag>``; locally the compare and rename happen under an ``fcntl`` lock file).

A failed condition raises :class:`PreconditionFailed`. SeaweedFS 4.48, MinIO and AWS S3 honour both
headers (checked for SeaweedFS with 8 concurrent writers: exactly one wins each round).

Errors: a missing key or bucket raises :class:`~tasks.errors.ObjectNotFound` naming the URI (and the
bucket), anything else :class:`~tasks.errors.StoreError` naming the operation and the URI. Messages
never carry credentials: the configuration holds them as ``SecretStr`` and every S3 error text is
scrubbed of them before it is raised.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tasks.errors import ConfigError, ObjectNotFound, StoreError
from tasks.store.config import StoreConfig

_COPY_CHUNK = 8 * 1024 * 1024


class PreconditionFailed(StoreError):
    """A conditional write (``if_absent`` / ``if_match``) lost: the object exists or changed."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise StoreError naming it.

    Keys are ``/``-separated, relative, without empty, ``.`` or ``..`` segments and without
    segments starting with ``.`` (reserved for the local backend's temporary and lock files).
    """
    if not isinstance(key, str) or not key:
        raise StoreError(f"invalid store key {key!r}: must be a non-empty string")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise StoreError(f"invalid store key {key!r}: must be relative, '/'-separated, without backslashes")
    for seg in key.split("/"):
        if not seg or seg.startswith("."):
            raise StoreError(f"invalid store key {key!r}: empty or dot-prefixed segment {seg!r}")
    return key


def parse_store_uri(uri: str) -> tuple[str, str, str]:
    """Split a store URI into ``(scheme, location, prefix)``.

    ``("file", "/abs/dir", "")`` for a plain path or ``file:///abs/dir``;
    ``("s3", "bucket", "pre/fix/")`` for ``s3://bucket/pre/fix`` (prefix empty or ending in ``/``).
    """
    if not uri:
        raise ConfigError("store uri is empty")
    if "://" not in uri:
        return "file", os.path.abspath(os.path.expanduser(uri)), ""
    p = urlparse(uri)
    if p.scheme == "file":
        if p.netloc not in ("", "localhost"):
            raise ConfigError(f"store uri {uri!r}: file URIs must be absolute (file:///abs/path)")
        return "file", os.path.abspath(p.path), ""
    if p.scheme == "s3":
        if not p.netloc:
            raise ConfigError(f"store uri {uri!r}: no bucket (expected s3://bucket/prefix)")
        prefix = p.path.strip("/")
        return "s3", p.netloc, (prefix + "/") if prefix else ""
    raise ConfigError(f"store uri {uri!r}: unsupported scheme {p.scheme!r} (use a path, file:// or s3://)")


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

    def __init__(self, f):
        self.f = f  # opened unbuffered (raw FileIO)
        self._pos = 0
        self._ranges: dict[int, int] = {}  # start -> end of written ranges beyond the frontier
        self._frontier = 0                 # bytes [0, frontier) are written
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
            view = view[self.f.write(view):]
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


class Backend(ABC):
    """Keys -> bytes under one root URI. Every method names the full URI in its errors."""

    root_uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, if_absent: bool = False, if_match: str | None = None) -> None:
        """Store ``data`` at ``key`` atomically; conditional with ``if_absent`` or ``if_match``."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; ObjectNotFound when it (or the bucket) does not exist."""

    @abstractmethod
    def get_with_token(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and a token for a later ``put_bytes(..., if_match=token)``."""

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike) -> None:
        """Upload a local file (streamed; multipart on S3 above the configured chunk size)."""

    @abstractmethod
    def get_file(self, key: str, path: str | os.PathLike) -> tuple[str, int]:
        """Download ``key`` to ``path`` (written under a temporary name, then renamed); returns the
        sha256 hex digest and size of the bytes written, computed during the transfer."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix`` (a plain string prefix, not only directories)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""

    @abstractmethod
    def url(self, key: str) -> str:
        """The full URI of ``key`` (``file:///...`` or ``s3://bucket/prefix/key``)."""

    def __repr__(self) -> str:  # never the credentials
        return f"{type(self).__name__}({self.root_uri!r})"


# --------------------------------------------------------------------------- local directory


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
        return _FileLock(locks / name)

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
                        raise PreconditionFailed(f"{self.url(key)} does not exist (expected version {if_match[:12]})") from None
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

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        dest = self._path(key)
        src = Path(path)
        if not src.is_file():
            raise ObjectNotFound(f"local file {str(src)!r} does not exist (uploading to {self.url(key)})")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_for(dest)
        try:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
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


class _FileLock:
    """An exclusive ``fcntl.flock`` on a lock file; excludes other processes and other threads
    (each acquisition opens its own file description, and flock locks conflict across those)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> "_FileLock":
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


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


# --------------------------------------------------------------------------- S3


def _secret(v) -> str | None:
    return v.get_secret_value() if v is not None else None


class S3Backend(Backend):
    """An S3 bucket (and optional prefix) on AWS S3 or an S3-compatible server.

    Credentials come from the configuration or, when absent there, boto3's standard chain.
    Transient errors are retried by botocore (``standard`` mode, ``max_attempts``); files above
    ``multipart_chunk_bytes`` are transferred in parts, ``max_concurrency`` at a time.
    """

    def __init__(self, cfg: StoreConfig, bucket: str, prefix: str = ""):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.root_uri = f"s3://{bucket}/{prefix}"
        self.endpoint_url = cfg.endpoint_url
        self._secrets = [s for s in (_secret(cfg.access_key_id), _secret(cfg.secret_access_key),
                                     _secret(cfg.session_token)) if s]
        session = boto3.session.Session(
            aws_access_key_id=_secret(cfg.access_key_id),
            aws_secret_access_key=_secret(cfg.secret_access_key),
            aws_session_token=_secret(cfg.session_token),
            region_name=cfg.region,
        )
        s3_opts: dict[str, Any] = {}
        if cfg.endpoint_url:
            # Virtual-host addressing needs DNS for bucket.host, which self-hosted servers lack.
            s3_opts["addressing_style"] = "path"
        self.client = session.client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            config=Config(retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
                          max_pool_connections=max(10, cfg.max_concurrency + 2), s3=s3_opts),
        )
        self.transfer_config = TransferConfig(
            multipart_threshold=cfg.multipart_chunk_bytes,
            multipart_chunksize=cfg.multipart_chunk_bytes,
            max_concurrency=cfg.max_concurrency,
        )

    def __repr__(self) -> str:
        return f"S3Backend({self.root_uri!r}, endpoint_url={self.endpoint_url!r})"

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _bucket_exists(self) -> bool | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except Exception as e:  # noqa: BLE001 - only refines an error message
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            return False if code in ("404", "NoSuchBucket", "NotFound") else None

    def _error(self, e: Exception, op: str, key: str | None) -> StoreError:
        """Translate a boto3/botocore exception into a driftloop error (credentials scrubbed)."""
        from botocore.exceptions import ClientError

        where = self.url(key) if key is not None else self.root_uri
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            msg = err.get("Message", "")
            if code == "NoSuchBucket":
                return ObjectNotFound(f"S3 bucket {self.bucket!r} does not exist ({op} {where})")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                if self._bucket_exists() is False:
                    return ObjectNotFound(f"S3 bucket {self.bucket!r} does not exist ({op} {where})")
                return ObjectNotFound(f"{where} does not exist ({op})")
            if code == "PreconditionFailed" or status == 412:
                return PreconditionFailed(f"{op} {where}: precondition failed (object exists or changed)")
            detail = f"{code} (HTTP {status}): {msg}"
            if status == 403:
                detail += " (check the store's S3 credentials and their permissions)"
        else:
            text = str(e)
            if "NoSuchBucket" in text:  # S3UploadFailedError flattens the ClientError into text
                return ObjectNotFound(f"S3 bucket {self.bucket!r} does not exist ({op} {where})")
            detail = f"{type(e).__name__}: {text}"
        # Only the server's/botocore's text is scrubbed: the URI is ours, and an access key id that
        # happens to be a plain word ("driftloop") must not mangle it.
        return StoreError(f"S3 {op} {where} failed: {self._scrub(detail)}")

    def _call(self, op: str, key: str | None, fn, /, **kwargs):
        try:
            return fn(**kwargs)
        except Exception as e:  # noqa: BLE001 - every failure becomes a StoreError subclass
            if isinstance(e, StoreError):
                raise
            raise self._error(e, op, key) from None  # the cause could carry request details

    def put_bytes(self, key: str, data: bytes, if_absent: bool = False, if_match: str | None = None) -> None:
        k = self._key(key)
        if if_absent and if_match is not None:
            raise StoreError(f"put {self.url(key)}: if_absent and if_match are exclusive")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": k, "Body": bytes(data)}
        if if_absent:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            self._call("put", key, self.client.put_object, **kwargs)
        except PreconditionFailed:
            # botocore retries a PUT whose response was lost; the retry then fails its own
            # condition although the first attempt wrote exactly these bytes: that is a success.
            try:
                if self.get_bytes(key) == bytes(data):
                    return
            except ObjectNotFound:
                pass
            raise

    def get_bytes(self, key: str) -> bytes:
        resp = self._call("get", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return self._call("get", key, resp["Body"].read)

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        resp = self._call("get", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return self._call("get", key, resp["Body"].read), resp["ETag"]

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        if not Path(path).is_file():
            raise ObjectNotFound(f"local file {str(path)!r} does not exist (uploading to {self.url(key)})")
        self._call("upload", key, self.client.upload_file, Filename=str(path), Bucket=self.bucket,
                   Key=self._key(key), Config=self.transfer_config)

    def get_file(self, key: str, path: str | os.PathLike) -> tuple[str, int]:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
        try:
            # unbuffered and readable: every write reaches the fd at once, where the hashing thread preads it
            with open(tmp, "w+b", buffering=0) as f:
                follower = _HashFollower(f)
                try:
                    self._call("download", key, self.client.download_fileobj, Bucket=self.bucket,
                               Key=self._key(key), Fileobj=follower, Config=self.transfer_config)
                except BaseException:
                    follower.stop()
                    raise
                digest, size = follower.finish()
            os.replace(tmp, dest)
            return digest, size
        finally:
            if tmp.exists():
                tmp.unlink()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise self._error(e, "head", key) from None
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "head", key) from None

    def list(self, prefix: str = "") -> list[str]:
        full = self.prefix + prefix
        out: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    if not k.endswith("/"):  # directory markers some tools create
                        out.append(k[len(self.prefix):])
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "list", None) from None
        return sorted(out)

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))


# --------------------------------------------------------------------------- factories and URI helpers

_cache: dict[tuple, Backend] = {}
_cache_lock = threading.Lock()


def _cache_key(cfg: StoreConfig, uri: str) -> tuple:
    return (uri, cfg.endpoint_url, cfg.region, _secret(cfg.access_key_id), _secret(cfg.secret_access_key),
            _secret(cfg.session_token), cfg.multipart_chunk_bytes, cfg.max_concurrency, cfg.max_attempts)


def open_backend(cfg: StoreConfig) -> Backend:
    """The backend for ``cfg.uri``: a :class:`LocalBackend` (path or ``file://``) or an
    :class:`S3Backend` (``s3://bucket/prefix``). S3 clients are cached per configuration."""
    scheme, loc, prefix = parse_store_uri(cfg.uri)
    if scheme == "file":
        return LocalBackend(loc)
    key = _cache_key(cfg, cfg.uri)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = S3Backend(cfg, loc, prefix)
        return _cache[key]


def _s3_for(uri: str, cfg: StoreConfig) -> tuple[S3Backend, str]:
    """An S3 backend rooted at the URI's bucket, and the URI's key within it."""
    _, bucket, prefix = parse_store_uri(uri)
    backend = open_backend(cfg.model_copy(update={"uri": f"s3://{bucket}"}))
    assert isinstance(backend, S3Backend)
    return backend, prefix.rstrip("/")


def _local_path(uri: str) -> Path:
    return Path(parse_store_uri(uri)[1])


def read_uri(uri: str, cfg: StoreConfig) -> bytes:
    """The bytes at a local path, ``file://`` URI or ``s3://bucket/key`` (S3 settings from ``cfg``).

    Raises ObjectNotFound naming the URI when it does not exist.
    """
    if parse_store_uri(uri)[0] == "file":
        path = _local_path(uri)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{uri} does not exist (or is not a file)") from None
        except OSError as e:
            raise StoreError(f"read {uri} failed: {e.strerror or e}") from e
    backend, key = _s3_for(uri, cfg)
    if not key:
        raise ObjectNotFound(f"{uri} names a bucket, not an object")
    try:
        return backend.get_bytes(key)
    except ObjectNotFound as e:
        raise ObjectNotFound(f"{uri} does not exist: {e}") from None


def list_uri(uri: str, cfg: StoreConfig) -> list[str]:
    """Full URIs of the files under a local directory or an S3 prefix (recursively), sorted.

    A URI naming a single file/object returns ``[uri]``. Local paths come back in the form given
    (plain path or ``file://``). A missing local path or S3 bucket raises ObjectNotFound naming it;
    an S3 prefix with no objects gives ``[]`` (S3 has no directories).
    """
    scheme, loc, _ = parse_store_uri(uri)
    if scheme == "file":
        path = Path(loc)
        if path.is_file():
            return [uri]
        if not path.is_dir():
            raise ObjectNotFound(f"{uri} does not exist")
        as_uri = uri.startswith("file://")
        out = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                out.append(full.as_uri() if as_uri else os.path.join(uri, os.path.relpath(full, path)))
        return sorted(out)
    backend, key = _s3_for(uri, cfg)
    if key and backend.exists(key):
        return [uri]
    under = (key + "/") if key else ""
    try:
        return [f"s3://{backend.bucket}/{k}" for k in backend.list(under)]
    except ObjectNotFound as e:
        raise ObjectNotFound(f"listing {uri}: {e}") from None


def write_uri(uri: str, data: bytes, cfg: StoreConfig) -> None:
    """Write ``data`` to a local path / ``file://`` URI (temp file + rename) or ``s3://bucket/key``."""
    if parse_store_uri(uri)[0] == "file":
        path = _local_path(uri)
        backend = LocalBackend(path.parent)
        try:
            backend.put_bytes(path.name, data)
        except StoreError as e:
            raise StoreError(f"write {uri} failed: {e}") from None
        return
    backend, key = _s3_for(uri, cfg)
    if not key:
        raise StoreError(f"write {uri}: the URI names a bucket, not an object")
    backend.put_bytes(key, data)


def pyarrow_filesystem(cfg: StoreConfig, subpath: str) -> tuple[Any, str]:
    """A ``pyarrow.fs`` filesystem and a path in it for ``<store root>/<subpath>``.

    For Ray Tune: ``RunConfig(storage_path=path, storage_filesystem=fs)``. S3 uses the same
    endpoint, region, credentials (or the standard chain when none are configured) and retry budget.
    """
    import pyarrow.fs as pafs

    scheme, loc, prefix = parse_store_uri(cfg.uri)
    sub = subpath.strip("/")
    if scheme == "file":
        path = Path(loc) / sub if sub else Path(loc)
        path.mkdir(parents=True, exist_ok=True)
        return pafs.LocalFileSystem(), str(path)
    kwargs: dict[str, Any] = {
        "access_key": _secret(cfg.access_key_id),
        "secret_key": _secret(cfg.secret_access_key),
        "session_token": _secret(cfg.session_token),
        "region": cfg.region,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=cfg.max_attempts),
    }
    if cfg.endpoint_url:
        ep = urlparse(cfg.endpoint_url)
        kwargs["endpoint_override"] = ep.netloc or ep.path
        kwargs["scheme"] = ep.scheme or "https"
    fs = pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})
    path = "/".join(p for p in (loc, prefix.rstrip("/"), sub) if p)
    return fs, path


__all__ = [
    "Backend", "LocalBackend", "S3Backend", "PreconditionFailed", "open_backend", "read_uri", "list_uri",
    "write_uri", "pyarrow_filesystem", "parse_store_uri", "validate_key", "sha256_file",
]
