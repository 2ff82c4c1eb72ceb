"""The search space as typed specs: what they dump to (study names hash the dump), where they come
from (file, environment, ``-p``), and how their errors read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flows.cli.common import parse_params
from tasks.errors import ConfigError
from tasks.models.auto import check_search_space
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.settings import load_settings
from tasks.tuning.config import Choice, LogUniform, RandInt, TuningConfig, Uniform
from tasks.tuning.search import param_space, parse_search_space, sample_config, study_name_for, validate_search_space

# The default space as a plain dict, as it was written before the specs were typed. Study names
# hash the configuration's dump; a different dump would start every stored study afresh.
PLAIN_DEFAULT = {
    "lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
    "batch_size": {"type": "choice", "values": [32, 64, 128]},
    "width": {"type": "choice", "values": [32, 64, 128]},
    "depth": {"type": "choice", "values": [1, 2, 3]},
    "weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-3},
    "dropout": {"type": "uniform", "low": 0.0, "high": 0.4},
    "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
}


def test_the_default_space_dumps_as_the_plain_dict_it_was():
    cfg = TuningConfig()
    assert cfg.model_dump()["search_space"] == PLAIN_DEFAULT
    json_dump = cfg.model_dump(mode="json")["search_space"]
    assert json.dumps(json_dump, sort_keys=True) == json.dumps(PLAIN_DEFAULT, sort_keys=True)
    assert isinstance(cfg.search_space["lr"], LogUniform) and isinstance(cfg.search_space["width"], Choice)


def test_a_space_dumps_as_given_so_its_study_name_stays():
    # int bounds stay ints, mixed choices keep their types: the dump (and the hash) is what was written
    given = {
        "dropout": {"type": "uniform", "low": 0, "high": 0.5},
        "depth": {"type": "randint", "low": 1, "high": 4},
        "lr": {"type": "loguniform", "low": 1e-4, "high": 1},
        "momentum": {"type": "choice", "values": [0, 0.5, 0.9]},
    }
    cfg = TuningConfig(search_space=given)
    assert cfg.model_dump(mode="json")["search_space"] == given
    assert (
        json.dumps(cfg.model_dump(mode="json")["search_space"]["dropout"])
        == '{"type": "uniform", "low": 0, "high": 0.5}'
    )
    name = study_name_for(cfg, 1, ModelConfig(), TrainingConfig(), "data")
    again = TuningConfig.model_validate(cfg.model_dump(mode="json"))  # a resolved config read back
    assert study_name_for(again, 1, ModelConfig(), TrainingConfig(), "data") == name


def test_overrides_from_the_command_line_and_a_file(tmp_path):
    p = parse_params(['tuning.search_space={"lr": {"type": "loguniform", "low": 0.001, "high": 0.01}}'])
    s = load_settings(overrides=p, environ={})
    assert s.tuning.search_space == {"lr": LogUniform(low=0.001, high=0.01)}
    p = parse_params(['tuning.search_space.depth={"type": "randint", "low": 1, "high": 4}'])  # one key path
    assert load_settings(overrides=p, environ={}).tuning.search_space == {"depth": RandInt(low=1, high=4)}
    f = tmp_path / "c.yaml"
    f.write_text("tuning:\n  search_space:\n    dropout: {type: uniform, low: 0.0, high: 0.3}\n")
    assert load_settings(config_file=f, environ={}).tuning.search_space == {"dropout": Uniform(low=0.0, high=0.3)}


@pytest.mark.parametrize(
    "space,needle",
    [
        (
            {"lr": {"type": "gaussian", "low": 0.1, "high": 1}},
            "tuning.search_space.lr.type: unknown distribution 'gaussian'; use one of loguniform, uniform, randint, "
            "choice (from parameters)",
        ),
        ({"lr": {"low": 0.1, "high": 1}}, "tuning.search_space.lr.type: missing; use one of loguniform"),
        ({"lr": {"type": "loguniform", "low": 0, "high": 1}}, "tuning.search_space.lr.low: a loguniform range needs"),
        ({"lr": {"type": "uniform", "low": "1e-3", "high": 1}}, "tuning.search_space.lr.low: must be a finite number"),
        ({"depth": {"type": "randint", "low": 1.5, "high": 4}}, "tuning.search_space.depth.low: randint bounds must"),
        ({"batch_size": {"type": "loguniform", "low": 8, "high": 64}}, "tuning.search_space.batch_size.type: batch_si"),
        ({"optimizer": {"type": "choice", "values": [True]}}, "tuning.search_space.optimizer.values: each value must"),
        (
            {"lr": {"type": "choice", "values": [1e-3], "low": 1}},
            "tuning.search_space.lr.low: unknown key for a choice",
        ),
        ({"colour": {"type": "choice", "values": [1]}}, "tuning.search_space.colour: unknown parameter; searchable"),
        ({}, "tuning.search_space: no parameter to search"),
    ],
)
def test_settings_errors_name_the_key_as_written(space, needle):
    with pytest.raises(ConfigError) as e:
        load_settings(overrides={"tuning.search_space": space}, environ={})
    assert needle in str(e.value)
    assert ".loguniform." not in str(e.value) and ".choice." not in str(e.value)  # no union tags in the key


def test_the_plain_form_and_the_typed_form_sample_alike():
    typed = TuningConfig().search_space
    for seed in range(3):
        a = sample_config(typed, np.random.default_rng(seed))
        assert a == sample_config(PLAIN_DEFAULT, np.random.default_rng(seed))
    assert parse_search_space(PLAIN_DEFAULT) == typed
    assert validate_search_space(typed) == typed
    with pytest.raises(ConfigError, match="tuning.search_space.lr.type: unknown distribution"):
        sample_config({"lr": {"type": "gaussian"}}, np.random.default_rng(0))


def test_ray_param_space_from_typed_specs():
    from ray.tune.search.sample import Categorical, Float, Integer

    ps = param_space({**PLAIN_DEFAULT, "depth": {"type": "randint", "low": 1, "high": 4}})
    assert isinstance(ps["lr"], Float) and (ps["lr"].lower, ps["lr"].upper) == (1e-4, 3e-2)
    assert isinstance(ps["depth"], Integer) and (ps["depth"].lower, ps["depth"].upper) == (1, 4)
    assert isinstance(ps["optimizer"], Categorical) and ps["optimizer"].categories == ["adam", "sgd"]


def test_every_draw_must_be_a_value_the_sections_accept():
    with pytest.raises(ConfigError, match=r"tuning.search_space.dropout.high: a draw just below 1.5 is not accepted"):
        validate_search_space({"dropout": {"type": "uniform", "low": 0.1, "high": 1.5}})
    validate_search_space({"dropout": {"type": "uniform", "low": 0.0, "high": 1.0}})  # 1.0 itself is never drawn
    with pytest.raises(ConfigError, match=r"tuning.search_space.lr.low: 0 is not accepted \(training.lr: "):
        validate_search_space({"lr": {"type": "uniform", "low": 0, "high": 0.1}})


def test_an_architecture_choice_is_checked_against_the_data_typed_or_plain():
    typed = TuningConfig(search_space={"arch": {"type": "choice", "values": ["mlp", "cnn"]}}).search_space
    for space in (typed, {"arch": {"type": "choice", "values": ["mlp", "cnn"]}}):
        with pytest.raises(ConfigError, match=r"tuning.search_space\['arch'\] offers 'cnn'"):
            check_search_space(space, (30,))


def test_every_problem_of_a_space_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_settings(
            overrides={
                "tuning.search_space": {
                    "lr": {"type": "gaussian"},
                    "width": {"type": "uniform", "low": 8, "high": 64},
                    "colour": {"type": "choice", "values": [1]},
                }
            },
            environ={},
        )
    lines = str(e.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "tuning.search_space.lr.type",
        "tuning.search_space.colour",
        "tuning.search_space.width.type",
    ]
