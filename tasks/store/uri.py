"""Store URIs and keys: split a store URI into its parts, and refuse unsafe keys.

Pure string handling (no I/O); every backend validates its keys with :func:`validate_key`.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from tasks.errors import ConfigError, StoreError


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
