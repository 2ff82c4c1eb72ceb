"""Store fixtures: every backend-facing test runs on a local directory and on the real SeaweedFS."""

from __future__ import annotations

import pytest

from tasks.store.artifacts import ArtifactStore
from tasks.store.config import StoreConfig


@pytest.fixture(params=["local", "s3"])
def store_cfg(request, tmp_path) -> StoreConfig:
    """A StoreConfig on an empty local directory, or on a fresh bucket of the session's SeaweedFS."""
    if request.param == "local":
        return StoreConfig(uri=str(tmp_path / "store"))
    # 5 MiB parts (the S3 minimum) so a small test file already goes through multipart upload.
    return request.getfixturevalue("s3_store_config").model_copy(update={"multipart_chunk_bytes": 5 * 1024 * 1024})


@pytest.fixture
def store(store_cfg) -> ArtifactStore:
    return ArtifactStore.from_config(store_cfg)


def flip_one_byte(backend, key: str, at: int = 0) -> None:
    """Corrupt a stored object directly in the backend, bypassing the store's bookkeeping."""
    data = bytearray(backend.get_bytes(key))
    data[at] ^= 0x01
    backend.put_bytes(key, bytes(data))


def tiny_model():
    """A tiny MLP, its spec and state dict (for model.json / model.safetensors)."""
    from tasks.models.config import ModelConfig
    from tasks.models.serialize import model_spec
    from tasks.models.zoo import build_model

    cfg = ModelConfig(arch="mlp", width=8, depth=1, dropout=0.0)
    model = build_model(cfg, (1, 8, 8), 10)
    return model, model_spec(cfg, (1, 8, 8), 10)


def commit_model_run(store: ArtifactStore, metrics: dict | None = None, seed: int = 0) -> str:
    """Commit a run holding a tiny model; returns its run id."""
    import torch

    torch.manual_seed(seed)
    model, spec = tiny_model()
    with store.begin_run("training") as w:
        w.put_model(spec, model)
        return w.commit({"metrics": metrics or {"accuracy": 0.5}})["run_id"]
