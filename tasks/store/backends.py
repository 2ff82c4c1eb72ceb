"""The public facade of the store's backends: re-exports only, no logic.

The code lives in :mod:`tasks.store.uri` (URI parsing, key validation), :mod:`tasks.store.base`
(the :class:`Backend` interface), :mod:`tasks.store.local`, :mod:`tasks.store.s3`,
:mod:`tasks.store.hashing` (streaming sha256) and :mod:`tasks.store.access` (``open_backend`` and
the ``*_uri`` helpers). Callers outside the store package import from here.
"""

from tasks.errors import PreconditionFailed
from tasks.store.access import _s3_for, list_uri, open_backend, pyarrow_filesystem, read_uri, write_uri
from tasks.store.base import Backend
from tasks.store.hashing import sha256_file
from tasks.store.local import LocalBackend
from tasks.store.s3 import S3Backend
from tasks.store.uri import parse_store_uri, validate_key

__all__ = [
    "Backend",
    "LocalBackend",
    "S3Backend",
    "PreconditionFailed",
    "open_backend",
    "read_uri",
    "list_uri",
    "write_uri",
    "pyarrow_filesystem",
    "parse_store_uri",
    "validate_key",
    "sha256_file",
    "_s3_for",
]
