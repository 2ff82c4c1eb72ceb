"""Typed detector configs (tasks.drift.config): the union, its shorthand, the shared defaults."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tasks.drift.config import (
    DETECTOR_CONFIGS,
    CVMOnlineConfig,
    DriftConfig,
    KSSoftmaxConfig,
    LSDDConfig,
    MMDEmbeddingConfig,
    MMDOnlineConfig,
)
from tasks.errors import ConfigError
from tasks.settings import Settings  # module level: Prefect resolves the annotation in the module


def test_a_bare_name_is_that_detector_with_the_shared_flat_keys():
    cfg = DriftConfig(
        detectors=["ks_softmax", "lsdd", "mmd_online"],
        p_val=0.01,
        correction="fdr",
        n_permutations=40,
        lsdd_n_kernel_centers=7,
        ert=300,
        window_size=20,
        online_n_bootstraps=400,
    )
    assert [type(d) for d in cfg.detectors] == [KSSoftmaxConfig, LSDDConfig, MMDOnlineConfig]
    ks, lsdd, mmd = cfg.detector_configs()
    assert ks == KSSoftmaxConfig(p_val=0.01, correction="fdr")
    assert lsdd == LSDDConfig(p_val=0.01, n_permutations=40, n_kernel_centers=7)
    assert mmd == MMDOnlineConfig(ert=300, window_size=20, n_bootstraps=400)
    # Names stay names when dumped: the dump reads back the same, and still follows the flat keys.
    assert cfg.model_dump(mode="json")["detectors"] == ["ks_softmax", "lsdd", "mmd_online"]
    assert DriftConfig().model_dump()["detectors"] == ["ks_softmax"]
    # ... also after an assignment (validate_assignment: the shared default is read when resolving).
    cfg.n_permutations = 60
    assert cfg.detector_config("lsdd").n_permutations == 60


def test_each_detector_default_is_the_flat_default():
    # The per-detector field defaults (what the Prefect form shows) are the flat keys' defaults.
    flat = DriftConfig()
    for name, cls in DETECTOR_CONFIGS.items():
        assert flat.detector_config(name) == cls(), name


def test_a_table_sets_its_own_parameters_and_inherits_the_rest():
    cfg = DriftConfig(
        detectors=["ks_softmax", {"name": "lsdd", "n_permutations": 200}, {"name": "cvm_online", "window_size": 30}],
        p_val=0.02,
        n_permutations=50,
    )
    assert cfg.detector_configs()[1:] == [
        LSDDConfig(p_val=0.02, n_permutations=200),
        CVMOnlineConfig(ert=2000, window_size=30),
    ]
    # Only what the table set is dumped: the rest keeps following the flat keys after a round trip.
    dumped = cfg.model_dump(mode="json")
    own = [{"name": "lsdd", "n_permutations": 200}, {"name": "cvm_online", "window_size": 30}]
    assert dumped["detectors"] == ["ks_softmax", *own]
    back = DriftConfig.model_validate({**dumped, "p_val": 0.03})
    assert back.detector_config("lsdd") == LSDDConfig(p_val=0.03, n_permutations=200)
    # A name the list does not hold resolves from the flat keys too; a config object is accepted as is.
    assert cfg.detector_config("mmd_embedding") == MMDEmbeddingConfig(p_val=0.02, n_permutations=50)
    assert DriftConfig(detectors=[MMDOnlineConfig(window_size=25)]).detector_configs()[0].window_size == 25
    # An explicit null (LSDD: alibi's default centres) is kept apart from "unset" (the flat key).
    own_null = DriftConfig(detectors=[{"name": "lsdd", "n_kernel_centers": None}], lsdd_n_kernel_centers=9)
    assert own_null.detector_configs()[0].n_kernel_centers is None
    assert DriftConfig(detectors=["lsdd"], lsdd_n_kernel_centers=9).detector_configs()[0].n_kernel_centers == 9


def _error(**kw) -> str:
    with pytest.raises(ValidationError) as e:
        DriftConfig(**kw)
    return str(e.value)


def test_errors_name_the_entry_and_key():
    msg = _error(detectors=["ks_softmax", "chi2"])
    assert "drift.detectors[1]: unknown drift detector 'chi2'" in msg
    assert "known: ks_softmax, mmd_embedding, lsdd, mmd_online, cvm_online" in msg
    assert "unknown drift detector 'chi2'" in _error(detectors=[{"name": "chi2", "p_val": 0.1}])
    msg = _error(detectors=["ks_softmax", {"name": "ks_softmax"}, {"name": "lsdd", "window_size": 30}])
    assert "drift.detectors lists ks_softmax twice" not in msg  # the parameter error comes first
    assert (
        "drift.detectors[2].window_size: detector 'lsdd' takes no parameter 'window_size' "
        "(its parameters: p_val, n_permutations, n_kernel_centers)" in msg
    )
    assert "drift.detectors lists ks_softmax twice" in _error(detectors=["ks_softmax", {"name": "ks_softmax"}])
    assert "drift.detectors[0].p_val: Input should be less than 1" in _error(detectors=[{"name": "lsdd", "p_val": 2}])
    assert "drift.detectors[0].ert: Value error, must be a number, got the boolean true" in _error(
        detectors=[{"name": "mmd_online", "ert": True}]
    )
    assert "a detector table needs a 'name'" in _error(detectors=[{"p_val": 0.1}])
    assert "at least 1 item" in _error(detectors=[])
    # The online checks name where the offending value was set: the entry, or the shared key.
    msg = _error(detectors=[{"name": "mmd_online", "window_size": 300}])
    assert "drift.reference_size (500) must exceed 2 * drift.detectors[0].window_size (600)" in msg
    msg = _error(detectors=["ks_softmax", {"name": "cvm_online", "n_bootstraps": 200}], ert=300)
    assert "drift.detectors[1].n_bootstraps (200) must exceed drift.ert (300)" in msg
    assert "drift.online_n_bootstraps (200) must exceed drift.ert (300)" in _error(
        detectors=["mmd_online"], ert=300, online_n_bootstraps=200
    )
    # Assignments are validated too.
    cfg = DriftConfig()
    with pytest.raises(ValidationError, match=r"drift.detectors\[0\].window_size"):
        cfg.detectors = [{"name": "ks_softmax", "window_size": 3}]  # type: ignore[list-item]


def test_settings_sources_take_names_and_tables(tmp_path):
    from tasks.settings import load_settings

    s = load_settings(overrides={"drift.detectors": ["lsdd"], "drift.n_permutations": 30}, environ={})
    assert s.drift.detector_configs() == [LSDDConfig(n_permutations=30)]
    env = {"DRIFTLOOP_DRIFT__DETECTORS": '["ks_softmax", {"name": "cvm_online", "window_size": 30}]'}
    s = load_settings(environ=env)
    assert s.drift.detector_configs()[1] == CVMOnlineConfig(window_size=30)
    toml = tmp_path / "c.toml"
    toml.write_text('[drift]\ndetectors = ["ks_softmax", {name = "lsdd", n_permutations = 200}]\n')
    s = load_settings(config_file=toml, environ={})
    assert s.drift.detector_configs()[1] == LSDDConfig(n_permutations=200)
    # The resolved settings saved with a run read back the same.
    assert load_settings(overrides=s.resolved(), environ={}).drift == s.drift
    toml.write_text('[drift]\ndetectors = ["ks_softmax", {name = "ks_x"}, {name = "mmd_online", p_val = 0.1}]\n')
    with pytest.raises(ConfigError) as e:
        load_settings(config_file=toml, environ={})
    assert "drift.detectors[1]: unknown drift detector 'ks_x'" in str(e.value)
    assert "drift.detectors[2].p_val: detector 'mmd_online' takes no parameter 'p_val'" in str(e.value)
    assert "c.toml" in str(e.value)


def test_json_schema_admits_names_and_tables_with_descriptions():
    # What the Prefect UI form is built from: items are a name or one of the detector tables.
    schema = DriftConfig.model_json_schema()
    items = schema["properties"]["detectors"]["items"]["anyOf"]
    assert items[0]["enum"] == list(DETECTOR_CONFIGS)
    assert {r["$ref"].rsplit("/", 1)[-1] for r in items[1]["oneOf"]} == {c.__name__ for c in DETECTOR_CONFIGS.values()}
    lsdd = schema["$defs"]["LSDDConfig"]
    assert lsdd["additionalProperties"] is False
    assert "Unset: the shared drift.lsdd_n_kernel_centers." in lsdd["properties"]["n_kernel_centers"]["description"]
    assert set(schema["$defs"]["MMDOnlineConfig"]["properties"]) == {"name", "ert", "window_size", "n_bootstraps"}
    json.dumps(schema)


def test_prefect_parameter_schema_accepts_names_and_tables_and_rejects_a_wrong_key():
    # Deployments enforce the flow's parameter schema server-side: a saved config must validate.
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError as SchemaError
    from prefect.utilities.schema_tools import validate

    def flow_fn(config: Settings | None = None) -> None: ...

    schema = parameter_schema(flow_fn).model_dump()
    assert schema["definitions"]["LSDDConfig"]["required"] == ["name"]
    drift = Settings().model_dump(mode="json")["drift"]
    validate({"config": {"drift": drift}}, schema, raise_on_error=True, preprocess=True, ignore_required=True)
    drift["detectors"] = ["ks_softmax", {"name": "lsdd", "n_permutations": 200}]
    validate({"config": {"drift": drift}}, schema, raise_on_error=True, preprocess=True, ignore_required=True)
    drift["detectors"] = [{"name": "lsdd", "window_size": 3}]
    with pytest.raises(SchemaError, match=r"config.drift.detectors\[0\]"):
        validate({"config": {"drift": drift}}, schema, raise_on_error=True, preprocess=True, ignore_required=True)
