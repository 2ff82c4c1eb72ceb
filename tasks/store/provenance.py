"""Run ids and the provenance every manifest records: timestamps, package versions, git revision."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import re
import secrets
import subprocess
from importlib import metadata

from tasks.errors import StoreError

KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_]*(?:-[a-z0-9_]+)*$")
RUN_ID_RE = re.compile(r"^(?P<kind>[a-z0-9][a-z0-9_-]*)-(?P<ts>\d{8}T\d{6})-(?P<rand>[0-9a-f]{6})$")
# Keys the store owns; a caller's manifest fields may not replace them.

# Distributions whose versions every manifest records (read from metadata: nothing is imported).
RECORDED_PACKAGES = (
    "driftloop",
    "torch",
    "numpy",
    "prefect",
    "ray",
    "flwr",
    "boto3",
    "safetensors",
    "pyarrow",
    "alibi-detect",
)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def new_run_id(kind: str, now: _dt.datetime | None = None) -> str:
    """``{kind}-{UTC %Y%m%dT%H%M%S}-{6 hex}``: sorts by time within a kind, unique by 24 random bits."""
    if not KIND_RE.match(kind or ""):
        raise StoreError(f"invalid run kind {kind!r}: use lowercase letters, digits, '_' and single '-'")
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"{kind}-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def parse_run_id(run_id: str) -> tuple[str, str]:
    """``(kind, timestamp)`` of a run id; StoreError naming it when it is malformed."""
    m = RUN_ID_RE.match(run_id or "")
    if not m:
        raise StoreError(f"invalid run id {run_id!r}: expected {{kind}}-{{YYYYmmddTHHMMSS}}-{{6 hex}}")
    return m["kind"], m["ts"]


def package_versions() -> dict[str, str | None]:
    """Python and the key packages' versions, from installed metadata (None when not installed)."""
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)  # installed versions do not change under a running process
def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(cwd: str | os.PathLike | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``cwd`` (default: the working directory),
    or None outside a repository or without git. Cached per directory: the code a process runs is
    what it imported, so the first answer is the right one even if HEAD moves later."""
    return _git_revision(os.path.abspath(cwd or os.getcwd()))


@functools.lru_cache(maxsize=16)
def _git_revision(cwd: str) -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = res.stdout.strip()
    return rev if res.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", rev) else None
