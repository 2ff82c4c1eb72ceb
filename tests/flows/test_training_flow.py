"""The training flow end to end under a real Prefect API, on both store backends."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.data.sources import load_digits_dataset
from tasks.errors import ValidationFailed
from tasks.settings import load_settings
from tasks.store.artifacts import ArtifactStore
from tasks.store.registry import ModelRegistry

pytestmark = pytest.mark.integration

FAST = {"tuning.enabled": False, "federated.enabled": False, "adversarial.enabled": False}


def _settings(store_cfg=None, uri=None, **over):
    s = load_settings(profile="smoke", overrides={**FAST, **over}, environ={})
    if store_cfg is not None:
        s = s.model_copy(update={"store": store_cfg})
    elif uri is not None:
        s.store.uri = uri
    return s


@pytest.fixture(params=["local", "s3"])
def store_settings(request, tmp_path):
    if request.param == "local":
        return _settings(uri=str(tmp_path / "store"))
    return _settings(store_cfg=request.getfixturevalue("s3_store_config"))


def test_training_registers_champion_with_verified_manifest(prefect_api, store_settings):
    from flows.training import training

    result = training(store_settings)
    assert result["promoted"] and result["version"] == 1
    assert result["metrics"]["test_accuracy"] >= 0.95
    store = ArtifactStore.from_config(store_settings.store)
    reg = ModelRegistry(store, store_settings.registry.model_name)
    assert reg.champion()["version"] == 1
    manifest = store.verify_run(result["run_id"])
    assert manifest["config"]["seed"] == store_settings.seed
    assert manifest["package_versions"]["torch"].startswith("2.13")
    assert set(manifest["data_fingerprint"]) == {"train", "val", "test"}
    assert {"model.safetensors", "model.json", "schema.json", "metrics.json"} <= set(manifest["objects"])

    # A second run is compared with the champion on the same test split; lineage names the parent.
    second = training(store_settings)
    assert second["version"] == 2 and second["champion_metrics"] is not None
    assert store.manifest(second["run_id"])["parent_model"]["version"] == 1
    assert reg.champion()["version"] == (2 if second["promoted"] else 1)


def test_corrupted_data_is_quarantined_and_nothing_trained(prefect_api, tmp_path):
    from flows.training import training

    settings = _settings(uri=str(tmp_path / "store"))
    training(settings)  # a champion whose schema new data must meet
    store = ArtifactStore.from_config(settings.store)
    runs_before = store.list_runs()

    d = load_digits_dataset()
    x = d.x.reshape(len(d), -1).copy()
    x[3, 5] = np.nan
    x[10, 0] = 7.0  # far outside [0, 1]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x, y=d.y)
    settings.data.source = str(bad)
    settings.data.sample_shape = [1, 8, 8]
    with pytest.raises(ValidationFailed) as e:
        training(settings)
    msg = str(e.value)
    assert "non_finite" in msg and "out_of_range" in msg and "quarantine" in msg
    assert store.list_runs() == runs_before  # nothing trained, nothing registered
    assert ModelRegistry(store, settings.registry.model_name).champion()["version"] == 1
    q = [k for k in store.backend.list("quarantine/")]
    assert any(k.endswith("report.json") for k in q) and any(k.endswith("bad.npz") for k in q)
