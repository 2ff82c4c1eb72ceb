"""Degenerate candidates and bad labels (issue 17): the gate refuses a model that cannot be right,
labels follow one rule in validation and training, and bad label sets fail with a clear error."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tasks.data.labels import check_label_set, integer_labels
from tasks.data.sources import load_digits_dataset
from tasks.data.validation import load_batch_from_uri, validate_batch
from tasks.errors import DataError
from tasks.models.gate import CandidateFacts, sanity_rules
from tasks.models.registration import load_schema, open_registry
from tests.reliability.conftest import smoke_settings

pytestmark = pytest.mark.integration


def _file(tmp_path, name, x, y) -> str:
    p = tmp_path / name
    np.savez(p, x=x.reshape(len(x), -1), y=y)
    return str(p)


def _train_on(settings, source: str | None, **over):
    from flows.training import training

    s = settings.model_copy(deep=True)
    if source is not None:
        s.data.source = source
        s.data.sample_shape = [1, 8, 8]
    for k, v in over.items():
        section, key = k.split(".")
        setattr(getattr(s, section), key, v)
    return training(s)


def test_the_gate_refuses_candidates_that_cannot_be_right(prefect_api, tmp_path, figures):
    settings = smoke_settings(tmp_path)
    t0 = time.monotonic()
    first = _train_on(settings, None)
    assert first["promoted"] and first["version"] == 1
    d = load_digits_dataset()
    store, reg = open_registry(settings)
    outcomes = {}

    # All one class: a "model" with test accuracy 1.0 that must not replace a ten-class champion.
    one = _train_on(settings, _file(tmp_path, "one-class.npz", d.x[d.y == 0], d.y[d.y == 0]))
    assert one["metrics"]["test_accuracy"] == 1.0 and not one["promoted"]
    assert "at_least_two_classes" in one["decision"]["reason"] and "keeps_champion_classes" in one["decision"]["reason"]
    outcomes["one_class"] = one["decision"]["reason"]
    assert reg.champion_version() == 1
    # ...and the champion still accepts good batches (the one-class schema would refuse them).
    good = validate_batch((d.x[:200], d.y[:200]), load_schema(store, reg.champion()), settings.data.validation, "good")
    assert good.passed, good.to_text()

    # Classes the champion knows dropped (0..4 only): refused, unless data.classes declares the change.
    few = d.y < 5
    src = _file(tmp_path, "five-classes.npz", d.x[few], d.y[few])
    dropped = _train_on(settings, src)
    assert not dropped["promoted"] and "drops champion classes [5, 6, 7, 8, 9]" in dropped["decision"]["reason"]
    outcomes["dropped_classes"] = dropped["decision"]["reason"]

    # Too few rows (150 rows of ten classes: fewer than 150 training rows, about 30 test rows) with floors
    # of 150 training and 50 test rows: refused for its training rows and for its unreliable evaluation.
    small = _train_on(
        settings,
        _file(tmp_path, "small.npz", d.x[:150], d.y[:150]),
        **{"registry.min_train_rows": 150, "registry.min_test_rows": 50},
    )
    assert not small["promoted"]
    assert (
        "enough_training_rows" in small["decision"]["reason"] and "reliable_evaluation" in small["decision"]["reason"]
    )
    outcomes["too_few_rows"] = small["decision"]["reason"]
    assert reg.champion_version() == 1

    # The same five-class file with the label change declared passes the class rule.
    declared = _train_on(settings, src, **{"data.classes": [0, 1, 2, 3, 4]})
    rules = {r["name"]: r["passed"] for r in declared["decision"]["sanity"]["rules"]}
    assert rules["keeps_champion_classes"] and "data.classes declares them gone" in str(declared["decision"]["sanity"])
    champion_after = reg.champion_version()
    assert champion_after in (1, declared["version"])
    figures.update(
        candidates=4,
        refused=3,
        refused_reasons=outcomes,
        champion_before=1,
        declared_label_change_passes_sanity=rules["keeps_champion_classes"],
        wall_seconds=round(time.monotonic() - t0, 1),
    )


def test_bad_label_sets_fail_clearly_before_training(prefect_api, tmp_path, figures):
    d = load_digits_dataset()
    settings = smoke_settings(tmp_path)
    # Labels 99 in a fresh store: no 100-class model.
    with pytest.raises(DataError, match=r"not the contiguous set 0\.\.99.*data.classes"):
        _train_on(settings, _file(tmp_path, "ninety-nine.npz", d.x[:300], np.full(300, 99)))
    # Negative labels: a clear error, not numpy's bincount traceback.
    y = d.y[:300].copy()
    y[7] = -1
    with pytest.raises(DataError, match="row 7 has label -1"):
        _train_on(settings, _file(tmp_path, "negative.npz", d.x[:300], y))
    store, reg = open_registry(settings)
    assert reg.versions() == [] and store.list_runs() == []
    assert check_label_set(np.array([0, 2, 2]), "x", classes=[0, 1, 2]) == [0, 2]
    with pytest.raises(DataError, match="not among the declared classes"):
        check_label_set(np.array([0, 5]), "x", classes=[0, 1, 2])
    figures.update(
        labels_99="DataError before training",
        negative_labels="DataError naming row 7",
        versions_created=0,
        runs_written=0,
    )


def test_validate_and_training_apply_one_label_rule(prefect_api, tmp_path, figures):
    """Labels stored as text: numeric text ("3") passes both validate and training; other text
    ("cat") fails both. Before, validate passed text labels that training refused."""
    from flows.training import training

    settings = smoke_settings(tmp_path)
    training(settings)
    store, reg = open_registry(settings)
    schema = load_schema(store, reg.champion())
    d = load_digits_dataset()
    outcomes = {}
    for name, y in (
        ("numeric-text", d.y[:300].astype(str)),
        ("word", np.where(np.arange(300) == 4, "cat", d.y[:300].astype(str))),
    ):
        path = _file(tmp_path, f"{name}.npz", d.x[:300], y)
        ds, _, err = load_batch_from_uri(path, settings.store)
        assert err is None
        passed = validate_batch(ds, schema, settings.data.validation, name).passed
        try:
            _train_on(settings, path)
            trained = True
        except DataError as e:
            assert "row 4 holds 'cat'" in str(e)
            trained = False
        assert passed == trained == (name == "numeric-text"), (name, passed, trained)
        outcomes[name] = {"validate_passed": passed, "training_accepted": trained}
    assert integer_labels(np.array([1.0, 2.0]), "x").tolist() == [1, 2]
    with pytest.raises(DataError):
        integer_labels(np.array([True, False]), "x")
    figures.update(outcomes=outcomes, disagreements=0)


def test_sanity_rules_unit():
    facts = CandidateFacts(
        train_rows=500,
        train_labels=[0, 1],
        test_rows=100,
        test_labels=[0, 1],
        metrics={"test_accuracy": float("nan")},
        champion_labels=[0, 1],
    )
    v = sanity_rules(facts, 100, 30)
    assert not v.passed and "non-finite ['test_accuracy']" in v.reason
    facts.metrics = {"test_accuracy": 0.9}
    assert sanity_rules(facts, 100, 30).passed
