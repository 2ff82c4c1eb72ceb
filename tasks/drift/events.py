"""Drift events and drift episodes (pure: no Prefect here; ``steps.emit_drift_event`` sends them).

An *episode* is a burst of drift: the first drift verdict for a model version opens one, and every
later verdict within ``cooldown_seconds`` of the episode's start belongs to it. A verdict after the
cooldown, or for another model version (a retrained champion), opens a new episode. The episode
id is deterministic (uuid5 of model, version and start), so it serves as the idempotency key of
the retraining run: one retraining per episode.

Event ids are uuid5 of (model, version, episode, batch ids): a repeated check of the same
batches, or a redelivery, produces the same id, which Prefect's event store keeps once.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from tasks.drift.report import DriftReport

DRIFT_EVENT = "driftloop.drift.detected"
# A fixed namespace: ids must not change between runs, machines or releases.
NAMESPACE = uuid.UUID("6f1d3c1e-5b0a-4e58-9a57-0c2f4f5d9a11")


def resource_id(model: str) -> str:
    """The Prefect resource id of a model: ``driftloop.model.<name>`` (what triggers match on)."""
    return f"driftloop.model.{model}"


def _seconds(t: float | datetime) -> float:
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return t.timestamp()
    return float(t)


def episode_id_for(model: str, version: int | str | None, started_at: float | datetime) -> str:
    """Deterministic id of the episode of ``model``/``version`` that started at ``started_at``."""
    start = round(_seconds(started_at), 3)
    return str(uuid.uuid5(NAMESPACE, f"episode|{model}|{version}|{start:.3f}"))


def event_id(model: str, version: int | str | None, batch_ids: Iterable[str], episode_id: str) -> uuid.UUID:
    """Deterministic event id: the same model, version, episode and batches give the same id."""
    key = "|".join(["event", model, str(version), episode_id, *sorted(str(b) for b in batch_ids)])
    return uuid.uuid5(NAMESPACE, key)


@dataclass
class Episode:
    """A drift episode; persist it as JSON (``as_dict`` / ``from_dict``) between scheduled checks."""

    episode_id: str
    model: str
    version: int | str | None
    started_at: float
    last_at: float
    batch_ids: list[str] = field(default_factory=list)
    n_events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Episode | None":
        return None if not d else cls(**dict(d))


def assign_episode(
    previous: Episode | None,
    model: str,
    version: int | str | None,
    now: float | datetime,
    cooldown_seconds: float,
    batch_ids: Sequence[str] = (),
) -> tuple[Episode, bool]:
    """Place a drift verdict at time ``now`` into an episode.

    Returns ``(episode, is_new)``: the previous episode extended with ``batch_ids`` when it is for the
    same model and version and ``now - previous.started_at <= cooldown_seconds``; else a new episode
    starting at ``now``.
    """
    t = _seconds(now)
    if (
        previous is not None
        and previous.model == model
        and str(previous.version) == str(version)
        and 0.0 <= t - previous.started_at <= cooldown_seconds
    ):
        seen = list(previous.batch_ids) + [b for b in batch_ids if b not in previous.batch_ids]
        return Episode(
            previous.episode_id,
            model,
            version,
            previous.started_at,
            max(t, previous.last_at),
            seen,
            previous.n_events + 1,
        ), False
    return Episode(episode_id_for(model, version, t), model, version, t, t, list(dict.fromkeys(batch_ids)), 1), True


def drift_event_payload(
    model: str,
    version: int | str | None,
    reports: Sequence[DriftReport],
    episode_id: str,
    batch_uris: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The event payload: model, version, episode, the batches with drift, the detectors that
    flagged them and every report's score (p-value, or statistic/threshold when online)."""
    flagged = [r for r in reports if r.drift]
    batch_ids = list(dict.fromkeys(r.batch_id for r in flagged))
    detectors = list(dict.fromkeys(r.detector for r in flagged))
    payload: dict[str, Any] = {
        "model": model,
        "version": version,
        "episode_id": episode_id,
        "batch_ids": batch_ids,
        "detector": ",".join(detectors),
        "detectors": detectors,
        "scores": [
            {
                "detector": r.detector,
                "batch_id": r.batch_id,
                "drift": r.drift,
                "p_value": r.p_value,
                "statistic": _finite(r.statistic),
                "threshold": _finite(r.threshold),
            }
            for r in reports
        ],
    }
    if batch_uris is not None:
        payload["batch_uris"] = list(batch_uris)
    return payload


def _finite(v: float) -> float | None:
    return None if v is None or v != v or v in (float("inf"), float("-inf")) else float(v)


def drift_event(
    model: str,
    version: int | str | None,
    reports: Sequence[DriftReport],
    episode_id: str,
    batch_uris: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    """The keyword arguments for ``prefect.events.emit_event`` for a check's reports, or None
    when no report found drift (no drift: no event)."""
    if not any(r.drift for r in reports):
        return None
    payload = drift_event_payload(model, version, reports, episode_id, batch_uris)
    return {
        "event": DRIFT_EVENT,
        "resource": {
            "prefect.resource.id": resource_id(model),
            "prefect.resource.name": model,
            "driftloop.model.version": str(version),
            "driftloop.episode.id": episode_id,
        },
        "payload": payload,
        "id": event_id(model, version, payload["batch_ids"], episode_id),
    }


QUARANTINE_EVENT = "driftloop.data.quarantined"


def quarantine_event(
    model: str, version: int | str | None, quarantined: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The ``emit_event`` arguments for a check's quarantined batches (each a mapping with
    ``batch_id``, ``uri``, ``rules``, ``quarantine_uri``), or None when nothing was quarantined.
    The id is uuid5 of the model, version and batch ids: a repeated report is one event."""
    if not quarantined:
        return None
    ids = sorted(str(q["batch_id"]) for q in quarantined)
    return {
        "event": QUARANTINE_EVENT,
        "resource": {
            "prefect.resource.id": resource_id(model),
            "prefect.resource.name": model,
            "driftloop.model.version": str(version),
        },
        "payload": {"model": model, "version": version, "batch_ids": ids, "batches": [dict(q) for q in quarantined]},
        "id": uuid.uuid5(NAMESPACE, "|".join(["quarantine", model, str(version), *ids])),
    }
