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


# --- the layers through pydantic-settings (issue 14, item 5) ---------------------------------------


def _layers(tmp_path, *, file=False, env=False, params=False):
    """training.epochs from every layer asked for: profile smoke 12 < file 3 < env 4 < parameters 5."""
    f = tmp_path / "c.toml"
    f.write_text("[training]\nepochs = 3\n[model]\nwidth = 8\n")
    return load_settings(
        profile="smoke",
        config_file=f if file else None,
        environ={"DRIFTLOOP_TRAINING__EPOCHS": "4", "DRIFTLOOP_TRAINING__LR": "0.5"} if env else {},
        overrides={"training.epochs": 5} if params else None,
    )


@pytest.mark.parametrize(
    "layers, epochs",
    [({}, 12), ({"file": True}, 3), ({"file": True, "env": True}, 4), ({"file": True, "env": True, "params": True}, 5)],
)
def test_each_layer_wins_over_the_ones_below(tmp_path, layers, epochs):
    s = _layers(tmp_path, **layers)
    assert s.training.epochs == epochs
    assert s.training.batch_size == 32  # set by the profile only: the layers above merge, key by key
    assert s.model.width == (8 if layers.get("file") else Settings().model.width)
    assert s.training.lr == (0.5 if layers.get("env") else 3e-3)


def test_env_params_and_file_win_over_defaults_without_a_profile(tmp_path):
    assert load_settings(environ={"DRIFTLOOP_SEED": "3"}).seed == 3
    assert load_settings(environ={"DRIFTLOOP_SEED": "3"}, overrides={"seed": 4}).seed == 4
    f = tmp_path / "c.json"
    f.write_text('{"seed": 5}')
    assert load_settings(config_file=f, environ={}).seed == 5
    assert load_settings(environ={"DRIFTLOOP_CONFIG": str(f), "DRIFTLOOP_PROFILE": "smoke"}).profile == "smoke"


@pytest.mark.parametrize(
    "name, key",
    [
        ("DRIFTLOOP_TRAINING__EPOCHZ", "training.epochz"),  # a key no section has
        ("DRIFTLOOP_TRAINNG__EPOCHS", "trainng.epochs"),  # a section that does not exist
        ("DRIFTLOOP_SEEDS", "seeds"),  # a top-level key that does not exist
        ("DRIFTLOOP_SEED__X", "seed.x"),  # below a value
    ],
)
def test_env_typo_names_the_variable(name, key):
    with pytest.raises(ConfigError) as e:
        load_settings(environ={name: "1"})
    assert f"{key}: unknown key (from environment variable {name})" in str(e.value)


def test_every_bad_variable_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"DRIFTLOOP_TRAINNG__EPOCHS": "1", "DRIFTLOOP_TRAINING__EPOCHS": "zero"})
    assert "DRIFTLOOP_TRAINNG__EPOCHS" in str(e.value) and "DRIFTLOOP_TRAINING__EPOCHS" in str(e.value)


def test_bad_value_in_toml_names_file_and_key(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[training]\nepochs = "five"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(config_file=f, environ={"DRIFTLOOP_TRAINING__LR": "0.1"})
    line = next(x for x in str(e.value).splitlines() if "training.epochs" in x)
    assert "'five'" in line and f"(from config file {str(f)!r})" in line


def test_nested_delimiter_parsing():
    env = {
        "DRIFTLOOP_DATA__VALIDATION__RANGE_TOLERANCE": "0.5",  # three levels
        "DRIFTLOOP_DATA__VALIDATION__ENABLED": "false",  # JSON scalars: a boolean
        "DRIFTLOOP_ADVERSARIAL__EVAL_EPSILONS": "[0.1, 0.2]",  # a list
        "DRIFTLOOP_TRAINING": '{"epochs": 2, "lr": 0.1}',  # a whole section as JSON ...
        "DRIFTLOOP_TRAINING__LR": "0.5",  # ... and one of its keys, which wins
        "DRIFTLOOP_Model__Arch": "cnn",  # names after the prefix match in any case
        "DRIFTLOOP_REGISTRY__MODEL_NAME": "null",  # JSON null: the derived default
        "driftloop_seed": "9",  # not the prefix (exactly DRIFTLOOP_): ignored
    }
    s = load_settings(environ=env)
    assert (s.data.validation.range_tolerance, s.data.validation.enabled) == (0.5, False)
    assert s.adversarial.eval_epsilons == [0.1, 0.2]
    assert (s.training.epochs, s.training.lr, s.model.arch) == (2, 0.5, "cnn")
    assert (s.registry.model_name, s.seed) == ("digits-classifier", Settings().seed)


def test_env_text_that_must_be_json_names_the_variable():
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"DRIFTLOOP_ADVERSARIAL__EVAL_EPSILONS": "[0.1,", "DRIFTLOOP_ADVERSARIAL__EPOCHS": "2"})
    assert "adversarial.eval_epsilons: expects JSON" in str(e.value)
    assert "DRIFTLOOP_ADVERSARIAL__EVAL_EPSILONS" in str(e.value) and "EPOCHS" not in str(e.value)


def test_load_settings_reads_only_the_environ_it_is_given(monkeypatch):
    monkeypatch.setenv("DRIFTLOOP_TRAINING__EPOCHS", "99")
    assert load_settings(environ={}).training.epochs == Settings().training.epochs
    assert load_settings().training.epochs == 99  # environ=None: os.environ


def test_a_rule_across_a_section_names_every_layer_that_set_it():
    with pytest.raises(ConfigError) as e:
        load_settings(profile="smoke", overrides={"federated.min_fit_clients": 5}, environ={})
    assert "federated: " in str(e.value) and "(from parameters and profile 'smoke')" in str(e.value)


def test_revalidating_a_dumped_settings_ignores_the_environment(monkeypatch):
    """Prefect passes Settings as a flow parameter and validates it from a dict in the flow's (or a
    worker's) process: that process's DRIFTLOOP_* variables must not change it."""
    import json

    from pydantic import TypeAdapter
    from pydantic_settings import BaseSettings

    s = load_settings(profile="smoke", environ={"DRIFTLOOP_TRAINING__EPOCHS": "4"}, overrides={"seed": 7})
    assert type(s) is Settings and not isinstance(s, BaseSettings)
    for name, value in {"DRIFTLOOP_TRAINING__EPOCHS": "99", "DRIFTLOOP_SEED": "1", "DRIFTLOOP_PROFILE": "x"}.items():
        monkeypatch.setenv(name, value)
    for again in (
        Settings.model_validate(s.model_dump()),
        Settings.model_validate(json.loads(s.model_dump_json())),  # the JSON a deployment stores
        TypeAdapter(Settings).validate_python(s.model_dump(mode="json")),  # as a flow's parameter model does
        Settings(**s.model_dump()),
    ):
        assert again == s and (again.training.epochs, again.seed, again.profile) == (4, 7, "smoke")


@pytest.mark.parametrize(
    "name, text",
    [("c.yaml", "training:\n  epochs: 3\n  epochs: 4\n"), ("c.json", '{"seed": 1, "seed": 2}')],
)
def test_a_key_given_twice_in_a_file_is_refused(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ConfigError, match=r"(?s)malformed.*duplicate key") as e:
        load_settings(config_file=f, environ={})
    assert str(f) in str(e.value)


def test_unknown_file_suffix(tmp_path):
    f = tmp_path / "c.ini"
    f.write_text("")
    with pytest.raises(ConfigError, match=r"c\.ini.*use \.toml"):
        load_settings(config_file=f, environ={})


@pytest.mark.parametrize(
    "text, message", [("1: 2\n", "1: unknown key, not text"), ("? [a, b]\n: 1\n", "unhashable key")]
)
def test_yaml_keys_that_name_no_setting(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_settings(config_file=f, environ={})
    assert str(f) in str(e.value)


def test_a_json_object_in_an_environment_variable_sets_a_whole_mapping():
    """A search space given as JSON through the environment (the old loader crashed on it)."""
    s = load_settings(environ={"DRIFTLOOP_TUNING__SEARCH_SPACE": '{"depth": {"type": "choice", "values": [1, 2]}}'})
    assert list(s.tuning.search_space) == ["depth"]
    assert s.tuning.search_space["depth"].model_dump() == {"type": "choice", "values": [1, 2]}


def test_variables_driftloop_sets_for_its_own_processes_are_not_configuration():
    s = load_settings(environ={"DRIFTLOOP_CHECKOUT": "/srv/driftloop", "DRIFTLOOP_FED_WORKDIR": "/tmp/x"})
    assert s == load_settings(environ={})
    with pytest.raises(ConfigError, match="DRIFTLOOP_CHECKOUTS"):
        load_settings(environ={"DRIFTLOOP_CHECKOUTS": "/srv"})
