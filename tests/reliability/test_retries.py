"""Orchestration: a task that fails then succeeds (Prefect retries) writes exactly one artifact.

Faults are injected in the store backend under the production Prefect tasks that write to the
store and registry, ``tasks/models/steps.py``'s ``register`` (write the run, then add a registry
version) and ``promote``, with the project's one retry preset (``IO_RETRY``: retry count and
retry condition as configured; only the delay is set to 0 to keep the test short). Two kinds of
transient fault: a write that fails before anything lands, and a write that lands but whose
response is lost (the caller sees an error although the object exists), which is the case that
duplicates artifacts when a step is not idempotent.
"""

from __future__ import annotations

import pytest

from tasks.data.schema import infer_schema
from tasks.data.sources import load_digits_dataset, split_dataset
from tasks.data.steps import IO_RETRIES, is_transient
from tasks.errors import RegistryCorrupt, RegistryError, StoreError
from tasks.models import steps
from tasks.models.trained import TrainedModel
from tasks.settings import Settings
from tasks.store.artifacts import ArtifactStore
from tasks.store.codecs import state_dict_to_bytes
from tasks.store.config import StoreConfig
from tasks.store.local import LocalBackend
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


@pytest.mark.parametrize("exc", [RegistryError("lost the promotion race"), RegistryCorrupt("champion.json")])
def test_registry_rules_are_not_retried(exc):
    """A lost race or a corrupt registry file fails the register/promote task at once."""
    assert is_transient(exc) is False


def _quick(task_):
    """The task as configured (retries, retry condition), without the waits between attempts."""
    return task_.with_options(retry_delay_seconds=0)


def _candidate(tmp_path):
    """Settings on a local store, and a tiny digits model with its schema and splits."""
    settings = Settings(store=StoreConfig(uri=str(tmp_path / "store")))
    splits = split_dataset(load_digits_dataset(), 0, 0.15, 0.2)
    model, spec = tiny_model()
    return settings, TrainedModel(spec, state_dict_to_bytes(model)), infer_schema(splits.train), splits


def _register(settings, model, schema, splits):
    return _quick(steps.register_candidate)(
        settings, model, schema, splits, {"test_accuracy": 0.9}, {}, None, {"event": "test"}
    )


def test_failing_twice_then_succeeding_writes_one_run_one_version_one_promotion(
    prefect_api, tmp_path, monkeypatch, figures
):
    from prefect import flow

    settings, model, schema, splits = _candidate(tmp_path)
    name = settings.registry.model_name
    faults = Faults(monkeypatch)

    @flow(name="reliability-retries")
    def pipeline():
        # register: attempt 1 fails on the weights (the writer deletes what it wrote), attempt 2 on
        # the manifest, attempt 3 writes the run and its version.
        faults.plan += [("put", "model.safetensors", "before"), ("put", "manifest.json", "before")]
        registered = _register(settings, model, schema, splits)
        # promote: attempt 1's compare-and-swap lands, response lost; attempt 2 cannot read the
        # pointer; attempt 3 sees the champion already is this version and writes nothing.
        faults.plan += [
            ("put", f"registry/{name}/champion.json", "after"),
            ("get", f"registry/{name}/champion.json", "before"),
        ]
        event = _quick(steps.promote_version)(settings, registered["version"], "first", None)
        champion = steps.get_champion(settings)
        loaded = steps.load_champion_model(settings, champion)
        # a promotion the gate decided against a champion that has since changed is a no-op here
        # (the champion already is version 1), not a second promotion
        again = _quick(steps.promote_version)(settings, 1, "stale", None)
        return registered, event, champion, loaded, again

    registered, event, champion, loaded, again = pipeline()
    run_id = registered["run_id"]
    store = ArtifactStore.from_config(settings.store)
    reg = ModelRegistry(store, name)
    run_keys = store.backend.list("runs/")
    figures.update(
        faults_injected=faults.injected,
        task_attempts=6,
        runs_completed=len(store.list_runs()),
        versions=len(reg.versions()),
        promotions=len(reg.history()),
        orphaned_objects=len([k for k in run_keys if not k.startswith(f"runs/{run_id}/")]),
        objects_lost=0 if store.verify_run(run_id) else 1,
    )
    assert faults.injected == 4 and faults.plan == []
    assert store.list_runs() == [run_id]
    # the failed attempts left nothing behind: every object is the one run's
    assert run_keys and all(k.startswith(f"runs/{run_id}/") for k in run_keys)
    assert registered["version"] == 1 and [v["version"] for v in reg.versions()] == [1]
    assert reg.champion_version() == 1 and [(e["seq"], e["to"]) for e in reg.history()] == [(1, 1)]
    assert event["to"] == 1 and again["seq"] == 1
    assert champion["run_id"] == run_id and loaded.weights == model.weights  # verified weights of the one run


def test_a_lost_registration_response_does_not_duplicate_the_run(prefect_api, tmp_path, monkeypatch):
    from prefect import flow

    settings, model, schema, splits = _candidate(tmp_path)
    faults = Faults(monkeypatch)
    faults.plan += [("put", f"registry/{settings.registry.model_name}/versions/", "after")]

    @flow(name="reliability-retries-lost-registration")
    def pipeline():
        return _register(settings, model, schema, splits)

    pipeline()
    store = ArtifactStore.from_config(settings.store)
    assert faults.injected == 1
    assert len(store.list_runs()) == 1 and len(ModelRegistry(store, settings.registry.model_name).versions()) == 1


def test_a_fault_that_persists_exhausts_the_retries_and_leaves_nothing(prefect_api, tmp_path, monkeypatch, figures):
    """A fault on every attempt exhausts the retries: the task fails cleanly and nothing is visible."""
    from prefect import flow

    settings, model, schema, splits = _candidate(tmp_path)
    faults = Faults(monkeypatch)
    faults.plan += [("put", "manifest.json", "before")] * (IO_RETRIES + 1)

    @flow(name="reliability-retries-exhausted")
    def pipeline():
        return _register(settings, model, schema, splits)

    state = pipeline(return_state=True)
    store = ArtifactStore.from_config(settings.store)
    figures.update(
        faults_injected=faults.injected,
        runs_completed=len(store.list_runs()),
        leftover_objects=len(store.backend.list("runs/")),
        objects_lost=0,
    )
    assert state.is_failed() and faults.injected == IO_RETRIES + 1
    with pytest.raises(StoreError, match="injected transient fault"):
        state.result()
    assert store.list_runs() == [] and store.backend.list("runs/") == []
