"""The interface every storage backend implements (:class:`Backend`), and its conditional-write error.

Both backends (:mod:`tasks.store.local`, :mod:`tasks.store.s3`) implement one small key/value
interface over keys relative to the store's root URI (``runs/<run_id>/model.safetensors``). Writes
are atomic from a reader's view: the local backend writes a temporary file in the destination
directory and renames it into place (``os.replace``), S3 objects are atomic per PUT. Two conditional
writes support the model registry:

* ``if_absent=True``: create-only (S3 ``If-None-Match: *``; locally a hard link, which fails when
  the name exists, so the object appears complete or not at all).
* ``if_match=token``: compare-and-swap against the token :meth:`Backend.get_with_token` returned
  (S3 ``If-Match: <ETag>``; locally the compare and rename happen under a ``filelock`` lock file).

A failed condition raises :class:`PreconditionFailed`. SeaweedFS 4.48, MinIO and AWS S3 honour both
headers (checked for SeaweedFS with 8 concurrent writers: exactly one wins each round).

Errors: a missing key or bucket raises :class:`~tasks.errors.ObjectNotFound` naming the URI (and the
bucket), anything else :class:`~tasks.errors.StoreError` naming the operation and the URI. Messages
never carry credentials: the configuration holds them as ``SecretStr`` and every S3 error text is
scrubbed of them before it is raised.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod


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
    def put_file(self, key: str, path: str | os.PathLike) -> tuple[str, int]:
        """Upload a local file (streamed; multipart on S3 above the configured chunk size); returns
        the sha256 hex digest and size of the bytes uploaded, computed during the transfer."""

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
