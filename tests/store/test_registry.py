"""The model registry on both backends: versions, champion, promote/rollback, races, safe loading."""

from __future__ import annotations

import json
import pickle
import threading

import pytest
import torch

from tasks.errors import IntegrityError, RegistryError, StoreError
from tasks.models.serialize import load_model
from tasks.store.artifacts import dumps_json
from tasks.store.codecs import state_dict_from_bytes
from tasks.store.registry import ModelRegistry
from tests.store.conftest import commit_model_run, flip_one_byte, tiny_model


@pytest.fixture
def registry(store):
    return ModelRegistry(store, "digits")


def _register(registry, n: int) -> list[int]:
    return [
        registry.register(
            commit_model_run(registry.store, {"accuracy": 0.5 + i / 100}, seed=i),
            {"accuracy": 0.5 + i / 100},
            lineage={"event": "test", "parent_version": i or None},
        )
        for i in range(n)
    ]


def _assert_history_consistent(history):
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    prev = None
    for e in history:
        assert e["from"] == prev and e["to"] != e["from"]
        assert e["actor"] and e["at"] and e["action"] in ("promote", "rollback")
        prev = e["to"]


def test_register_promote_rollback_history(registry):
    assert registry.champion() is None and registry.history() == [] and registry.versions() == []
    v1, v2, v3 = _register(registry, 3)
    assert (v1, v2, v3) == (1, 2, 3)
    rec = registry.get(2)
    assert rec["model_name"] == "digits" and rec["version"] == 2 and rec["metrics"] == {"accuracy": 0.51}
    assert rec["lineage"] == {"event": "test", "parent_version": 1} and rec["created_at"]
    assert registry.store.manifest(rec["run_id"])["run_id"] == rec["run_id"]
    assert [r["version"] for r in registry.versions()] == [1, 2, 3]

    e = registry.promote(1, reason="first model", actor="alice", expected_champion=None)
    assert e == {**e, "seq": 1, "action": "promote", "from": None, "to": 1, "reason": "first model", "actor": "alice"}
    registry.promote(2, reason="better")
    registry.promote(3, reason="best")
    assert registry.champion()["version"] == 3
    assert registry.promote(3)["seq"] == 3  # promoting the champion again changes nothing

    assert registry.rollback(reason="v3 misbehaves")["to"] == 2
    assert registry.rollback()["to"] == 1  # repeated rollbacks walk further back
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback()
    assert registry.rollback(to_version=3, reason="fixed upstream")["to"] == 3
    assert registry.rollback(to_version=2)["to"] == 2
    assert registry.champion_version() == 2

    history = registry.history()
    assert [(h["action"], h["from"], h["to"]) for h in history] == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("promote", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
        ("rollback", 1, 3),
        ("rollback", 3, 2),
    ]
    assert history[3]["reason"] == "v3 misbehaves" and history[0]["actor"] == "alice"
    _assert_history_consistent(history)


def test_registry_refuses_bad_requests_before_writing(registry, store):
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback()
    with pytest.raises(RegistryError, match="training-20000101T000000-abcdef"):
        registry.register("training-20000101T000000-abcdef", {})
    with store.begin_run("training") as w:
        w.put_bytes("weights.bin", b"x")
        rid = w.commit({})["run_id"]
    with pytest.raises(RegistryError, match="model.safetensors"):
        registry.register(rid, {})
    with pytest.raises(RegistryError, match="no version 7"):
        registry.promote(7)
    with pytest.raises(RegistryError, match="no champion yet"):
        registry.load()
    with pytest.raises(RegistryError, match="invalid model name"):
        ModelRegistry(store, "../escape")
    assert store.backend.list("registry/") == []
    v1, v2 = _register(registry, 2)
    registry.promote(v1)
    with pytest.raises(RegistryError, match="never champion"):
        registry.rollback(to_version=v2)


def test_registering_a_run_twice_returns_its_version(registry, store):
    rid = commit_model_run(store)
    assert registry.register(rid, {"a": 1}) == registry.register(rid, {"a": 1}) == 1
    assert len(registry.versions()) == 1
    # the same run may be a version of another model name
    assert ModelRegistry(store, "digits-robust").register(rid, {}) == 1


def test_version_records_are_write_once(registry):
    _register(registry, 1)
    key = registry._version_key(1)
    with pytest.raises(StoreError):
        registry.backend.put_bytes(key, b"{}", if_absent=True)
    assert registry.get(1)["version"] == 1


def _sync_first_read(registry, monkeypatch, parties: int) -> None:
    """Hold each thread after its first read of the champion pointer until all have read it, so the
    writes really race on the same state (only the compare-and-swap can then pick one winner)."""
    barrier = threading.Barrier(parties, timeout=30)
    seen = threading.local()
    real = registry._read_state

    def read_then_wait():
        state = real()
        if not getattr(seen, "done", False):
            seen.done = True
            barrier.wait()
        return state

    monkeypatch.setattr(registry, "_read_state", read_then_wait)


def test_concurrent_promotions_have_exactly_one_winner(registry, monkeypatch):
    v1, v2, v3 = _register(registry, 3)
    registry.promote(v1)
    _sync_first_read(registry, monkeypatch, 2)
    barrier = threading.Barrier(2)
    won, lost, other = [], [], []

    def promote(v):
        barrier.wait()
        try:
            won.append(registry.promote(v, reason=f"gate passed for {v}", expected_champion=v1))
        except RegistryError as e:
            lost.append(str(e))
        except Exception as e:  # noqa: BLE001 - anything else fails the test below
            other.append(repr(e))

    threads = [threading.Thread(target=promote, args=(v,)) for v in (v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    assert other == [] and len(won) == 1 and len(lost) == 1
    assert "concurrent promotion" in lost[0]
    assert registry.champion_version() == won[0]["to"]
    history = registry.history()
    assert len(history) == 2 and history[-1] == won[0]
    _assert_history_consistent(history)


def test_unconditional_concurrent_promotions_serialise_cleanly(registry, monkeypatch):
    versions = _register(registry, 4)
    _sync_first_read(registry, monkeypatch, 4)
    barrier = threading.Barrier(4)
    errors = []

    def promote(v):
        barrier.wait()
        try:
            registry.promote(v)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    assert errors == []
    history = registry.history()
    assert sorted(e["to"] for e in history) == versions  # every promotion applied exactly once
    assert registry.champion_version() == history[-1]["to"]
    _assert_history_consistent(history)


def test_concurrent_registrations_get_distinct_versions(registry, store):
    runs = [commit_model_run(store, seed=i) for i in range(4)]
    barrier = threading.Barrier(4)
    got = []

    def register(rid):
        barrier.wait()
        got.append((rid, registry.register(rid, {})))

    threads = [threading.Thread(target=register, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v for _, v in got) == [1, 2, 3, 4]
    assert {registry.get(v)["run_id"] for _, v in got} == set(runs)


def test_load_returns_verified_spec_and_weights(registry):
    v1, v2 = _register(registry, 2)
    registry.promote(v2)
    spec, weights, record = registry.load()
    assert record["version"] == v2 and spec["model"]["arch"] == "mlp"
    model = load_model(spec, weights)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert registry.load(v1)[2]["version"] == v1


def test_corrupted_weights_raise_integrity_error(registry, store):
    (v1,) = _register(registry, 1)
    key = f"runs/{registry.get(v1)['run_id']}/model.safetensors"
    flip_one_byte(store.backend, key, at=200)
    with pytest.raises(IntegrityError) as ei:
        registry.load(v1)
    assert store.backend.url(key) in str(ei.value)


class _Exploit:
    """Unpickling this runs ``open(marker, 'w')``: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_planted_pickle_is_refused_never_executed(registry, store, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"fc.weight": _Exploit(marker)})
    _, spec = tiny_model()

    # 1. a run whose weights are a pickle from the start (its sha256 matches): refused on load
    with store.begin_run("training") as w:
        w.put_json("model.json", spec)
        w.put_bytes("model.safetensors", payload)
        rid = w.commit({})["run_id"]
    v = registry.register(rid, {})
    with pytest.raises(StoreError, match="not a safetensors file"):
        registry.load(v)
    with pytest.raises(StoreError, match="not a safetensors file"):
        store.get_state_dict(rid)
    with pytest.raises(Exception) as ei:  # the parser itself refuses it too
        state_dict_from_bytes(payload)
    assert "safetensors" in type(ei.value).__module__.lower() or "header" in str(ei.value).lower()

    # 2. a pickle swapped in for good weights, manifest rewritten to match: the pinned manifest hash
    (good,) = [registry.register(commit_model_run(store), {})]
    good_run = registry.get(good)["run_id"]
    store.backend.put_bytes(f"runs/{good_run}/model.safetensors", payload)
    man = json.loads(store.backend.get_bytes(f"runs/{good_run}/manifest.json"))
    import hashlib

    man["objects"]["model.safetensors"] = {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    store.backend.put_bytes(f"runs/{good_run}/manifest.json", dumps_json(man))
    with pytest.raises(IntegrityError, match="manifest changed"):
        registry.load(good)
    assert not marker.exists()
    assert torch.__version__  # torch imported: no torch.load on this path either
