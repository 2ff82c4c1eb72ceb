"""The model registry: numbered versions of a model name, a champion pointer, promotions and rollbacks.

Layout under the artifact store's root, per model name::

    registry/<model>/versions/000001.json   write-once version records (create-only PUT)
    registry/<model>/champion.json          the champion pointer with the full promotion history

A version record points at a committed run (which holds ``model.json`` and ``model.safetensors``)
and pins the sha256 of that run's manifest, so a manifest rewritten after registration is caught.

The champion pointer is one document changed only by compare-and-swap (S3 ``If-Match: <ETag>``;
locally the compare and rename run under an ``fcntl`` lock file). It carries the promotion history
(who, when, why, from, to, a sequence number) in the same atomic write, so the pointer and its
history can never disagree. Of two concurrent promotions exactly one write succeeds; the other
either re-reads and re-applies (when the caller did not condition on a champion) or raises
RegistryError (when it passed ``expected_champion``, i.e. its decision was based on a champion that
is no longer current: a gate must re-evaluate rather than overwrite).
"""

from __future__ import annotations

import getpass
import json
import re
import socket
import uuid
from typing import Any, Mapping

from tasks.errors import IntegrityError, ObjectNotFound, RegistryError, StoreError
from tasks.store.artifacts import MODEL_SPEC, MODEL_WEIGHTS, ArtifactStore, check_safetensors, dumps_json, utc_now
from tasks.store.backends import PreconditionFailed

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSET: Any = object()
_MAX_ATTEMPTS = 20


def default_actor() -> str:
    """``user@host`` of this process, recorded as who promoted or rolled back."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry / USER in some containers
        import os

        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


class ModelRegistry:
    """Versions, champion, promotions and rollbacks of one model name in an :class:`ArtifactStore`."""

    def __init__(self, store: ArtifactStore, model_name: str):
        if not MODEL_NAME_RE.match(model_name or ""):
            raise RegistryError(f"invalid model name {model_name!r}: letters, digits, '.', '_', '-'")
        self.store = store
        self.model_name = model_name
        self.prefix = f"registry/{model_name}/"
        self._state_key = self.prefix + "champion.json"

    def __repr__(self) -> str:
        return f"ModelRegistry({self.model_name!r}, {self.store!r})"

    @property
    def backend(self):
        return self.store.backend

    def _version_key(self, version: int) -> str:
        return f"{self.prefix}versions/{version:06d}.json"

    def _version_numbers(self) -> list[int]:
        out = []
        for key in self.backend.list(self.prefix + "versions/"):
            name = key.rsplit("/", 1)[-1]
            if re.fullmatch(r"\d{6,}\.json", name):
                out.append(int(name[:-5]))
        return sorted(out)

    # ---- versions

    def register(self, run_id: str, metrics: Mapping[str, Any], lineage: Mapping[str, Any] | None = None) -> int:
        """Register a committed run as the next version; returns the version number.

        The run must have ``model.json`` and ``model.safetensors``. ``lineage`` (merged over
        ``{"parent_version": None, "event": None}``) says where the model came from, e.g.
        ``{"parent_version": 3, "event": "retrain-on-drift"}``. Registering a run that is already a
        version of this model returns that version (so a retried task does not duplicate it).
        """
        try:
            manifest = self.store.manifest(run_id)
            manifest_sha = self.store.manifest_sha256(run_id)
        except (ObjectNotFound, StoreError) as e:
            raise RegistryError(f"cannot register run {run_id!r} as model {self.model_name!r}: {e}") from None
        missing = [n for n in (MODEL_SPEC, MODEL_WEIGHTS) if n not in manifest.get("objects", {})]
        if missing:
            raise RegistryError(f"cannot register run {run_id!r} as model {self.model_name!r}: "
                                f"the run has no {missing} (write them with RunWriter.put_model)")
        lin = {"parent_version": None, "event": None}
        lin.update(dict(lineage or {}))
        for _ in range(_MAX_ATTEMPTS):
            numbers = self._version_numbers()
            for v in reversed(numbers):
                if self.get(v)["run_id"] == run_id:
                    return v
            version = (numbers[-1] + 1) if numbers else 1
            record = {
                "model_name": self.model_name,
                "version": version,
                "run_id": run_id,
                "run_manifest_sha256": manifest_sha,
                "metrics": dict(metrics),
                "created_at": utc_now(),
                "data_fingerprint": manifest.get("data_fingerprint"),
                "lineage": lin,
            }
            try:
                self.backend.put_bytes(self._version_key(version), dumps_json(record), if_absent=True)
                return version
            except PreconditionFailed:
                continue  # another registration took this number: take the next one
        raise RegistryError(f"model {self.model_name!r}: could not allocate a version number after "
                            f"{_MAX_ATTEMPTS} attempts (heavy concurrent registration)")

    def get(self, version: int) -> dict[str, Any]:
        """The record of ``version`` (RegistryError when the model has no such version)."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RegistryError(f"model {self.model_name!r}: invalid version {version!r}")
        try:
            return json.loads(self.backend.get_bytes(self._version_key(version)))
        except ObjectNotFound:
            raise RegistryError(f"model {self.model_name!r} has no version {version} "
                                f"(versions: {self._version_numbers()})") from None

    def versions(self) -> list[dict[str, Any]]:
        """All version records, oldest first."""
        return [self.get(v) for v in self._version_numbers()]

    # ---- champion pointer

    def _read_state(self) -> tuple[dict[str, Any], str | None]:
        try:
            data, token = self.backend.get_with_token(self._state_key)
        except ObjectNotFound:
            return {"model_name": self.model_name, "seq": 0, "champion": None, "stack": [], "history": []}, None
        return json.loads(data), token

    def champion_version(self) -> int | None:
        """The champion's version number, or None before the first promotion."""
        return self._read_state()[0]["champion"]

    def champion(self) -> dict[str, Any] | None:
        """The champion's version record, or None before the first promotion."""
        v = self.champion_version()
        return None if v is None else self.get(v)

    def history(self) -> list[dict[str, Any]]:
        """Every promotion and rollback, oldest first: seq, action, from, to, reason, actor, at."""
        return self._read_state()[0]["history"]

    def _transition(self, decide, expected_champion: Any, actor: str | None, reason: str) -> dict[str, Any]:
        """Read the pointer, let ``decide(state)`` pick ``(action, target, new_stack)`` (or None for
        nothing to do), and compare-and-swap the new pointer; see the module docstring on races."""
        for _ in range(_MAX_ATTEMPTS):
            state, token = self._read_state()
            decision = decide(state)
            if decision is None:  # already in the requested state (e.g. a retried task)
                return state["history"][-1] if state["history"] else {}
            if expected_champion is not _UNSET and state["champion"] != expected_champion:
                raise RegistryError(
                    f"model {self.model_name!r}: the champion is version {state['champion']}, not the expected "
                    f"{expected_champion} (a concurrent promotion won); re-evaluate before promoting")
            action, target, stack = decision
            event = {"seq": state["seq"] + 1, "action": action, "from": state["champion"], "to": target,
                     "reason": reason, "actor": actor or default_actor(), "at": utc_now()}
            new = {"model_name": self.model_name, "seq": event["seq"], "champion": target, "stack": stack,
                   "history": state["history"] + [event], "updated_at": event["at"],
                   "nonce": uuid.uuid4().hex}  # makes every write's bytes unique (see S3Backend.put_bytes)
            try:
                if token is None:
                    self.backend.put_bytes(self._state_key, dumps_json(new), if_absent=True)
                else:
                    self.backend.put_bytes(self._state_key, dumps_json(new), if_match=token)
                return event
            except PreconditionFailed:
                if expected_champion is not _UNSET:
                    raise RegistryError(
                        f"model {self.model_name!r}: a concurrent promotion changed the champion while "
                        f"{action} to version {target} was being written; this one lost") from None
                continue  # unconditioned: re-read the new pointer and apply again
        raise RegistryError(f"model {self.model_name!r}: champion pointer kept changing ({_MAX_ATTEMPTS} attempts)")

    def promote(self, version: int, reason: str = "", actor: str | None = None,
                expected_champion: int | None = _UNSET) -> dict[str, Any]:
        """Make ``version`` the champion; returns the history event.

        Pass ``expected_champion`` (the champion the decision was based on, None for "no champion
        yet") to make the promotion conditional: it raises RegistryError when another promotion got
        there first. Promoting the current champion changes nothing (returns the last event).
        """
        self.get(version)  # RegistryError for an unknown version, before anything is written

        def decide(state):
            if state["champion"] == version:
                return None
            return "promote", version, state["stack"] + [version]

        return self._transition(decide, expected_champion, actor, reason)

    def rollback(self, to_version: int | None = None, reason: str = "", actor: str | None = None) -> dict[str, Any]:
        """Return to an earlier champion; returns the history event.

        Without ``to_version``: to the champion before the current one (repeated rollbacks walk
        further back, like undo). With ``to_version``: to that version, which must have been champion
        before. A rollback without a version is conditional on the champion it started from, so two
        concurrent rollbacks do not both step back.
        """
        state0, _ = self._read_state()
        if state0["champion"] is None:
            raise RegistryError(f"model {self.model_name!r} has no champion to roll back from")
        if to_version is None:
            def decide(state):
                if len(state["stack"]) < 2:
                    raise RegistryError(f"model {self.model_name!r}: no earlier champion to roll back to "
                                        f"(champion {state['champion']} is the first)")
                return "rollback", state["stack"][-2], state["stack"][:-1]

            return self._transition(decide, state0["champion"], actor, reason)

        self.get(to_version)
        ever = {e["to"] for e in state0["history"]}
        if to_version not in ever:
            raise RegistryError(f"model {self.model_name!r}: version {to_version} was never champion "
                                f"(earlier champions: {sorted(ever)}); promote it instead")

        def decide_to(state):
            if state["champion"] == to_version:
                return None
            stack = state["stack"]
            if to_version in stack:
                idx = len(stack) - 1 - stack[::-1].index(to_version)
                return "rollback", to_version, stack[:idx + 1]
            return "rollback", to_version, stack + [to_version]

        return self._transition(decide_to, _UNSET, actor, reason)

    # ---- loading

    def load(self, version: int | None = None) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
        """``(spec, safetensors weights, record)`` of ``version`` (the champion when None).

        Every object is sha256-verified against its run's manifest, the manifest against the sha256
        pinned at registration, and the weights must be well-formed safetensors (a planted pickle is
        refused, never parsed). Rebuild with ``tasks.models.serialize.load_model(spec, weights)``.
        """
        if version is None:
            record = self.champion()
            if record is None:
                raise RegistryError(f"model {self.model_name!r} has no champion yet")
        else:
            record = self.get(version)
        run_id = record["run_id"]
        pinned = record.get("run_manifest_sha256")
        if pinned and self.store.manifest_sha256(run_id, fresh=True) != pinned:
            raise IntegrityError(f"{self.store.object_url(run_id, 'manifest.json')}: manifest changed since "
                                 f"model {self.model_name!r} version {record['version']} was registered")
        spec = self.store.get_json(run_id, MODEL_SPEC)
        weights = self.store.get_bytes(run_id, MODEL_WEIGHTS)
        check_safetensors(weights, self.store.object_url(run_id, MODEL_WEIGHTS))
        return spec, weights, record
