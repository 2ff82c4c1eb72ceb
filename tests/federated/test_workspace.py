"""The ServerApp's workspace is a store prefix named in the Flower run config, never a directory of
the orchestrator's: round trip through a real S3 server (SeaweedFS), the clear error for a prefix
that holds no run, and a deployment run whose ServerApp reads and writes only S3."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.errors import DataError
from tasks.federated.workspace import staging_workspace, workspace_from, write_workspace

from .conftest import fed_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_credentials_in_env(s3_store_config, monkeypatch):
    """The ServerApp's host has its own credentials (the AWS chain): never in the run config."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_store_config.access_key_id.get_secret_value())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_store_config.secret_access_key.get_secret_value())
    return s3_store_config


def test_workspace_round_trip_through_s3_named_by_the_run_config(s3_credentials_in_env):
    cfg = s3_credentials_in_env
    ws = staging_workspace(cfg)
    x, y = np.arange(24, dtype=np.float32).reshape(6, 4), np.arange(6) % 2
    write_workspace(
        ws,
        settings_json=fed_settings().resolved(),
        model_spec={"num_classes": 2},
        initial_weights=b"weights",
        schema_json="{}",
        val=(x, y),
        test=(x[:3], y[:3]),
        extra={"mode": "x"},
    )
    rc = ws.run_config(cfg)
    assert rc["driftloop-store-uri"] == cfg.uri and rc["driftloop-store-prefix"].startswith("federated/staging/")
    assert rc["driftloop-store-endpoint"] == cfg.endpoint_url and "secret" not in str(rc).lower()
    assert cfg.secret_access_key.get_secret_value() not in str(rc)
    got = workspace_from(rc)  # what the ServerApp does, from the run config alone
    assert got.spec["mode"] == "x" and got.settings().federated.num_clients == 3
    vx, vy = got.arrays("val")
    assert np.array_equal(vx, x) and np.array_equal(vy, y) and got.read("initial.safetensors") == b"weights"
    got.write_json("out/status.json", {"state": "completed"})
    assert ws.read_json("out/status.json") == {"state": "completed"}
    ws.clear()
    assert ws.names() == []


def test_a_prefix_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="has no spec.json"):
        workspace_from({"driftloop-store-uri": str(tmp_path), "driftloop-store-prefix": "federated/staging/nope/"})
    with pytest.raises(DataError, match="driftloop-store-uri"):
        workspace_from({})


@pytest.mark.slow
def test_deployment_serverapp_reads_and_writes_only_the_s3_store(digits_splits, tmp_path, s3_credentials_in_env):
    """A local demo federation (SuperLink + 2 SuperNodes) whose store is S3: the run completes, the
    work dir never holds the server's inputs or results, and the staging is gone afterwards."""
    from tasks.federated.engine import run_federated
    from tasks.store.backends import open_backend

    cfg = s3_credentials_in_env
    s = fed_settings(engine="deployment", num_clients=2, rounds=1, min_fit_clients=2, round_timeout_s=60.0)
    s = s.model_copy(update={"store": cfg})
    work = tmp_path / "w"
    res = run_federated(s, digits_splits, workdir=work)
    assert len(res.rounds) == 2 and sorted(res.checkpoints) == [1]
    assert res.rounds[1]["test_accuracy"] > 0.0
    assert not [
        p for p in work.rglob("*") if p.suffix in (".npz", ".safetensors", ".json") and "flwr-home" not in str(p)
    ]
    assert open_backend(cfg).list("federated/staging/") == []
