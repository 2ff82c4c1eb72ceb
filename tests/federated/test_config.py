"""Bad input fails with a clear error before round one."""

from __future__ import annotations

import pytest

from tasks.errors import ConfigError
from tasks.federated.engine import FederatedEngineError, check_reachable, free_port, run_federated
from tasks.settings import load_settings

from .conftest import fed_settings


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("fraction_fit", 0.0, "fraction C must lie in (0, 1]"),
        ("fraction_fit", 1.5, "fraction C must lie in (0, 1]"),
        ("alpha", 0.0, "alpha must be > 0"),
        ("alpha", -1.0, "alpha must be > 0"),
        ("strategy", "fedsgdx", "unknown strategy 'fedsgdx'"),
        ("partition", "zipf", "unknown partition 'zipf'"),
    ],
)
def test_bad_values_name_the_key(key, value, needle):
    with pytest.raises(ConfigError) as e:
        load_settings(overrides={f"federated.{key}": value}, environ={})
    assert f"federated.{key}" in str(e.value) and needle in str(e.value)


def test_min_clients_and_krum_bounds():
    with pytest.raises(ConfigError, match="min_fit_clients .5. exceeds num_clients .4."):
        load_settings(overrides={"federated": {"num_clients": 4, "min_fit_clients": 5}}, environ={})
    with pytest.raises(ConfigError, match="2f.3=5"):
        load_settings(overrides={"federated": {"strategy": "krum", "num_clients": 4, "krum_byzantine": 1}}, environ={})
    load_settings(overrides={"federated": {"strategy": "krum", "num_clients": 5, "krum_byzantine": 1}}, environ={})


def test_partial_tls_is_refused():
    with pytest.raises(ConfigError, match="TLS needs all"):
        load_settings(overrides={"federated.tls_ca_cert": "/x/ca.crt"}, environ={})


def test_more_clients_than_samples_fails_before_any_process(digits_splits, tmp_path):
    n = len(digits_splits.train)
    s = fed_settings(num_clients=n + 1)
    with pytest.raises(ConfigError, match=rf"federated.num_clients={n + 1} .* training split has {n}"):
        run_federated(s, digits_splits, workdir=tmp_path / "w")
    assert not (tmp_path / "w" / "spec.json").exists()


def test_unreachable_superlink_fails_before_round_one(digits_splits, tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    with pytest.raises(FederatedEngineError, match=r"federated.superlink_address '127.0.0.1:\d+' cannot be reached"):
        check_reachable(addr)
    s = fed_settings(engine="deployment", superlink_address=addr)
    with pytest.raises(FederatedEngineError, match="cannot be reached"):
        run_federated(s, digits_splits, workdir=tmp_path / "w")
    assert not (tmp_path / "w" / "spec.json").exists()


def test_missing_tls_files_named(digits_splits, tmp_path):
    s = fed_settings(
        engine="deployment",
        tls_ca_cert=str(tmp_path / "ca.crt"),
        tls_server_cert=str(tmp_path / "s.pem"),
        tls_server_key=str(tmp_path / "s.key"),
    )
    with pytest.raises(ConfigError, match="federated.tls_ca_cert: file .*ca.crt' does not exist"):
        run_federated(s, digits_splits, workdir=tmp_path / "w")


def test_initial_model_must_fit(digits_splits, tmp_path):
    import torch

    with pytest.raises(ConfigError, match="initial model does not fit"):
        run_federated(fed_settings(), digits_splits, {"bogus": torch.zeros(1)}, workdir=tmp_path / "w")


def test_client_learning_rate_follows_the_training_lr_tuning_picked():
    """Clients take far fewer steps than central training: their lr is the training lr (tuned or
    not) times client_lr_scale, unless client_lr sets it outright."""
    from tasks.federated.protocol import client_task
    from tasks.tuning.space import apply_best_config

    s = load_settings(environ={})
    assert s.federated.client_learning_rate(s.training.lr) == pytest.approx(3e-3)  # 3 x the default 1e-3
    tuned = apply_best_config(s, {"lr": 0.005, "optimizer": "sgd"})
    task = client_task(tuned, {"arch": "mlp"}, None)
    assert task.optimizer == "sgd" and task.lr == pytest.approx(0.015)
    fixed = load_settings(overrides={"federated.client_lr": 0.02, "federated.client_lr_scale": 10.0}, environ={})
    assert fixed.federated.client_learning_rate(0.005) == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="federated.client_lr_scale"):
        load_settings(overrides={"federated.client_lr_scale": 0}, environ={})
