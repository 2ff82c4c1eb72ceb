"""Bad input fails with an error naming the key, before any trial (and before Ray starts)."""

import socket

import numpy as np
import pytest

from tasks.errors import ConfigError
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.settings import load_settings
from tasks.store.config import StoreConfig
from tasks.tuning import search
from tasks.tuning import study as study_mod
from tasks.tuning.config import TuningConfig
from tasks.tuning.search import (
    apply_best_config,
    apply_params,
    check_ray_address,
    run_study,
    s3_filesystem,
    sample_config,
    trial_resources,
    tune_storage,
    validate_search_space,
    validate_tuning,
)


def bad(space):
    with pytest.raises(ConfigError) as e:
        validate_search_space(space)
    return str(e.value)


def test_default_space_is_valid():
    validate_tuning(TuningConfig())


@pytest.mark.parametrize(
    "space,needle",
    [
        ({}, "tuning.search_space: no parameter to search"),
        ({"lr": {"type": "gaussian", "low": 0.1, "high": 1}}, "tuning.search_space.lr.type: unknown distribution"),
        (
            {"lr": {"type": "loguniform", "low": 0.1, "high": 0.1}},
            "tuning.search_space.lr: low (0.1) must be below high",
        ),
        ({"lr": {"type": "uniform", "low": 1, "high": 0.5}}, "tuning.search_space.lr: low"),
        (
            {"lr": {"type": "loguniform", "low": 0, "high": 1}},
            "tuning.search_space.lr.low: a loguniform range needs low > 0",
        ),
        ({"width": {"type": "choice", "values": []}}, "tuning.search_space.width.values"),
        ({"colour": {"type": "choice", "values": [1]}}, "tuning.search_space.colour: unknown parameter"),
        (
            {"optimizer": {"type": "choice", "values": ["adam", "rmsprop"]}},
            "tuning.search_space.optimizer.values: 'rmsprop' is not accepted",
        ),
        ({"width": {"type": "uniform", "low": 8, "high": 64}}, "tuning.search_space.width.type"),
        (
            {"depth": {"type": "randint", "low": 1, "high": 20}},
            "tuning.search_space.depth.high: 19 (its largest draw) is not accepted",
        ),
        ({"lr": {"type": "loguniform", "low": 1e-3}}, "tuning.search_space.lr.high: Field required"),
        (
            {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2, "step": 2}},
            "tuning.search_space.lr.step: unknown key for a loguniform distribution (it takes type, low, high)",
        ),
        ({"lr": [1e-3, 1e-2]}, "tuning.search_space.lr: must be a mapping"),
    ],
)
def test_invalid_search_space(space, needle):
    assert needle in bad(space)


def test_r_below_eta_and_unknown_scheduler():
    with pytest.raises(ConfigError, match="tuning.max_t"):
        validate_tuning(TuningConfig(max_t=2, eta=3))
    cfg = TuningConfig().model_copy(update={"scheduler": "pbt"})  # bypasses pydantic, as a caller might
    with pytest.raises(ConfigError, match="tuning.scheduler: unknown scheduler 'pbt'"):
        validate_tuning(cfg)
    with pytest.raises(ConfigError, match="tuning.scheduler"):
        load_settings(overrides={"tuning.scheduler": "pbt"})


def test_bohb_names_the_packages_to_install():
    if not search.bohb_missing_packages():
        pytest.skip("hpbandster and ConfigSpace are installed here")
    with pytest.raises(ConfigError, match="pip install hpbandster==0.7.4 ConfigSpace==0.7.1"):
        validate_tuning(TuningConfig(scheduler="bohb"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_ray_address_fails_fast():
    addr = f"127.0.0.1:{_free_port()}"
    with pytest.raises(ConfigError, match=f"tuning.ray_address '{addr}' is unreachable"):
        check_ray_address(addr, timeout=1.0)
    with pytest.raises(ConfigError, match="unreachable"):
        check_ray_address(f"ray://127.0.0.1:{_free_port()}", timeout=1.0)


def _no_ray(*a, **k):
    raise AssertionError("Ray must not start for invalid input")


@pytest.mark.parametrize(
    "update,needle",
    [
        ({"search_space": {}}, "tuning.search_space: no parameter to search"),
        ({"max_t": 2, "eta": 3}, "tuning.max_t"),
        ({"scheduler": "pbt"}, "tuning.scheduler"),
        ({"ray_address": "127.0.0.1:{port}"}, "tuning.ray_address"),
    ],
)
def test_run_study_rejects_bad_input_before_starting_ray(monkeypatch, small_splits, tmp_path, update, needle):
    monkeypatch.setattr(study_mod, "connect_ray", _no_ray)
    if "ray_address" in update:
        update = {"ray_address": update["ray_address"].format(port=_free_port())}
    cfg = TuningConfig().model_copy(update=update)
    with pytest.raises(ConfigError, match=needle):
        run_study(cfg, small_splits, seed=1, store=StoreConfig(uri=str(tmp_path)))


def test_trial_resources():
    cfg = TuningConfig()
    assert trial_resources(cfg, {"CPU": 2.0}, local=True) == {"cpu": 1.0, "gpu": 0.0}
    # auto on a GPU cluster: 8 CPU-bound slots share 1 GPU -> 1/8 each
    assert trial_resources(cfg, {"CPU": 8.0, "GPU": 1.0}, local=False)["gpu"] == 0.125
    # 3 slots on 2 GPUs -> a 2/3 share is rounded down to one that divides a GPU: 1/2
    three = cfg.model_copy(update={"max_concurrent_trials": 3})
    assert trial_resources(three, {"CPU": 8.0, "GPU": 2.0}, local=False)["gpu"] == 0.5
    quarter = TuningConfig(resources_per_trial={"cpu": 1, "gpu": 0.25})
    assert trial_resources(quarter, {"CPU": 4.0, "GPU": 1.0}, local=False)["gpu"] == 0.25
    with pytest.raises(ConfigError, match="tuning.resources_per_trial.gpu"):
        trial_resources(quarter, {"CPU": 2.0}, local=True)
    with pytest.raises(ConfigError, match="tuning.resources_per_trial.cpu"):
        trial_resources(TuningConfig(resources_per_trial={"cpu": 4}), {"CPU": 2.0}, local=True)


def test_sampler_is_seeded_and_in_bounds():
    space = TuningConfig().search_space
    a = [sample_config(space, np.random.default_rng(7)) for _ in range(3)]
    b = [sample_config(space, np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    draws = [sample_config(space, g) for g in [np.random.default_rng(0)] for _ in range(200)]
    assert all(1e-4 <= d["lr"] <= 3e-2 and d["batch_size"] in (32, 64, 128) for d in draws)
    assert {d["optimizer"] for d in draws} == {"adam", "sgd"}
    for d in draws[:20]:
        apply_params(ModelConfig(), TrainingConfig(), d)


def test_apply_best_config_maps_fields():
    s = apply_best_config(
        load_settings(),
        {
            "lr": 0.005,
            "batch_size": 32,
            "width": 128,
            "depth": 3,
            "weight_decay": 1e-5,
            "dropout": 0.2,
            "optimizer": "sgd",
        },
    )
    assert (s.training.lr, s.training.batch_size, s.training.weight_decay, s.training.optimizer) == (
        0.005,
        32,
        1e-5,
        "sgd",
    )
    assert (s.model.width, s.model.depth, s.model.dropout) == (128, 3, 0.2)


def test_tune_storage_local_and_s3(tmp_path):
    path, fs, uri = tune_storage(StoreConfig(uri=f"file://{tmp_path}"), "tuning")
    assert fs is None and path == str(tmp_path / "tuning") and (tmp_path / "tuning").is_dir()
    s3 = StoreConfig(
        uri="s3://bucket/pre/fix",
        endpoint_url="http://127.0.0.1:8333",
        region="us-east-1",
        access_key_id="a",
        secret_access_key="b",
    )
    path, fs, uri = tune_storage(s3, "tuning")
    assert path == "bucket/pre/fix/tuning" and uri == "s3://bucket/pre/fix/tuning"
    assert type(fs).__name__ == "S3FileSystem"
    # The fallback used when tasks.store.backends has no pyarrow_filesystem
    assert type(s3_filesystem(s3)).__name__ == "S3FileSystem"
    with pytest.raises(ConfigError, match="store.endpoint_url"):
        s3_filesystem(s3.model_copy(update={"endpoint_url": "127.0.0.1:8333"}))


def test_storage_subpath_cannot_leave_the_store(tmp_path):
    with pytest.raises(ConfigError, match="tuning.storage_subpath"):
        load_settings(overrides={"tuning.storage_subpath": "a/../../x"})
    # Also for a configuration built without validation (model_copy), where tune_storage is the last guard.
    with pytest.raises(ConfigError, match="tuning.storage_subpath 'a/../../x'"):
        tune_storage(StoreConfig(uri=str(tmp_path / "store")), "a/../../x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "store").exists()
    assert load_settings(overrides={"tuning.storage_subpath": "runs/v1.2"}).tuning.storage_subpath == "runs/v1.2"


def test_remote_cluster_with_a_local_store_is_refused_before_anything_is_written(monkeypatch, small_splits, tmp_path):
    monkeypatch.setattr(study_mod, "connect_ray", _no_ray)
    monkeypatch.setattr(study_mod, "check_ray_address", lambda *a, **k: None)  # no cluster needed to refuse
    cfg = TuningConfig(ray_address="10.0.0.1:6379")
    with pytest.raises(ConfigError, match="nodes do not share this machine's disk") as e:
        run_study(cfg, small_splits, seed=1, store=StoreConfig(uri=str(tmp_path / "store")))
    assert "store.uri=s3://" in str(e.value)
    assert not (tmp_path / "store").exists()
