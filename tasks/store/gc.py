"""Garbage collection of the artifact store (``driftloop artifacts gc``): the objects of runs killed
before their manifest, except runs the model registry names.

The registry's references are read first, then the store claims and deletes the orphans
(:meth:`tasks.store.artifacts.ArtifactStore.collect_orphans`, which holds the tombstone protocol
beside the commit it races): a version registered after the read points at a run committed before
it, which has a manifest and is no orphan.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from tasks.errors import StoreError
from tasks.store.artifacts import ArtifactStore
from tasks.store.registry import referenced_run_ids


def collect_garbage(
    store: ArtifactStore, min_age_s: float = 86400.0, dry_run: bool = False, now: _dt.datetime | None = None
) -> dict[str, Any]:
    """Delete the objects of orphaned runs (no manifest) started at least ``min_age_s`` ago that no
    registry version of any model references.

    The default minimum age (a day) must exceed the longest run you have: an older run still being
    written loses its commit (with an error naming the run), never its committed objects. A version
    record that cannot be read stops the collection (RegistryError: it might name any run).
    Returns what was (or, ``dry_run``, would be) collected."""
    if min_age_s < 0:
        raise StoreError(f"collect_garbage: min_age_s must be >= 0, got {min_age_s}")
    return store.collect_orphans(referenced_run_ids(store), min_age_s, dry_run=dry_run, now=now)
