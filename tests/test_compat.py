"""The private APIs driftloop relies on (tasks/compat.py) exist in what is installed, and an
upgrade that removes one fails loudly, naming what is gone."""

import warnings

import pytest

from tasks import compat
from tasks.compat import PINNED, PRIVATE_APIS, CompatError, PrivateUse, installed_version, missing_names, require


@pytest.mark.parametrize("use", PRIVATE_APIS, ids=lambda u: u.target)
def test_every_private_name_exists_in_the_installed_version(use):
    assert missing_names(use) == [], f"{use.dist} {installed_version(use.dist)}: {use.target} lost names"


def test_pins_match_what_is_installed_and_pyproject():
    text = open("pyproject.toml").read()
    for dist, version in PINNED.items():
        assert installed_version(dist) == version
        assert f"{dist}" in text and f"=={version}" in text
    require("ray")  # the pinned version: nothing to say
    require("alibi-detect")


def test_an_upgrade_that_keeps_the_names_passes_with_a_warning():
    with pytest.warns(RuntimeWarning, match="ray 9.9.9 is installed"):
        require("ray", installed="9.9.9")


def test_an_upgrade_that_drops_a_name_fails_naming_it(monkeypatch):
    gone = PrivateUse(
        "ray",
        "ray.tune.schedulers.hyperband:_Bracket",
        ("_all_trials", "_renamed_in_ray_3"),
        "tasks.tuning.ray_hooks (test)",
    )
    monkeypatch.setattr(compat, "PRIVATE_APIS", (gone,))
    with pytest.raises(CompatError) as e, warnings.catch_warnings():
        warnings.simplefilter("error")
        require("ray", installed="3.0.0")
    msg = str(e.value)
    assert "ray 3.0.0 is installed" in msg and "ray==2.55.1" in msg
    assert "_renamed_in_ray_3" in msg and "_all_trials" not in msg and "tasks.tuning.ray_hooks" in msg


def test_a_target_that_cannot_be_imported_counts_every_name_as_gone():
    assert missing_names(PrivateUse("ray", "ray.tune.no_such_module:X", ("a", "b"), "-")) == ["a", "b"]
