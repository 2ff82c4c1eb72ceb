"""Bad adversarial settings are ConfigErrors naming the key, raised when the settings load."""

import pytest

from tasks.adversarial.config import AdversarialConfig
from tasks.errors import ConfigError
from tasks.settings import load_settings


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"adversarial.epsilon": -0.1}, r"adversarial\.epsilon.*must be >= 0"),
        ({"adversarial.step_size": 0.0}, r"adversarial\.step_size.*must be > 0"),
        ({"adversarial.step_size": -1.0}, r"adversarial\.step_size"),
        ({"adversarial.steps": 0}, r"adversarial\.steps.*zero steps"),
        (
            {"adversarial.epochs": 4, "adversarial.switch_epoch": 5},
            r"switch_epoch=5 is beyond the budget of adversarial\.epochs=4",
        ),
        ({"adversarial.epochs": 4, "adversarial.switch_epoch": 4}, r"no adversarial epoch is left"),
        ({"adversarial.switch_fraction": 1.5}, r"switch_fraction must lie in \[0, 1\]"),
        ({"adversarial.switch_fraction": None}, r"needs switch_epoch or switch_fraction"),
        ({"adversarial.eval_epsilons": [0.1, -0.2]}, r"eval_epsilons must all be >= 0"),
        ({"adversarial.mix_ratio": 0.0}, r"mode='natural'"),
        ({"adversarial.restarts": 0}, r"adversarial\.restarts"),
        ({"adversarial.epsilonn": 0.1}, r"adversarial\.epsilonn: unknown key"),
    ],
)
def test_bad_settings_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_settings(overrides=overrides, environ={})


def test_defaults_and_smoke_profile_are_valid():
    for profile in ("default", "smoke"):
        cfg = load_settings(profile=profile, environ={}).adversarial
        assert 0 <= cfg.switch_epoch_resolved() < cfg.epochs


def test_switch_resolution():
    assert AdversarialConfig(mode="delayed", epochs=10, switch_fraction=0.3).switch_epoch_resolved() == 3
    assert AdversarialConfig(mode="delayed", epochs=10, switch_epoch=0).switch_epoch_resolved() == 0
    assert AdversarialConfig(mode="pgd", epochs=10, switch_epoch=7).switch_epoch_resolved() == 0
    assert AdversarialConfig(mode="natural", epochs=10).switch_epoch_resolved() == 10
    # A switch epoch beyond the budget is wrong whatever the mode.
    with pytest.raises(ValueError, match="beyond the budget"):
        AdversarialConfig(mode="pgd", epochs=3, switch_epoch=4)
    assert AdversarialConfig(eval_epsilons=[0.3, 0.1, 0.1]).eval_epsilons == [0.1, 0.3]
