"""An image folder through every stage on the defaults, and the gate's fairness when retraining
adds rows (split from test_user_datasets.py so that pytest-xdist can run them beside it)."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.data.splits import SPLIT_IDS_NAME, SplitIds
from tasks.settings import load_settings
from tasks.store.artifacts import ArtifactStore
from tests.fixtures.datasets import generated_csv
from tests.flows.test_user_datasets import run_every_stage

pytestmark = pytest.mark.integration


# 30-70 s end to end: in the full suite, not in the quick `-m "not slow"` run.
@pytest.mark.slow
def test_image_folder_through_every_stage_on_the_defaults(prefect_api, tmp_path):
    run_every_stage(tmp_path, "image_folder")


def test_gate_test_split_holds_no_row_either_model_trained_on(prefect_api, tmp_path):
    from prefect import flow

    from flows.pipeline import PipelineInputs, run_pipeline
    from flows.training import training

    src = generated_csv(tmp_path / "table.csv", n=1200, d=8)
    fast = {
        "tuning.enabled": False,
        "federated.enabled": False,
        "adversarial.enabled": False,
        "data.source": str(src),
        "store.uri": str(tmp_path / "store"),
    }
    first = training(load_settings(profile="smoke", overrides=fast, environ={}))
    # Added labelled batches: new rows from the same generator, as files retraining reads.
    extra = pd.read_csv(generated_csv(tmp_path / "more.csv", n=300, d=8, seed=9))
    uris = []
    for i in range(2):
        p = tmp_path / f"batch-{i}.csv"
        extra.iloc[i * 150 : (i + 1) * 150].to_csv(p, index=False)
        uris.append(str(p))

    @flow(name="retraining-test")
    def retrain(s):
        return run_pipeline(s, PipelineInputs(trigger={"kind": "test"}, extra_batches=uris, warm_start=True))

    # Another seed too: hashing alone would then put champion training rows into the new test split.
    settings = load_settings(profile="smoke", overrides={**fast, "seed": 7}, environ={})
    second = retrain(settings)
    assert second["champion_metrics"] is not None
    store = ArtifactStore.from_config(settings.store)
    ids = {r["run_id"]: SplitIds.from_npz_bytes(store.get_bytes(r["run_id"], SPLIT_IDS_NAME)) for r in (first, second)}
    champ, cand = ids[first["run_id"]], ids[second["run_id"]]
    test = set(cand.test.tolist())
    assert not test & set(champ.trained_on.tolist())
    assert not test & set(cand.trained_on.tolist())
    assert set(champ.train.tolist()) <= set(cand.trained_on.tolist())  # the warm start inherits them
    assert cand.moved_from_test > 0
    m1, m2 = store.manifest(first["run_id"]), store.manifest(second["run_id"])
    assert m2["extra"]["splits"]["moved_from_test"] == cand.moved_from_test
    assert m1["data_fingerprint"]["test"] != m2["data_fingerprint"]["test"]
