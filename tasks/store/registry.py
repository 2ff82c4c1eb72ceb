"""The model registry: numbered versions of a model name, a champion pointer, promotions and rollbacks.

Layout under the artifact store's root, per model name::

    registry/<model>/versions/000001.json   write-once version records (create-only PUT)
    registry/<model>/champion.json          the champion pointer with the full promotion history

A version record points at a committed run (which holds ``model.json`` and ``model.safetensors``)
and pins the sha256 of that run's manifest, so a manifest rewritten after registration is caught.

The champion pointer is one document changed only by compare-and-swap (S3 ``If-Match: <ETag>``;
locally the compare and rename run under a ``filelock`` lock file). It carries the promotion history
(who, when, why, from, to, a sequence number) in the same atomic write, so the pointer and its
history can never disagree. Of two concurrent promotions exactly one write succeeds; the other
either re-reads and re-applies (when the caller did not condition on a champion) or raises
RegistryError (when it passed ``expected_champion``, i.e. its decision was based on a champion that
is no longer current: a gate must re-evaluate rather than overwrite).

Each event is also appended as a write-once ``registry/<model>/history/<seq>.json`` right after
the pointer write that made it, so a pointer that was corrupted (random bytes, a wrong type) can be
rebuilt by replaying them (:meth:`ModelRegistry.repair`, ``driftloop models repair``); a pointer or
version record that cannot be read raises :class:`RegistryCorrupt` naming the file and that command.
Promote and rollback first verify every object of the target version against its manifest (and
the manifest against the sha256 pinned at registration): a damaged version never becomes champion.

Why this module is over 400 lines: it is one class over one layout; register, promote, rollback and
repair each read and write the same three kinds of file under the same compare-and-swap rules, and
splitting them would put the rules in one file and their only users in another.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
import uuid
from typing import Any, Mapping

from tasks.errors import IntegrityError, ObjectNotFound, PreconditionFailed, RegistryCorrupt, RegistryError, StoreError
from tasks.store.artifacts import MODEL_SPEC, MODEL_WEIGHTS, ArtifactStore, check_safetensors, dumps_json, utc_now

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


def referenced_run_ids(store: ArtifactStore) -> dict[str, list[str]]:
    """Every run id a version record of any model names: ``{run_id: ["model v3", ...]}``.

    Garbage collection keeps these runs whatever else is missing. A version record that cannot be
    read or names no run raises RegistryError naming it: it might name any run, so nothing may be
    collected until it is repaired.
    """
    out: dict[str, list[str]] = {}
    for key in store.backend.list("registry/"):
        parts = key.split("/")
        if len(parts) != 4 or parts[2] != "versions" or not re.fullmatch(r"\d{6,}\.json", parts[3]):
            continue
        url = store.backend.url(key)
        try:
            doc = json.loads(store.backend.get_bytes(key))
        except ObjectNotFound:
            continue  # deleted between the listing and the read: it names nothing any more
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RegistryError(
                f"{url} is not valid JSON ({e}); garbage collection stopped because this "
                "version record may name any run: restore it before collecting"
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("run_id"), str):
            raise RegistryError(
                f"{url} names no run_id; garbage collection stopped because this version "
                "record may name any run: restore it before collecting"
            )
        out.setdefault(doc["run_id"], []).append(f"{parts[1]} v{int(parts[3][:-5])}")
    # A version the champion pointer or the history names but whose record is gone: its run cannot be
    # told from an orphan any more, so nothing may be collected.
    recorded = {(m.split(" v")[0], int(m.split(" v")[1])) for names in out.values() for m in names}
    for model, numbers, where in _named_versions(store):
        missing = sorted(v for v in numbers if (model, v) not in recorded)
        if missing:
            raise RegistryError(
                f"{where} names versions {missing} of model {model!r} that have no version record; "
                "garbage collection stopped because their runs cannot be told from orphans: "
                "restore the records before collecting"
            )
    return out


def _named_versions(store: ArtifactStore):
    """``(model, version numbers, url)`` for every champion pointer and history log entry that reads."""
    for key in store.backend.list("registry/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == "champion.json":
            try:
                state = json.loads(store.backend.get_bytes(key))
            except (ObjectNotFound, UnicodeDecodeError, json.JSONDecodeError):
                continue  # unreadable: `models repair` rebuilds it from the history log, checked below
            if isinstance(state, dict):
                named = [
                    state.get("champion"),
                    *(state.get("stack") or []),
                    *[e.get("to") for e in state.get("history") or [] if isinstance(e, dict)],
                ]
                yield (
                    parts[1],
                    {v for v in named if isinstance(v, int) and not isinstance(v, bool)},
                    store.backend.url(key),
                )
        elif len(parts) == 4 and parts[2] == "history" and re.fullmatch(r"\d{6,}\.json", parts[3]):
            try:
                event = json.loads(store.backend.get_bytes(key))
            except (ObjectNotFound, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(event, dict) and isinstance(event.get("to"), int):
                yield parts[1], {event["to"]}, store.backend.url(key)


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
            raise RegistryError(
                f"cannot register run {run_id!r} as model {self.model_name!r}: "
                f"the run has no {missing} (write them with RunWriter.put_model)"
            )
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
        raise RegistryError(
            f"model {self.model_name!r}: could not allocate a version number after "
            f"{_MAX_ATTEMPTS} attempts (heavy concurrent registration)"
        )

    def get(self, version: int) -> dict[str, Any]:
        """The record of ``version`` (RegistryError when the model has no such version)."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RegistryError(f"model {self.model_name!r}: invalid version {version!r}")
        key = self._version_key(version)
        try:
            data = self.backend.get_bytes(key)
        except ObjectNotFound:
            raise RegistryError(
                f"model {self.model_name!r} has no version {version} (versions: {self._version_numbers()})"
            ) from None
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._corrupt_version(key, f"not JSON: {e}") from None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("run_id"), str)
            or record.get("version") != version
        ):
            raise self._corrupt_version(key, "not a version record with this version number and a run_id")
        return record

    def _corrupt_version(self, key: str, why: str) -> RegistryCorrupt:
        # Version records are write-once and nothing else holds their metrics and lineage: restore the
        # file from a backup (or delete it if that version was never used); `models repair` lists them.
        return RegistryCorrupt(
            f"{self.backend.url(key)} is corrupt ({why}); restore this write-once version "
            "record from a backup; `driftloop models repair` lists every damaged record"
        )

    def versions(self) -> list[dict[str, Any]]:
        """All version records, oldest first."""
        return [self.get(v) for v in self._version_numbers()]

    # ---- champion pointer

    def _empty_state(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "seq": 0, "champion": None, "stack": [], "history": []}

    def _corrupt(self, key: str, why: str) -> RegistryCorrupt:
        return RegistryCorrupt(
            f"{self.backend.url(key)} is corrupt ({why}); rebuild the champion pointer from "
            f"the append-only history with `driftloop models repair` "
            f"(registry.model_name={self.model_name})"
        )

    def _read_state(self) -> tuple[dict[str, Any], str | None]:
        try:
            data, token = self.backend.get_with_token(self._state_key)
        except ObjectNotFound:
            return self._empty_state(), None
        return self._parse_state(data), token

    def _parse_state(self, data: bytes) -> dict[str, Any]:
        """The pointer document, checked field by field (RegistryCorrupt naming the file)."""
        key = self._state_key
        try:
            state = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._corrupt(key, f"not JSON: {e}") from None
        if not isinstance(state, dict):
            raise self._corrupt(key, f"a JSON {type(state).__name__}, not an object")

        def is_version(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        problems = []
        if not (isinstance(state.get("seq"), int) and not isinstance(state.get("seq"), bool) and state["seq"] >= 0):
            problems.append("seq is not a non-negative integer")
        if not (state.get("champion") is None or is_version(state.get("champion"))):
            problems.append("champion is not a version number or null")
        if not (isinstance(state.get("stack"), list) and all(is_version(v) for v in state["stack"])):
            problems.append("stack is not a list of version numbers")
        hist = state.get("history")
        if not (isinstance(hist, list) and all(isinstance(e, dict) and isinstance(e.get("seq"), int) for e in hist)):
            problems.append("history is not a list of events")
        if problems:
            raise self._corrupt(key, "; ".join(problems))
        return state

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
            if state["history"]:  # a writer that died between its pointer write and its append
                self._append_history(state["history"][-1])
            decision = decide(state)
            if decision is None:  # already in the requested state (a retried task, or a racing twin won)
                # The last event's fields (a retried task whose first attempt won gets its own event
                # back), marked unchanged: a caller must not report this call's reason as recorded.
                return dict(state["history"][-1] if state["history"] else {}, changed=False, champion=state["champion"])
            if expected_champion is not _UNSET and state["champion"] != expected_champion:
                raise RegistryError(
                    f"model {self.model_name!r}: the champion is version {state['champion']}, not the expected "
                    f"{expected_champion} (a concurrent promotion won); re-evaluate before promoting"
                )
            action, target, stack = decision
            event = {
                "seq": state["seq"] + 1,
                "action": action,
                "from": state["champion"],
                "to": target,
                "reason": reason,
                "actor": actor or default_actor(),
                "at": utc_now(),
            }
            new = {
                "model_name": self.model_name,
                "seq": event["seq"],
                "champion": target,
                "stack": stack,
                "history": state["history"] + [event],
                "updated_at": event["at"],
                "nonce": uuid.uuid4().hex,
            }  # makes every write's bytes unique (see S3Backend.put_bytes)
            try:
                if token is None:
                    self.backend.put_bytes(self._state_key, dumps_json(new), if_absent=True)
                else:
                    self.backend.put_bytes(self._state_key, dumps_json(new), if_match=token)
            except PreconditionFailed:
                if expected_champion is not _UNSET:
                    raise RegistryError(
                        f"model {self.model_name!r}: a concurrent promotion changed the champion while "
                        f"{action} to version {target} was being written; this one lost"
                    ) from None
                continue  # unconditioned: re-read the new pointer and apply again
            self._append_history(event)
            return event
        raise RegistryError(f"model {self.model_name!r}: champion pointer kept changing ({_MAX_ATTEMPTS} attempts)")

    def _history_key(self, seq: int) -> str:
        return f"{self.prefix}history/{seq:06d}.json"

    def _append_history(self, event: Mapping[str, Any]) -> None:
        """Write ``event`` to the append-only log (write-once; an existing entry is left alone)."""
        key = self._history_key(int(event["seq"]))
        if self.backend.exists(key):
            return
        try:
            self.backend.put_bytes(key, dumps_json(dict(event)), if_absent=True)
        except PreconditionFailed:
            pass  # a concurrent reader appended the same event first

    def logged_history(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The append-only log's events in seq order, and the problems found reading it."""
        events, problems = [], []
        for key in self.backend.list(self.prefix + "history/"):
            name = key.rsplit("/", 1)[-1]
            if not re.fullmatch(r"\d{6,}\.json", name):
                continue
            try:
                e = json.loads(self.backend.get_bytes(key))
            except (UnicodeDecodeError, json.JSONDecodeError, ObjectNotFound) as err:
                problems.append(f"{self.backend.url(key)}: unreadable ({err})")
                continue
            if (
                not isinstance(e, dict)
                or e.get("seq") != int(name[:-5])
                or e.get("action") not in ("promote", "rollback")
                or not isinstance(e.get("to"), int)
            ):
                problems.append(f"{self.backend.url(key)}: not a history event")
                continue
            events.append(e)
        events.sort(key=lambda e: e["seq"])
        return events, problems

    def verify(self, version: int) -> dict[str, Any]:
        """Check every object of ``version``'s run against its manifest, and the manifest against the
        sha256 pinned at registration. Never raises for damage: returns ``{"version", "run_id",
        "ok", "manifest", "objects": {name: "ok" | problem}}``."""
        record = self.get(version)
        run_id = record["run_id"]
        out: dict[str, Any] = {"version": version, "run_id": run_id, "ok": False, "manifest": "ok", "objects": {}}
        try:
            manifest_sha = self.store.manifest_sha256(run_id, fresh=True)
            names = sorted(self.store.manifest(run_id).get("objects", {}))
        except (StoreError, ObjectNotFound) as e:
            out["manifest"] = f"unreadable: {e}"
            return out
        pinned = record.get("run_manifest_sha256")
        if pinned and manifest_sha != pinned:
            out["manifest"] = (
                f"{self.store.object_url(run_id, 'manifest.json')}: changed since version {version} was registered"
            )
        for name in names:
            try:
                data = self.store.get_bytes(run_id, name)
                if name == MODEL_WEIGHTS:
                    check_safetensors(data, self.store.object_url(run_id, name))
                out["objects"][name] = "ok"
            except ObjectNotFound as e:
                out["objects"][name] = f"missing: {e}"
            except StoreError as e:  # IntegrityError, or a non-safetensors model
                out["objects"][name] = str(e)
        for needed in (MODEL_SPEC, MODEL_WEIGHTS):
            out["objects"].setdefault(needed, "missing: not in the run's manifest")
        out["ok"] = out["manifest"] == "ok" and all(v == "ok" for v in out["objects"].values())
        return out

    def _require_intact(self, version: int, action: str) -> None:
        report = self.verify(version)
        if not report["ok"]:
            bad = [report["manifest"]] if report["manifest"] != "ok" else []
            bad += [f"{n}: {p}" for n, p in report["objects"].items() if p != "ok"]
            raise IntegrityError(
                f"model {self.model_name!r}: refusing to {action} version {version}: its run "
                f"{report['run_id']} fails verification ({'; '.join(bad)})"
            )

    def promote(
        self, version: int, reason: str = "", actor: str | None = None, expected_champion: int | None = _UNSET
    ) -> dict[str, Any]:
        """Make ``version`` the champion; returns the history event.

        Pass ``expected_champion`` (the champion the decision was based on, None for "no champion
        yet") to make the promotion conditional: it raises RegistryError when another promotion got
        there first. Promoting the current champion changes nothing: it returns the last event with
        ``"changed": False`` and ``"champion"`` added (a loser of a race with an identical promotion
        gets this too), and this call's reason is not recorded.
        """
        self.get(version)  # RegistryError for an unknown version, before anything is written
        if self.champion_version() != version:  # a no-op needs no download
            self._require_intact(version, "promote")

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
            if len(state0["stack"]) >= 2:
                self._require_intact(state0["stack"][-2], "roll back to")

            def decide(state):
                if len(state["stack"]) < 2:
                    raise RegistryError(
                        f"model {self.model_name!r}: no earlier champion to roll back to "
                        f"(champion {state['champion']} is the first)"
                    )
                return "rollback", state["stack"][-2], state["stack"][:-1]

            return self._transition(decide, state0["champion"], actor, reason)

        self.get(to_version)
        ever = {e["to"] for e in state0["history"]}
        if to_version not in ever:
            raise RegistryError(
                f"model {self.model_name!r}: version {to_version} was never champion "
                f"(earlier champions: {sorted(ever)}); promote it instead"
            )
        if state0["champion"] != to_version:
            self._require_intact(to_version, "roll back to")

        def decide_to(state):
            if state["champion"] == to_version:
                return None
            stack = state["stack"]
            if to_version in stack:
                idx = len(stack) - 1 - stack[::-1].index(to_version)
                return "rollback", to_version, stack[: idx + 1]
            return "rollback", to_version, stack + [to_version]

        return self._transition(decide_to, _UNSET, actor, reason)

    # ---- repair

    def repair(self, dry_run: bool = False) -> dict[str, Any]:
        """Rebuild the champion pointer from the append-only history (``history/<seq>.json``).

        Replays every logged event (promote pushes its version; rollback returns to it), checks the
        rebuilt champion's objects against its manifests, and writes the pointer by compare-and-swap
        over the damaged one (so a concurrent promotion or repair is not overwritten). A pointer
        that reads fine is left alone. Damaged version records are listed (they are write-once:
        restore them from a backup). Returns what was found and done.
        """
        report: dict[str, Any] = {
            "model": self.model_name,
            "pointer": "ok",
            "repaired": False,
            "damaged_versions": [],
            "history_problems": [],
            "champion": None,
            "champion_integrity": None,
        }
        for v in self._version_numbers():
            try:
                self.get(v)
            except RegistryCorrupt as e:
                report["damaged_versions"].append(str(e))
        events, report["history_problems"] = self.logged_history()
        try:
            data, token = self.backend.get_with_token(self._state_key)
        except ObjectNotFound:
            data, token = None, None
        if data is not None:
            try:
                state = self._parse_state(data)
                report["champion"] = state["champion"]
                report["pointer"] = "ok"
                for event in state["history"]:  # backfill a log written before it existed
                    self._append_history(event)
                if state["champion"] is not None:
                    report["champion_integrity"] = self.verify(state["champion"])
                return report
            except RegistryCorrupt as e:
                report["pointer"] = str(e)
        elif not events:
            report["pointer"] = "absent (no promotion yet)"
            return report
        else:
            report["pointer"] = "absent"
        seqs = [e["seq"] for e in events]
        if seqs != list(range(1, len(seqs) + 1)):
            report["history_problems"].append(f"history has gaps: seq {seqs}; replaying up to the first gap")
            n = next((i for i, s_ in enumerate(seqs) if s_ != i + 1), len(seqs))
            events = events[:n]
        champion: int | None = None
        stack: list[int] = []
        known = set(self._version_numbers())
        for event in events:
            if event["to"] not in known:
                report["history_problems"].append(
                    f"event {event['seq']} names version {event['to']}, which has no record"
                )
            if event["action"] == "promote" or event["to"] not in stack:
                stack = stack + [event["to"]]
            else:
                idx = len(stack) - 1 - stack[::-1].index(event["to"])
                stack = stack[: idx + 1]
            champion = event["to"]
        new = {
            "model_name": self.model_name,
            "seq": len(events),
            "champion": champion,
            "stack": stack,
            "history": events,
            "updated_at": utc_now(),
            "repaired_at": utc_now(),
            "nonce": uuid.uuid4().hex,
        }
        report["champion"] = champion
        if champion is not None and champion in known:
            report["champion_integrity"] = self.verify(champion)
        if dry_run:
            return report
        try:
            if token is None:
                self.backend.put_bytes(self._state_key, dumps_json(new), if_absent=True)
            else:
                self.backend.put_bytes(self._state_key, dumps_json(new), if_match=token)
        except PreconditionFailed:
            raise RegistryError(
                f"model {self.model_name!r}: the champion pointer changed while it was being "
                "repaired (another repair or promotion); run `driftloop models repair` again"
            ) from None
        report["repaired"] = True
        return report

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
            raise IntegrityError(
                f"{self.store.object_url(run_id, 'manifest.json')}: manifest changed since "
                f"model {self.model_name!r} version {record['version']} was registered"
            )
        spec = self.store.get_json(run_id, MODEL_SPEC)
        weights = self.store.get_bytes(run_id, MODEL_WEIGHTS)
        check_safetensors(weights, self.store.object_url(run_id, MODEL_WEIGHTS))
        return spec, weights, record
