"""Opening a backend for a store configuration, and reading, listing or writing any store URI.

``open_backend`` picks the backend for ``cfg.uri``; ``read_uri`` / ``list_uri`` / ``write_uri`` take a
full URI (a local path, ``file://`` or ``s3://bucket/key``) outside any store root, with the S3
settings of ``cfg``; ``pyarrow_filesystem`` gives Ray Tune the same store as a ``pyarrow.fs``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tasks.errors import ObjectNotFound, StoreError
from tasks.store.base import Backend
from tasks.store.config import StoreConfig
from tasks.store.local import LocalBackend
from tasks.store.s3 import S3Backend, _secret
from tasks.store.uri import parse_store_uri

_cache: dict[tuple, Backend] = {}
_cache_lock = threading.Lock()


def _cache_key(cfg: StoreConfig, uri: str) -> tuple:
    return (
        uri,
        cfg.endpoint_url,
        cfg.region,
        _secret(cfg.access_key_id),
        _secret(cfg.secret_access_key),
        _secret(cfg.session_token),
        cfg.multipart_chunk_bytes,
        cfg.max_concurrency,
        cfg.max_attempts,
        cfg.upload_checksum,
    )


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
    s3, key = _s3_for(uri, cfg)
    if not key:
        raise StoreError(f"write {uri}: the URI names a bucket, not an object")
    s3.put_bytes(key, data)


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
    return fs, "/".join(p for p in (loc, prefix.rstrip("/"), sub) if p)
