"""The deployment builders, without a server: parameters, schedule, trigger, dedup, prefect.yaml."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from deployments.build import (
    DEFAULT_WORK_POOL,
    RETRAINING_EVENT_PARAMETERS,
    build_deployments,
    drift_schedule,
    fingerprint,
    retraining_trigger,
    settings_parameters,
)
from deployments.prefect_yaml import render
from tasks.drift.events import DRIFT_EVENT, resource_id
from tasks.errors import ConfigError
from tasks.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def smoke(**over) -> Settings:
    return load_settings(profile="smoke", overrides=over, environ={})


def test_parameters_are_the_resolved_config_without_secrets(tmp_path):
    s = smoke(
        **{
            "store.uri": "rel/store",
            "store.access_key_id": "AKIA-SECRET",
            "store.secret_access_key": "s3cr3t",
            "training.epochs": 2,
        }
    )
    p = settings_parameters(s)
    assert p["store"]["access_key_id"] is None and p["store"]["secret_access_key"] is None
    assert "s3cr3t" not in str(p) and "AKIA-SECRET" not in str(p)
    assert Path(p["store"]["uri"]).is_absolute() and p["store"]["uri"].endswith("rel/store")
    assert Path(p["drift"]["batches_uri"]).is_absolute()
    assert p["training"]["epochs"] == 2 and p["profile"] == "smoke"
    # what the deployment carries is a valid configuration that the flow's parameter accepts
    assert Settings.model_validate(p).training.epochs == 2
    s3 = smoke(**{"store.uri": "s3://b/p"})
    assert settings_parameters(s3)["store"]["uri"] == "s3://b/p"


def test_a_search_space_from_the_ui_form_is_checked_by_the_schema_and_typed_by_the_flow():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    from flows.training import training
    from tasks.tuning.config import LogUniform

    # The deployment carries the plain form (the dump of the typed specs), the UI form edits JSON.
    params = settings_parameters(smoke())
    assert params["tuning"]["search_space"]["lr"] == {"type": "loguniform", "low": 1e-4, "high": 3e-2}
    schema = parameter_schema(training.fn).model_dump()
    space = {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}
    form = {"config": {**params, "tuning": {**params["tuning"], "search_space": space}}}
    assert validate(form, schema, raise_on_error=False, preprocess=True, ignore_required=True) == []
    assert training.validate_parameters(form)["config"].tuning.search_space == {"lr": LogUniform(low=1e-3, high=1e-2)}
    for bad in ({"lr": {"type": "gaussian", "low": 1e-3, "high": 1e-2}}, {"colour": {"type": "choice", "values": [1]}}):
        form = {"config": {**params, "tuning": {**params["tuning"], "search_space": bad}}}
        assert validate(form, schema, raise_on_error=False, preprocess=True, ignore_required=True) != []


def test_drift_schedule_from_config_and_bad_cron_named():
    assert drift_schedule(smoke()).cron == "*/15 * * * *"
    assert drift_schedule(smoke(**{"drift.schedule_cron": "0 * * * *"})).cron == "0 * * * *"
    assert drift_schedule(smoke(**{"drift.enabled": False})) is None
    with pytest.raises(ConfigError, match="drift.schedule_cron"):
        drift_schedule(smoke(**{"drift.schedule_cron": "every quarter hour"}))


def test_retraining_trigger_dedups_per_episode_within_the_cooldown():
    s = smoke(**{"registry.model_name": "m1", "drift.cooldown_seconds": 120})
    t = retraining_trigger(s)
    assert t.expect == {DRIFT_EVENT} == {"driftloop.drift.detected"}
    assert dict(t.match.root) == {"prefect.resource.id": resource_id("m1")}
    assert t.for_each == {"driftloop.episode.id"}
    assert t.threshold == 1 and t.within == timedelta(seconds=120) and t.posture.value == "Reactive"
    assert t.parameters == RETRAINING_EVENT_PARAMETERS
    assert t.parameters["batch_ids"] == "{{ event.payload.batch_ids }}"


def test_three_deployments_with_module_entrypoints():
    ds = {d.name: d for d in build_deployments(smoke(), work_pool=DEFAULT_WORK_POOL)}
    assert set(ds) == {"training", "drift-check", "retraining"}
    assert ds["training"].entrypoint == "flows.training.training" and not ds["training"].schedules
    assert [s.schedule.cron for s in ds["drift-check"].schedules] == ["*/15 * * * *"]
    dc = ds["drift-check"]
    assert dc.concurrency_limit == 1 and dc.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    r = ds["retraining"]
    assert r.concurrency_limit == 1 and r.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert len(r.triggers) == 1 and not r.schedules
    assert all(set(d.parameters) == {"config"} for d in ds.values())
    with pytest.raises(ConfigError, match="unknown deployment"):
        build_deployments(smoke(), only=["trainig"])


def test_fingerprint_is_stable_and_sees_changes():
    a = {d.name: fingerprint(d, "p") for d in build_deployments(smoke(), work_pool="p")}
    b = {d.name: fingerprint(d, "p") for d in build_deployments(smoke(), work_pool="p")}
    assert a == b
    c = {
        d.name: fingerprint(d, "p")
        for d in build_deployments(smoke(**{"drift.schedule_cron": "0 * * * *"}), work_pool="p")
    }
    assert c["drift-check"] != a["drift-check"]
    assert {d.name: fingerprint(d, "q") for d in build_deployments(smoke(), work_pool="q")}["training"] != a["training"]


def test_prefect_yaml_declares_the_same_three():
    doc = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in doc["deployments"]}
    assert set(deps) == {"training", "drift-check", "retraining"}
    defaults = Settings()
    assert deps["training"]["entrypoint"] == "flows/training.py:training"
    assert deps["drift-check"]["entrypoint"] == "flows/drift_check.py:drift_check"
    assert deps["retraining"]["entrypoint"] == "flows/retraining.py:retraining"
    assert [s["cron"] for s in deps["drift-check"]["schedules"]] == [defaults.drift.schedule_cron]
    assert deps["retraining"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert deps["drift-check"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    (trig,) = deps["retraining"]["triggers"]
    t = retraining_trigger(defaults)
    assert set(trig["expect"]) == t.expect and trig["match"] == dict(t.match.root)
    assert set(trig["for_each"]) == t.for_each and trig["threshold"] == 1
    assert trig["within"] == defaults.drift.cooldown_seconds
    assert trig["parameters"] == RETRAINING_EVENT_PARAMETERS
    for d in deps.values():
        assert d["work_pool"]["name"] == DEFAULT_WORK_POOL


def test_prefect_yaml_is_generated_from_the_builders():
    # One declaration: the committed file is what `driftloop deploy --write-yaml` writes from the
    # builders. After changing a builder: driftloop deploy --write-yaml deployments/prefect.yaml
    assert (ROOT / "deployments" / "prefect.yaml").read_text() == render()


def test_write_yaml_needs_no_server(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    r = CliRunner().invoke(app, ["deploy", "--write-yaml", str(tmp_path / "p.yaml")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.yaml").read_text() == render()
