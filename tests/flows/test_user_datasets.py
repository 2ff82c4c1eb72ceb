"""A new user's own data through every stage on the defaults (smoke budgets): tabular files of
different sizes and an image folder; and the gate's fairness when retraining adds rows."""

from __future__ import annotations

import json

import pytest

from tasks.settings import load_settings
from tasks.store.artifacts import ArtifactStore
from tests.fixtures.datasets import MAKERS, logistic_accuracy

pytestmark = pytest.mark.integration


# 30-70 s end to end: in the full suite, not in the quick `-m "not slow"` run.
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["breast_cancer_parquet", "generated_csv"])
def test_users_own_data_through_every_stage_on_the_defaults(prefect_api, tmp_path, kind):
    run_every_stage(tmp_path, kind)


def run_every_stage(tmp_path, kind):
    from flows.training import training

    source = MAKERS[kind](tmp_path)
    settings = load_settings(
        profile="smoke", overrides={"data.source": str(source), "store.uri": str(tmp_path / "store")}, environ={}
    )
    result = training(settings)
    assert result["stages"][:1] == ["validate"] and {"tune", "federate", "harden", "evaluate", "register"} <= set(
        result["stages"]
    )
    manifest = ArtifactStore.from_config(settings.store).manifest(result["run_id"])
    assert manifest["config"]["model"]["arch"] == ("cnn" if kind == "image_folder" else "mlp")
    assert manifest["config"]["registry"]["model_name"] == f"{source.stem}-classifier"
    spec = json.loads(ArtifactStore.from_config(settings.store).get_bytes(result["run_id"], "model.json"))
    assert spec["standardize"]["axis"] == ("channel" if kind == "image_folder" else "feature")
    assert manifest["extra"]["splits"]["test_fingerprint"] == manifest["data_fingerprint"]["test"]
    plain = logistic_accuracy(source, settings.seed)
    acc = result["metrics"]["test_accuracy"]
    # Smoke budgets (a few epochs per stage, adversarial fine-tuning on top): a loose bound here;
    # benchmarks/user_datasets.py measures the default budget (figures in the README).
    assert acc >= plain - 0.08, (acc, plain)
    assert result["metrics"]["robust_reliable"] == 1.0 and result["promoted"]
    print(f"{kind}: all stages (smoke) test accuracy {acc:.4f}, plain logistic regression {plain:.4f}")
