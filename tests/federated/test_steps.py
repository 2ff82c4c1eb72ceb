"""The Prefect ``federate`` task inside a flow: a simulation run, stored, with its artifacts."""

from __future__ import annotations

import pytest

from .conftest import fed_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_federate_task_stores_run_and_publishes_artifacts(prefect_api, s3_store_config, digits_splits):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from tasks.federated.steps import federate
    from tasks.store.artifacts import ArtifactStore
    from tasks.store.codecs import state_dict_from_bytes

    s = fed_settings(num_clients=3, rounds=2, central_baseline=True).model_copy(update={"store": s3_store_config})

    @flow(name="federate-test")
    def f():
        return federate(digits_splits, s)

    out = f()
    assert out["metrics"]["test_accuracy"] > 0.3 and len(out["rounds"]) == 3
    # federated evaluation on the clients' held-out rows beside the server's figure, every round
    assert all(r["client_eval_accuracy"] is not None and r["client_eval_examples"] > 0 for r in out["rounds"][1:])
    # the central baseline trained on the same split, recorded with the run
    assert 0.5 < out["central_baseline_accuracy"] <= 1.0
    store = ArtifactStore.from_config(s3_store_config)
    man = store.manifest(out["run_id"])
    assert "checkpoints/round-002.safetensors" in man["objects"]
    assert set(state_dict_from_bytes(out["weights"])) == set(store.get_state_dict(out["run_id"], "model.safetensors"))

    async def keys():
        async with get_client() as c:
            return {a.key for a in await c.read_artifacts()}

    import asyncio

    got = asyncio.run(keys())
    assert {"federated-rounds", "federated-validation", "federated-partition", "federated-summary"} <= got
    assert man["metrics"]["central_baseline_accuracy"] == out["central_baseline_accuracy"]
