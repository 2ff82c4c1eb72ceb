"""The store's Prefect tasks: thin, retried on I/O errors only; the pure modules stay Prefect-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.errors import IntegrityError, ObjectNotFound, RegistryError, StoreError
from tasks.store import steps
from tasks.store.backends import LocalBackend, PreconditionFailed
from tasks.store.config import StoreConfig
from tests.store.conftest import tiny_model


def test_pure_store_modules_do_not_import_prefect():
    code = ("import sys, tasks.store.backends, tasks.store.artifacts, tasks.store.registry; "
            "bad = [m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))


class _State:
    def __init__(self, exc):
        self.data = exc


@pytest.mark.parametrize("exc, retry", [
    (StoreError("S3 put failed: SlowDown"), True),
    (ObjectNotFound("s3://b/k does not exist"), False),
    (IntegrityError("sha256 mismatch"), False),
    (PreconditionFailed("exists"), False),
    (RegistryError("lost race"), False),
    (ValueError("bug"), False),
])
def test_only_io_failures_are_retried(exc, retry):
    assert steps._transient(None, None, _State(exc)) is retry


def _objects():
    model, spec = tiny_model()
    return {"model.json": spec, "model.safetensors": model.state_dict(), "metrics.json": {"accuracy": 0.9}}


@pytest.mark.integration
def test_flow_commits_registers_promotes_and_retries_io(prefect_api, tmp_path, monkeypatch):
    from prefect import flow

    cfg = StoreConfig(uri=str(tmp_path / "store"))
    real_put = LocalBackend.put_bytes
    failures = {"left": 1}

    def flaky_put(self, key, data, **kw):
        if key.endswith("manifest.json") and failures["left"]:
            failures["left"] -= 1
            raise StoreError(f"write {key} failed: simulated network blip")
        return real_put(self, key, data, **kw)

    monkeypatch.setattr(LocalBackend, "put_bytes", flaky_put)

    @flow(name="store-steps-test")
    def pipeline():
        man = steps.commit_run(cfg, "training", _objects(), {"metrics": {"accuracy": 0.9}})
        v = steps.register_model(cfg, "digits", man["run_id"], {"accuracy": 0.9}, {"event": "test"})
        event = steps.promote_model(cfg, "digits", v, expected_champion=None, reason="first")
        spec, weights, record = steps.load_model_version(cfg, "digits")
        return man, v, event, record, steps.champion_record(cfg, "digits")

    man, v, event, record, champ = pipeline()
    assert failures["left"] == 0  # the first commit failed and the task was retried
    assert v == 1 and event["to"] == 1 and record["run_id"] == man["run_id"] == champ["run_id"]
    from tasks.store.artifacts import ArtifactStore

    store = ArtifactStore.from_config(cfg)
    assert store.list_runs() == [man["run_id"]]  # the failed attempt left nothing behind
    assert len(store.backend.list("runs/")) == 4  # three objects + manifest of the one run

    @flow(name="store-steps-lost-race")
    def stale_promotion():
        return steps.promote_model(cfg, "digits", 1, expected_champion=None)  # champion is 1: no-op

    assert stale_promotion()["seq"] == 1
