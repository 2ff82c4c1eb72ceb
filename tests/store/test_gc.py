"""Garbage collection of orphaned runs (objects without a manifest), on a local dir and on SeaweedFS."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tasks.errors import ObjectNotFound, StoreError
from tasks.store.artifacts import COLLECTED_MARKER, MANIFEST, ArtifactStore, new_run_id
from tasks.store.gc import collect_garbage

DAY = 86400.0


def _orphan(store: ArtifactStore, kind: str, when: dt.datetime, names=("model.safetensors", "metrics.json")):
    """What a writer killed before its manifest leaves behind: objects under a run prefix, no manifest."""
    w = store.begin_run(kind, run_id=new_run_id(kind, now=when))
    for n in names:
        w.put_bytes(n, b"partial " + n.encode())
    return w  # never committed, never aborted


def test_gc_deletes_only_old_orphans_and_keeps_committed_runs(store):
    now = dt.datetime.now(dt.timezone.utc)
    with store.begin_run("training") as w:
        w.put_bytes("a.bin", b"a")
        committed = w.commit()["run_id"]
    old = _orphan(store, "training", now - dt.timedelta(days=3))
    young = _orphan(store, "drift", now - dt.timedelta(minutes=5))
    before = set(store.backend.list(""))

    found = store.orphaned_runs(min_age_s=DAY)
    assert [o["run_id"] for o in found] == [old.run_id] and len(found[0]["objects"]) == 2
    assert {o["run_id"] for o in store.orphaned_runs(0)} == {old.run_id, young.run_id}

    dry = collect_garbage(store, min_age_s=DAY, dry_run=True)
    assert [r["run_id"] for r in dry["runs"]] == [old.run_id] and set(store.backend.list("")) == before

    rep = collect_garbage(store, min_age_s=DAY)
    assert [r["run_id"] for r in rep["runs"]] == [old.run_id] and rep["objects_deleted"] == 2
    left = set(store.backend.list(""))
    assert not [k for k in left if k.startswith(old.prefix) and not k.endswith((MANIFEST, COLLECTED_MARKER))]
    assert all(k in left for k in before if not k.startswith(old.prefix))  # young orphan + committed run untouched
    assert store.list_runs() == [committed] and store.get_bytes(committed, "a.bin") == b"a"
    assert store.orphaned_runs(0) and [o["run_id"] for o in store.orphaned_runs(0)] == [young.run_id]
    with pytest.raises(ObjectNotFound, match="garbage-collected"):
        store.manifest(old.run_id)
    assert collect_garbage(store, min_age_s=DAY)["runs"] == []  # idempotent


def test_a_slow_writer_loses_its_commit_to_gc_never_its_objects(store):
    """The writer was not dead, only slower than the minimum age: its commit fails naming the run,
    and nothing half-deleted is ever published."""
    slow = _orphan(store, "training", dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    collect_garbage(store, min_age_s=DAY)
    with pytest.raises(StoreError, match=f"{slow.run_id} already has a manifest.*garbage-collected"):
        slow.commit()
    assert store.list_runs() == []
    with pytest.raises(StoreError, match="already has objects"):
        store.begin_run("training", run_id=slow.run_id)  # a collected run id is never reused


def test_gc_skips_a_run_committed_meanwhile(store, monkeypatch):
    """The writer commits between GC's listing and its claim: the write-once claim loses, nothing is deleted."""
    w = _orphan(store, "training", dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    real = store.orphaned_runs

    def listed_then_committed(*a, **kw):
        found = real(*a, **kw)
        w.commit()
        return found

    monkeypatch.setattr(store, "orphaned_runs", listed_then_committed)
    rep = collect_garbage(store, min_age_s=DAY)
    assert rep["committed_meanwhile"] == [w.run_id] and rep["objects_deleted"] == 0
    assert store.list_runs() == [w.run_id] and store.get_bytes(w.run_id, "metrics.json") == b"partial metrics.json"


def test_gc_refuses_a_negative_age_and_writer_refuses_reserved_names(store):
    with pytest.raises(StoreError, match="min_age_s"):
        collect_garbage(store, min_age_s=-1)
    w = store.begin_run("training")
    with pytest.raises(StoreError, match="reserved"):
        w.put_bytes(COLLECTED_MARKER, b"{}")
    w.abort()


def test_cli_artifacts_gc(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.store.config import StoreConfig

    store = ArtifactStore.from_config(StoreConfig(uri=str(tmp_path / "store")))
    old = _orphan(store, "training", dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=30))
    args = ["artifacts", "gc", "--param", f"store.uri={tmp_path / 'store'}", "--json"]
    r = CliRunner().invoke(app, [*args, "--older-than-hours", "48"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["runs"] == []
    r = CliRunner().invoke(app, [*args, "--older-than-hours", "24", "--dry-run"])
    assert r.exit_code == 0 and [x["run_id"] for x in json.loads(r.output)["runs"]] == [old.run_id]
    assert store.orphaned_runs(0)
    r = CliRunner().invoke(app, ["artifacts", "gc", "--param", f"store.uri={tmp_path / 'store'}"])
    assert r.exit_code == 0, r.output
    assert old.run_id in r.output and "2 objects" in r.output and not store.orphaned_runs(0)
