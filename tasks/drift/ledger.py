"""What the drift loop remembers between scheduled checks, kept in the artifact store:

* ``drift/<model>/checks/<batch_id>.json``: one write-once record per checked batch (its reports or
  its quarantine), so a batch is never checked twice, even by two overlapping checks;
* ``drift/<model>/episode.json``: the current drift episode (see tasks.drift.events);
* ``drift/<model>/retraining/<episode_id>.json``: a write-once claim, so an episode starts at most
  one retraining however many events (distinct, repeated or duplicated) arrive for it;
* ``drift/<model>/retraining/<episode_id>.outcome.json``: what the claimed run did (``promoted``,
  ``kept-champion``, ``awaiting-labels``, ``skipped-no-labels``);
* ``drift/<model>/labelled/<batch_id>.<suffix>``: labelled copies of unlabelled batches, made from
  their labels files (tasks.drift.labels).

Batch ids are a batch file's key plus a content hash (tasks.drift.discovery).
"""

from __future__ import annotations

import json
import time
from pathlib import PurePosixPath
from typing import Any

from tasks.drift.events import Episode
from tasks.store.backends import Backend, PreconditionFailed


def _prefix(model: str) -> str:
    return f"drift/{model}/"


def checked_ids(backend: Backend, model: str) -> set[str]:
    pre = _prefix(model) + "checks/"
    return {PurePosixPath(k).stem for k in backend.list(pre) if k.endswith(".json")}


def _put_once(backend: Backend, key: str, doc: dict[str, Any]) -> bool:
    """Write ``doc`` at ``key`` unless something is there already (S3 If-None-Match / O_EXCL)."""
    try:
        backend.put_bytes(key, json.dumps(doc, default=str).encode(), if_absent=True)
        return True
    except PreconditionFailed:
        return False


def record_check(backend: Backend, model: str, batch_id: str, record: dict[str, Any]) -> bool:
    """Store a batch's check record once; False when another check already recorded it."""
    doc = {"batch_id": batch_id, "recorded_at": time.time(), **record}
    return _put_once(backend, f"{_prefix(model)}checks/{batch_id}.json", doc)


def get_check(backend: Backend, model: str, batch_id: str) -> dict[str, Any] | None:
    """The check record of one batch, or None when it was never checked."""
    key = f"{_prefix(model)}checks/{batch_id}.json"
    return json.loads(backend.get_bytes(key)) if backend.exists(key) else None


def check_history(backend: Backend, model: str) -> list[dict[str, Any]]:
    """Every recorded check, oldest first."""
    recs = [json.loads(backend.get_bytes(k)) for k in backend.list(_prefix(model) + "checks/") if k.endswith(".json")]
    return sorted(recs, key=lambda r: (r.get("recorded_at", 0), r["batch_id"]))


def load_episode(backend: Backend, model: str) -> Episode | None:
    key = _prefix(model) + "episode.json"
    return Episode.from_dict(json.loads(backend.get_bytes(key))) if backend.exists(key) else None


def save_episode(backend: Backend, episode: Episode) -> None:
    backend.put_bytes(_prefix(episode.model) + "episode.json", json.dumps(episode.as_dict()).encode())


def save_retraining_outcome(backend: Backend, model: str, episode_id: str, outcome: dict[str, Any]) -> None:
    """What became of an episode's retraining run ("awaiting-labels", "promoted", ...), beside its claim."""
    doc = {"episode_id": episode_id, "at": time.time(), **outcome}
    backend.put_bytes(f"{_prefix(model)}retraining/{episode_id}.outcome.json", json.dumps(doc, default=str).encode())


def retraining_outcome(backend: Backend, model: str, episode_id: str) -> dict[str, Any] | None:
    key = f"{_prefix(model)}retraining/{episode_id}.outcome.json"
    return json.loads(backend.get_bytes(key)) if backend.exists(key) else None


def claim_retraining(backend: Backend, model: str, episode_id: str, info: dict[str, Any]) -> bool:
    """Claim an episode for one retraining run; False when it was already claimed."""
    doc = {"episode_id": episode_id, "claimed_at": time.time(), **info}
    return _put_once(backend, f"{_prefix(model)}retraining/{episode_id}.json", doc)


def retraining_claims(backend: Backend, model: str) -> list[dict[str, Any]]:
    return [
        json.loads(backend.get_bytes(k))
        for k in backend.list(_prefix(model) + "retraining/")
        if k.endswith(".json") and not k.endswith(".outcome.json")
    ]
