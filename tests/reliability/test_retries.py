"""Orchestration: a task that fails twice then succeeds (Prefect retries) writes exactly one artifact.

Faults are injected in the store backend under the real Prefect tasks of ``tasks/store/steps.py``
(their retry count and retry condition as configured; only the delay is set to 0 to keep the test
short). Two kinds of transient fault: a write that fails before anything lands, and a write that
lands but whose response is lost (the caller sees an error although the object exists), which is
the case that duplicates artifacts when a step is not idempotent.
"""

from __future__ import annotations

import pytest

from tasks.errors import StoreError
from tasks.store import steps
from tasks.store.artifacts import ArtifactStore
from tasks.store.backends import LocalBackend
from tasks.store.config import StoreConfig
from tasks.store.registry import ModelRegistry
from tests.store.conftest import tiny_model

pytestmark = pytest.mark.integration


class Faults:
    """Makes ``LocalBackend.put_bytes``/``list``/``get_with_token`` fail on chosen calls; counts what it injected."""

    def __init__(self, monkeypatch):
        self.injected = 0
        self.plan: list[tuple[str, str, str]] = []  # (method, key substring, "before"|"after")
        real_put, real_list, real_get = LocalBackend.put_bytes, LocalBackend.list, LocalBackend.get_with_token
        faults = self

        def put_bytes(backend, key, data, **kw):
            mode = faults._take("put", key)
            if mode == "before":
                raise StoreError(f"write {key} failed: injected transient fault")
            real_put(backend, key, data, **kw)
            if mode == "after":
                raise StoreError(f"write {key}: injected lost response (the object was written)")

        def list_(backend, prefix=""):
            if faults._take("list", prefix) == "before":
                raise StoreError(f"list {prefix} failed: injected transient fault")
            return real_list(backend, prefix)

        def get_with_token(backend, key):
            if faults._take("get", key) == "before":
                raise StoreError(f"read {key} failed: injected transient fault")
            return real_get(backend, key)

        monkeypatch.setattr(LocalBackend, "put_bytes", put_bytes)
        monkeypatch.setattr(LocalBackend, "get_with_token", get_with_token)
        monkeypatch.setattr(LocalBackend, "list", list_)

    def _take(self, method: str, key: str) -> str | None:
        for i, (m, sub, mode) in enumerate(self.plan):
            if m == method and sub in key:
                del self.plan[i]
                self.injected += 1
                return mode
        return None


def _quick(task_):
    """The task as configured (retries, retry condition), without the waits between attempts."""
    return task_.with_options(retry_delay_seconds=0)


def test_failing_twice_then_succeeding_writes_one_run_one_version_one_promotion(prefect_api, tmp_path,
                                                                                 monkeypatch, figures):
    from prefect import flow

    cfg = StoreConfig(uri=str(tmp_path / "store"))
    faults = Faults(monkeypatch)
    model, spec = tiny_model()
    objects = {"model.json": spec, "model.safetensors": model.state_dict(), "metrics.json": {"accuracy": 0.9}}

    @flow(name="reliability-retries")
    def pipeline():
        # commit: attempt 1 fails on the weights (the writer deletes what it wrote), attempt 2 on
        # the manifest, attempt 3 succeeds.
        faults.plan += [("put", "model.safetensors", "before"), ("put", "manifest.json", "before")]
        man = _quick(steps.commit_run)(cfg, "training", objects, {"metrics": {"accuracy": 0.9}})
        # register: attempt 1's version record lands but its response is lost; attempt 2 cannot
        # list the versions; attempt 3 finds the record of attempt 1 and returns its number.
        faults.plan += [("put", "registry/digits/versions/", "after"), ("list", "registry/digits/versions/", "before")]
        version = _quick(steps.register_model)(cfg, "digits", man["run_id"], {"accuracy": 0.9})
        # promote: attempt 1's compare-and-swap lands, response lost; attempt 2 cannot read the
        # pointer; attempt 3 sees the champion already is this version and writes nothing.
        faults.plan += [("put", "registry/digits/champion.json", "after"),
                        ("get", "registry/digits/champion.json", "before")]
        event = _quick(steps.promote_model)(cfg, "digits", version, expected_champion=None, reason="first")
        return man, version, event

    man, version, event = pipeline()
    store = ArtifactStore.from_config(cfg)
    reg = ModelRegistry(store, "digits")
    run_keys = store.backend.list("runs/")
    figures.update(faults_injected=faults.injected, task_attempts=9, runs_completed=len(store.list_runs()),
                   versions=len(reg.versions()), promotions=len(reg.history()),
                   orphaned_objects=len([k for k in run_keys if not k.startswith(f"runs/{man['run_id']}/")]),
                   objects_lost=0 if store.verify_run(man["run_id"]) else 1)
    assert faults.injected == 6 and faults.plan == []
    assert store.list_runs() == [man["run_id"]]
    # three objects + the manifest of the one run: the failed attempts left nothing behind
    assert run_keys == sorted(f"runs/{man['run_id']}/{n}" for n in [*objects, "manifest.json"])
    assert version == 1 and [v["version"] for v in reg.versions()] == [1]
    assert reg.champion_version() == 1 and [(e["seq"], e["to"]) for e in reg.history()] == [(1, 1)]
    assert event["to"] == 1
    assert reg.load()[2]["run_id"] == man["run_id"]  # verified weights of the one run


def test_a_fault_that_persists_exhausts_the_retries_and_leaves_nothing(prefect_api, tmp_path, monkeypatch, figures):
    """A fault on every attempt exhausts the retries: the task fails cleanly and nothing is visible."""
    from prefect import flow

    cfg = StoreConfig(uri=str(tmp_path / "store"))
    faults = Faults(monkeypatch)
    model, spec = tiny_model()
    faults.plan += [("put", "manifest.json", "before")] * (steps.RETRIES + 1)

    @flow(name="reliability-retries-exhausted")
    def pipeline():
        return _quick(steps.commit_run)(cfg, "training", {"model.json": spec, "model.safetensors": model.state_dict()})

    state = pipeline(return_state=True)
    store = ArtifactStore.from_config(cfg)
    figures.update(faults_injected=faults.injected, runs_completed=len(store.list_runs()),
                   leftover_objects=len(store.backend.list("runs/")), objects_lost=0)
    assert state.is_failed() and faults.injected == steps.RETRIES + 1
    with pytest.raises(StoreError, match="injected transient fault"):
        state.result()
    assert store.list_runs() == [] and store.backend.list("runs/") == []
