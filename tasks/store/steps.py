"""Prefect tasks for the artifact store and model registry: each a decorator around one call.

Transient store failures (StoreError: network, throttling, a full disk) are retried; outcomes that
a retry cannot change (a missing object, a sha256 mismatch, a registry rule or a lost promotion
race) fail at once. Every wrapped operation is safe to repeat: a retried commit writes a new run
(the failed attempt deleted its objects), ``register`` returns the existing version of a run, and
promoting or rolling back to the current champion changes nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import IntegrityError, ObjectNotFound, StoreError
from tasks.store.artifacts import ArtifactStore, write_run
from tasks.store.backends import PreconditionFailed
from tasks.store.config import StoreConfig
from tasks.store.registry import ModelRegistry

RETRIES = 3
RETRY_DELAY_SECONDS = [1, 2, 4]


def _transient(task_, task_run, state) -> bool:
    """Retry only I/O failures; a missing key, corrupt object or registry rule will not heal."""
    exc = getattr(state, "data", None)
    return isinstance(exc, StoreError) and not isinstance(exc, (ObjectNotFound, IntegrityError, PreconditionFailed))


# NO_CACHE: these tasks have side effects and must run every time they are called.
_io = dict(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=_transient,
           cache_policy=NO_CACHE)


@task(name="commit-run", **_io)
def commit_run(store_cfg: StoreConfig, kind: str, objects: Mapping[str, Any],
               manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a run's objects then its manifest; returns the manifest (``["run_id"]`` names the run)."""
    return write_run(ArtifactStore.from_config(store_cfg), kind, objects, manifest)


@task(name="register-model", **_io)
def register_model(store_cfg: StoreConfig, model_name: str, run_id: str, metrics: Mapping[str, Any],
                   lineage: Mapping[str, Any] | None = None) -> int:
    """Register a committed run as the next version of ``model_name``; returns the version."""
    return ModelRegistry(ArtifactStore.from_config(store_cfg), model_name).register(run_id, metrics, lineage)


@task(name="promote-model", **_io)
def promote_model(store_cfg: StoreConfig, model_name: str, version: int, expected_champion: int | None,
                  reason: str = "") -> dict[str, Any]:
    """Make ``version`` the champion if the champion is still ``expected_champion`` (the version the
    gate compared against; None when there was none), else RegistryError: the gate must re-run."""
    return ModelRegistry(ArtifactStore.from_config(store_cfg), model_name).promote(
        version, reason=reason, expected_champion=expected_champion)


@task(name="rollback-model", **_io)
def rollback_model(store_cfg: StoreConfig, model_name: str, to_version: int | None = None,
                   reason: str = "") -> dict[str, Any]:
    """Return ``model_name`` to an earlier champion (the previous one when ``to_version`` is None)."""
    return ModelRegistry(ArtifactStore.from_config(store_cfg), model_name).rollback(to_version, reason=reason)


@task(name="load-model", **_io)
def load_model_version(store_cfg: StoreConfig, model_name: str,
                       version: int | None = None) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """``(spec, weights, record)`` of a version, the champion when ``version`` is None (verified)."""
    return ModelRegistry(ArtifactStore.from_config(store_cfg), model_name).load(version)


@task(name="champion-record", **_io)
def champion_record(store_cfg: StoreConfig, model_name: str) -> dict[str, Any] | None:
    """The champion's version record (metrics, run id, lineage), None before the first promotion."""
    return ModelRegistry(ArtifactStore.from_config(store_cfg), model_name).champion()
