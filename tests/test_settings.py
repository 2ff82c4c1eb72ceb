import pytest

from tasks.errors import ConfigError
from tasks.settings import Settings, load_settings


def test_defaults_and_smoke_profile():
    d = load_settings(environ={})
    s = load_settings(profile="smoke", environ={})
    assert d.training.epochs == Settings().training.epochs
    assert s.training.epochs < d.training.epochs and s.profile == "smoke"


def test_precedence_file_env_params(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('seed = 7\n[training]\nepochs = 3\nlr = 0.01\n[model]\narch = "mlp"\n')
    env = {"DRIFTLOOP_TRAINING__EPOCHS": "4", "DRIFTLOOP_MODEL__WIDTH": "16"}
    s = load_settings(config_file=f, environ=env, overrides={"training.epochs": 5})
    assert (s.seed, s.training.lr, s.model.arch) == (7, 0.01, "mlp")  # file
    assert s.model.width == 16  # env over defaults
    assert s.training.epochs == 5  # parameters over env over file


def test_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("training:\n  batch_size: 16\n")
    assert load_settings(config_file=f, environ={}).training.batch_size == 16


def test_unknown_key_names_key_and_source(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[training]\nepochz = 3\n")
    with pytest.raises(ConfigError) as e:
        load_settings(config_file=f, environ={})
    assert "training.epochz" in str(e.value) and "unknown key" in str(e.value) and str(f) in str(e.value)


def test_bad_env_value_names_variable():
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"DRIFTLOOP_TRAINING__EPOCHS": "zero"})
    assert "DRIFTLOOP_TRAINING__EPOCHS" in str(e.value)


def test_malformed_and_missing_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[training\nepochs=")
    with pytest.raises(ConfigError, match="malformed"):
        load_settings(config_file=f, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml", environ={})


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile"):
        load_settings(profile="turbo", environ={})


def test_secrets_masked_in_resolved_config():
    s = load_settings(environ={"DRIFTLOOP_STORE__SECRET_ACCESS_KEY": "hunter2-secret"})
    assert "hunter2-secret" not in str(s.resolved()) and "hunter2-secret" not in repr(s)
    assert s.store.secret_access_key.get_secret_value() == "hunter2-secret"
