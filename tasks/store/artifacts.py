"""The artifact store: every run writes its artifacts and a manifest under ``runs/<run_id>/``.

A run is written through a :class:`RunWriter`: objects first, ``manifest.json`` last. The manifest
records the sha256 and size of every object, the resolved configuration, data fingerprint,
metrics, parent model, package versions and git revision. A run exists for readers only once its
manifest exists (:meth:`ArtifactStore.list_runs`), so a reader never sees a half-written run; a
``with store.begin_run(...)`` block that raises deletes what it wrote. Every read through
:meth:`ArtifactStore.get_bytes` is checked against the manifest's sha256 (IntegrityError naming
the key on a mismatch).

A run killed before its manifest (SIGKILL, a lost machine) leaves objects no reader can see.
:meth:`ArtifactStore.collect_orphans` (through :func:`tasks.store.gc.collect_garbage`, ``driftloop
artifacts gc``) deletes those of runs started longer ago than a minimum age. It claims each such
run first by writing a *tombstone* at the run's manifest key with the same write-once condition a
commit uses, so a writer that was only slow, not dead, cannot publish a manifest over deleted
objects: exactly one of the two wins, and a losing commit fails with an error naming the run. The
tombstone and a ``gc-tombstone.json`` marker stay (two small objects) so the run id is never
reused; readers never list a collected run. A run that a model-registry version references (any
version of any model) is never collected, even when its manifest went missing: the registry still
names it, so it is damage to repair, not garbage; a version record GC cannot read stops the
collection (it might name any run).

Nothing read back is a pickle: weights are safetensors, arrays ``.npz`` loaded with
``allow_pickle=False``, metadata JSON (:mod:`tasks.store.codecs`); run ids and the recorded
provenance are in :mod:`tasks.store.provenance`.

Why this module is over 400 lines: the writer and the store are the two halves of one protocol
(objects, then the manifest last, write-once; every read checked against that manifest; the
collector claiming a run with the same write-once condition a commit uses), and each half is only
correct together with the other; split, each file would need the other's invariants to be read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tasks.errors import IntegrityError, ObjectNotFound, PreconditionFailed, StoreError
from tasks.store.access import open_backend
from tasks.store.base import Backend
from tasks.store.codecs import (  # noqa: F401 - re-exported
    check_safetensors,
    dumps_json,
    npz_bytes,
    npz_load,
    state_dict_from_bytes,
    state_dict_to_bytes,
    to_jsonable,
)
from tasks.store.config import StoreConfig
from tasks.store.provenance import (  # noqa: F401 - re-exported: callers import these from here
    RUN_ID_RE,
    git_revision,
    new_run_id,
    package_versions,
    parse_run_id,
    utc_now,
)
from tasks.store.uri import validate_key

MANIFEST = "manifest.json"
MODEL_SPEC = "model.json"
MODEL_WEIGHTS = "model.safetensors"
RUNS_PREFIX = "runs/"
MANIFEST_FORMAT = 1
COLLECTED_MARKER = "gc-tombstone.json"
TOMBSTONE_FIELD = "garbage_collected_at"

RESERVED_MANIFEST_KEYS = ("manifest_format", "run_id", "kind", "created_at", "objects")


class RunWriter:
    """Writes one run's objects, then its manifest. Use as a context manager: an exception inside
    the block (or leaving it without :meth:`commit`) deletes everything the writer wrote."""

    def __init__(self, store: "ArtifactStore", kind: str, run_id: str):
        self.store = store
        self.kind = kind
        self.run_id = run_id
        self.prefix = f"{RUNS_PREFIX}{run_id}/"
        self.objects: dict[str, dict[str, Any]] = {}
        self._written: list[str] = []
        self._state = "open"
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RunWriter({self.run_id!r}, {self._state}, {len(self.objects)} objects)"

    @property
    def state(self) -> str:
        """``open``, ``committed`` or ``aborted``."""
        return self._state

    def url(self, name: str) -> str:
        return self.store.backend.url(self.prefix + name)

    def _claim(self, name: str) -> str:
        if self._state != "open":
            raise StoreError(f"run {self.run_id} is {self._state}; cannot write {name!r}")
        validate_key(name)
        if name in (MANIFEST, COLLECTED_MARKER):
            raise StoreError(f"run {self.run_id}: {name!r} is reserved for the store (commit / garbage collection)")
        with self._lock:
            if name in self.objects or self.prefix + name in self._written:
                raise StoreError(f"run {self.run_id}: object {name!r} was already written")
            key = self.prefix + name
            # Recorded before the write, so an abort also removes a write that failed half-way.
            self._written.append(key)
        return key

    def put_bytes(self, name: str, data: bytes) -> dict[str, Any]:
        """Store ``data`` as ``name``; returns its manifest entry ``{"sha256", "size"}``."""
        key = self._claim(name)
        data = bytes(data)
        self.store.backend.put_bytes(key, data)
        entry = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        self.objects[name] = entry
        return entry

    def put_json(self, name: str, obj: Any) -> dict[str, Any]:
        return self.put_bytes(name, dumps_json(obj))

    def put_npz(self, name: str, **arrays: Any) -> dict[str, Any]:
        return self.put_bytes(name, npz_bytes(arrays, self.url(name)))

    def put_state_dict(self, name: str, state_dict: Any) -> dict[str, Any]:
        """A torch state dict (or module) as safetensors bytes."""
        return self.put_bytes(name, state_dict_to_bytes(state_dict))

    def put_model(self, spec: Mapping[str, Any], state_dict: Any) -> None:
        """The architecture spec (``model.json``) and weights (``model.safetensors``) the registry loads."""
        self.put_json(MODEL_SPEC, dict(spec))
        if isinstance(state_dict, (bytes, bytearray, memoryview)):
            check_safetensors(bytes(state_dict), self.url(MODEL_WEIGHTS))
            self.put_bytes(MODEL_WEIGHTS, bytes(state_dict))
        else:
            self.put_state_dict(MODEL_WEIGHTS, state_dict)

    def put_file(self, name: str, path: str | os.PathLike) -> dict[str, Any]:
        """Upload a local file (streamed; multipart on S3) and record its sha256 and size."""
        if not Path(path).is_file():
            raise ObjectNotFound(f"local file {str(path)!r} does not exist (for {self.url(name)})")
        key = self._claim(name)
        # The backend hashes the bytes it uploads (on S3 in the same pass that checksums the parts:
        # tasks/store/s3_upload.py), so the bookkeeping costs little on top of the transfer.
        digest, size = self.store.backend.put_file(key, path)
        entry = {"sha256": digest, "size": size}
        self.objects[name] = entry
        return entry

    def commit(self, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Publish the run: write ``manifest.json`` (write-once) after every object, return it.

        ``manifest`` fields are merged over the defaults (``config``, ``data_fingerprint``,
        ``metrics``, ``parent_model``, ``package_versions``, ``git_revision``); the store's own
        fields (``run_id``, ``kind``, ``created_at``, ``objects``, ``manifest_format``) cannot be set.
        """
        if self._state != "open":
            raise StoreError(f"run {self.run_id} is {self._state}; cannot commit it")
        manifest = dict(manifest or {})
        clash = [k for k in RESERVED_MANIFEST_KEYS if k in manifest]
        if clash:
            raise StoreError(f"run {self.run_id}: manifest fields {clash} are set by the store")
        doc: dict[str, Any] = {
            "manifest_format": MANIFEST_FORMAT,
            "run_id": self.run_id,
            "kind": self.kind,
            "created_at": utc_now(),
            "config": None,
            "data_fingerprint": None,
            "metrics": {},
            "parent_model": None,
            "package_versions": package_versions(),
            "git_revision": git_revision(),
        }
        doc.update(manifest)
        doc["objects"] = {k: self.objects[k] for k in sorted(self.objects)}
        data = dumps_json(doc)
        key = self.prefix + MANIFEST
        try:
            self.store.backend.put_bytes(key, data, if_absent=True)
        except PreconditionFailed:
            raise StoreError(
                f"run {self.run_id} already has a manifest at {self.url(MANIFEST)} (committed twice, "
                "or garbage-collected as an orphan: `driftloop artifacts gc` claims runs older "
                "than its minimum age that have no manifest)"
            ) from None
        self._state = "committed"
        return json.loads(data)

    def abort(self) -> None:
        """Delete every object this writer wrote (the run never becomes visible)."""
        if self._state == "committed":
            raise StoreError(f"run {self.run_id} is committed; delete it with ArtifactStore.delete_run")
        self._state = "aborted"
        errors = []
        for key in reversed(self._written):
            try:
                self.store.backend.delete(key)
            except StoreError as e:
                errors.append(str(e))
        if errors:
            raise StoreError(f"aborting run {self.run_id} left objects behind: {'; '.join(errors)}")

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._state != "open":
            return
        try:
            self.abort()
        except StoreError as e:
            if exc is not None:
                exc.add_note(str(e))
            else:
                raise
        if exc is None:
            raise StoreError(f"run {self.run_id} was left without commit(); its objects were deleted")


class ArtifactStore:
    """Runs (objects plus a manifest) in a backend; see the module docstring."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._manifests: dict[str, tuple[dict[str, Any], str]] = {}

    @classmethod
    def from_config(cls, cfg: StoreConfig) -> "ArtifactStore":
        return cls(open_backend(cfg))

    def __repr__(self) -> str:
        return f"ArtifactStore({self.backend!r})"

    # ---- writing

    def begin_run(self, kind: str, run_id: str | None = None) -> RunWriter:
        """A writer for a new run of ``kind`` (``training``, ``drift``, ...). A given ``run_id``
        must have the run-id form for this kind and no objects yet."""
        if run_id is None:
            run_id = new_run_id(kind)
        else:
            got_kind, _ = parse_run_id(run_id)
            if got_kind != kind:
                raise StoreError(f"run id {run_id!r} is not of kind {kind!r}")
            existing = self.backend.list(f"{RUNS_PREFIX}{run_id}/")
            if existing:
                raise StoreError(f"run {run_id} already has objects ({existing[0]}, ...)")
        return RunWriter(self, kind, run_id)

    def delete_run(self, run_id: str) -> None:
        """Unpublish a run (manifest first, so readers stop seeing it at once), then its objects."""
        parse_run_id(run_id)
        prefix = f"{RUNS_PREFIX}{run_id}/"
        self.backend.delete(prefix + MANIFEST)
        self._manifests.pop(run_id, None)
        for key in self.backend.list(prefix):
            self.backend.delete(key)

    # ---- reading

    def list_runs(self, kind: str | None = None) -> list[str]:
        """Ids of committed runs (their manifest exists), oldest first; only ``kind`` when given."""
        prefix = RUNS_PREFIX + (f"{kind}-" if kind else "")
        out, collected = [], set()
        for key in self.backend.list(prefix):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == COLLECTED_MARKER:
                collected.add(parts[1])
            if len(parts) == 3 and parts[2] == MANIFEST:
                m = RUN_ID_RE.match(parts[1])
                if m and (kind is None or m["kind"] == kind):
                    out.append((m["ts"], parts[1]))
        return [rid for _, rid in sorted(out) if rid not in collected]

    def orphaned_runs(self, min_age_s: float = 0.0, now: _dt.datetime | None = None) -> list[dict[str, Any]]:
        """Runs with objects but no manifest (never committed: killed, or still being written),
        started at least ``min_age_s`` ago (the run id's timestamp), oldest first:
        ``{"run_id", "objects", "age_s"}``. Keys under ``runs/`` that are not a run id are ignored."""
        now = now or _dt.datetime.now(_dt.timezone.utc)
        keys: dict[str, list[str]] = {}
        for key in self.backend.list(RUNS_PREFIX):
            parts = key.split("/")
            if len(parts) >= 3 and RUN_ID_RE.match(parts[1]):
                keys.setdefault(parts[1], []).append(key)
        out = []
        for run_id, ks in keys.items():
            names = {k.split("/", 2)[2] for k in ks}
            if MANIFEST in names or COLLECTED_MARKER in names:
                continue
            started = _dt.datetime.strptime(parse_run_id(run_id)[1], "%Y%m%dT%H%M%S").replace(tzinfo=_dt.timezone.utc)
            age = (now - started).total_seconds()
            if age >= min_age_s:
                out.append({"run_id": run_id, "objects": sorted(ks), "age_s": round(age, 1)})
        return sorted(out, key=lambda o: (parse_run_id(o["run_id"])[1], o["run_id"]))

    def collect_orphans(
        self,
        referenced: Mapping[str, list[str]],
        min_age_s: float,
        dry_run: bool = False,
        now: _dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Delete the objects of orphaned runs (no manifest) started at least ``min_age_s`` ago,
        except those in ``referenced`` (run id -> the registry versions naming it, read before
        this call: :func:`tasks.store.gc.collect_garbage`).

        Each run is claimed with a write-once tombstone at its manifest key before anything is
        deleted; a run whose writer commits first is skipped (``committed_meanwhile``).
        Returns what was (or, ``dry_run``, would be) collected."""
        if min_age_s < 0:
            raise StoreError(f"collect_garbage: min_age_s must be >= 0, got {min_age_s}")
        orphans = self.orphaned_runs(min_age_s, now=now)
        report: dict[str, Any] = {
            "store": repr(self.backend),
            "min_age_s": min_age_s,
            "dry_run": dry_run,
            "runs": [],
            "objects_deleted": 0,
            "committed_meanwhile": [],
            "referenced_by_registry": [],
        }
        for o in orphans:
            if o["run_id"] in referenced:
                report["referenced_by_registry"].append(dict(o, versions=referenced[o["run_id"]]))
                continue
            if dry_run:
                report["runs"].append(o)
                continue
            prefix = f"{RUNS_PREFIX}{o['run_id']}/"
            tomb = dumps_json(
                {
                    "manifest_format": MANIFEST_FORMAT,
                    "run_id": o["run_id"],
                    "kind": parse_run_id(o["run_id"])[0],
                    TOMBSTONE_FIELD: utc_now(),
                    "objects": {},
                }
            )
            try:
                self.backend.put_bytes(prefix + MANIFEST, tomb, if_absent=True)
            except PreconditionFailed:
                report["committed_meanwhile"].append(o["run_id"])
                continue
            self.backend.put_bytes(prefix + COLLECTED_MARKER, tomb)
            deleted = 0
            for key in self.backend.list(prefix):
                if key not in (prefix + MANIFEST, prefix + COLLECTED_MARKER):
                    self.backend.delete(key)
                    deleted += 1
            report["runs"].append(dict(o, objects_deleted=deleted))
            report["objects_deleted"] += deleted
        return report

    def _manifest_entry(self, run_id: str, fresh: bool = False) -> tuple[dict[str, Any], str]:
        if run_id in self._manifests and not fresh:  # manifests are write-once: caching is safe
            return self._manifests[run_id]
        parse_run_id(run_id)
        key = f"{RUNS_PREFIX}{run_id}/{MANIFEST}"
        try:
            data = self.backend.get_bytes(key)
        except ObjectNotFound as e:
            raise ObjectNotFound(f"run {run_id} has no manifest (unknown, uncommitted or aborted run): {e}") from None
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IntegrityError(f"{self.backend.url(key)} is not valid JSON: {e}") from None
        if isinstance(doc, dict) and TOMBSTONE_FIELD in doc:
            raise ObjectNotFound(
                f"run {run_id} was never committed; its orphaned objects were garbage-collected "
                f"at {doc[TOMBSTONE_FIELD]}"
            )
        entry = (doc, hashlib.sha256(data).hexdigest())
        self._manifests[run_id] = entry
        return entry

    def manifest(self, run_id: str) -> dict[str, Any]:
        """The run's manifest (ObjectNotFound naming the run when it has none)."""
        return json.loads(json.dumps(self._manifest_entry(run_id)[0]))  # a copy the caller may mutate

    def manifest_sha256(self, run_id: str, fresh: bool = False) -> str:
        """sha256 of the manifest's bytes (the version registry pins it); ``fresh`` re-reads it."""
        return self._manifest_entry(run_id, fresh)[1]

    def object_url(self, run_id: str, name: str) -> str:
        return self.backend.url(f"{RUNS_PREFIX}{run_id}/{name}")

    def _entry(self, run_id: str, name: str) -> dict[str, Any]:
        objects = self._manifest_entry(run_id)[0].get("objects", {})
        if name not in objects:
            raise ObjectNotFound(f"run {run_id} has no object {name!r} (it has: {sorted(objects)})")
        return objects[name]

    def _verify(self, url: str, run_id: str, entry: Mapping[str, Any], digest: str, size: int) -> None:
        if size != entry["size"] or digest != entry["sha256"]:
            raise IntegrityError(
                f"{url}: content does not match the manifest of run {run_id} "
                f"(sha256 {digest[:16]}..., {size} bytes; recorded "
                f"{str(entry['sha256'])[:16]}..., {entry['size']} bytes)"
            )

    def get_bytes(self, run_id: str, name: str) -> bytes:
        """An object's bytes, verified against the manifest's sha256 and size."""
        entry = self._entry(run_id, name)
        key = f"{RUNS_PREFIX}{run_id}/{name}"
        data = self.backend.get_bytes(key)
        self._verify(self.backend.url(key), run_id, entry, hashlib.sha256(data).hexdigest(), len(data))
        return data

    def get_file(self, run_id: str, name: str, path: str | os.PathLike) -> Path:
        """Download an object to ``path`` (streamed; multipart on S3), verified before it appears there."""
        entry = self._entry(run_id, name)
        key = f"{RUNS_PREFIX}{run_id}/{name}"
        dest = Path(path)
        tmp = dest.with_name(f".{dest.name}.verify-{uuid.uuid4().hex[:8]}")
        try:
            digest, size = self.backend.get_file(key, tmp)  # hashed during the transfer
            self._verify(self.backend.url(key), run_id, entry, digest, size)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest

    def get_json(self, run_id: str, name: str) -> Any:
        data = self.get_bytes(run_id, name)
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"{self.object_url(run_id, name)} is not valid JSON: {e}") from None

    def get_npz(self, run_id: str, name: str) -> dict[str, np.ndarray]:
        return npz_load(self.get_bytes(run_id, name), self.object_url(run_id, name))

    def get_state_dict(self, run_id: str, name: str = MODEL_WEIGHTS) -> dict[str, Any]:
        """A safetensors state dict; anything else (a pickle) is refused without being parsed."""
        data = self.get_bytes(run_id, name)
        where = self.object_url(run_id, name)
        check_safetensors(data, where)
        try:
            return state_dict_from_bytes(data)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError
            raise StoreError(f"{where} is not a valid safetensors file: {e}") from None

    def verify_run(self, run_id: str) -> dict[str, Any]:
        """Re-read and check every object of a run; returns the manifest, raises IntegrityError."""
        for name in self._manifest_entry(run_id)[0].get("objects", {}):
            self.get_bytes(run_id, name)
        return self.manifest(run_id)


def write_run(
    store: ArtifactStore,
    kind: str,
    objects: Mapping[str, Any],
    manifest: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Write a whole run in one call and return its committed manifest (includes ``run_id``).

    ``objects`` maps names to values, stored by type: ``bytes`` as is, ``os.PathLike`` as an
    uploaded file, a ``*.npz`` name's mapping of arrays as npz, a ``*.safetensors`` name's state
    dict as safetensors, anything else as JSON. Nothing is left behind when a write fails.
    """
    with store.begin_run(kind, run_id) as w:
        for name, value in objects.items():
            if isinstance(value, (bytes, bytearray, memoryview)):
                w.put_bytes(name, bytes(value))
            elif isinstance(value, os.PathLike):
                w.put_file(name, value)
            elif name.endswith(".npz"):
                w.put_npz(name, **dict(value))
            elif name.endswith(".safetensors"):
                w.put_state_dict(name, value)
            else:
                w.put_json(name, value)
        return w.commit(manifest)
