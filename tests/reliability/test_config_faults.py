"""Configuration mistakes a hostile user made (issue 17): each is a configuration error (exit 2)
naming the file or key, found before the first stage runs."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from tasks.errors import ConfigError
from tasks.settings import load_settings
from tests.reliability.conftest import smoke_settings


def _cli(tmp_path, *args):
    from flows.cli import app

    return CliRunner().invoke(app, list(args), env={"DRIFTLOOP_STORE__URI": str(tmp_path / "store")})


def test_config_files_and_values_are_read_strictly(tmp_path, figures):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("registry:\n  model_name: caf\xe9\n".encode("latin-1"))
    dup = tmp_path / "dup.yaml"
    dup.write_text("training:\n  epochs: 5\n  lr: 0.01\n  epochs: 50\n")
    dup_json = tmp_path / "dup.json"
    dup_json.write_text('{"seed": 1, "seed": 2}')
    cases = {
        "non-utf8 file": (["models", "list", "-c", str(latin1)], [str(latin1), "not UTF-8"]),
        "duplicate yaml key": (["models", "list", "-c", str(dup)], [str(dup), "duplicate key 'epochs'"]),
        "duplicate json key": (["models", "list", "-c", str(dup_json)], [str(dup_json), "duplicate key 'seed'"]),
        "epochs=true": (["run", "training", "-p", "training.epochs=true"], ["training.epochs", "boolean"]),
        "enabled=1": (["run", "training", "-p", "tuning.enabled=1"], ["tuning.enabled", "true or false"]),
        'epochs="5"': (["run", "training", "-p", 'training.epochs="5"'], ["training.epochs", "text"]),
    }
    exits = {}
    for name, (args, needles) in cases.items():
        r = _cli(tmp_path, *args)
        exits[name] = r.exit_code
        assert r.exit_code == 2, (name, r.output, r.exception)
        for n in needles:
            assert n in r.output, (name, n, r.output)
        assert "Traceback" not in r.output
    # What stays accepted: an int for a float, null for an optional number, numbers from the environment.
    s = load_settings(
        overrides={"training.lr": 1, "training.num_threads": None}, environ={"DRIFTLOOP_TRAINING__EPOCHS": "7"}
    )
    assert s.training.lr == 1.0 and s.training.epochs == 7
    figures.update(cases=len(cases), exit_codes=exits, raw_tracebacks=0)


@pytest.mark.integration
def test_a_bad_search_space_or_an_unwritable_store_fails_before_the_first_stage(prefect_api, tmp_path, figures):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.training import training

    def task_runs_of(state) -> list[str]:
        with get_client(sync_client=True) as c:
            runs = c.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )
        return sorted(r.name for r in runs)

    # A spec that breaks its own rules fails as the settings load; one that the training section
    # rejects (lr must be > 0, a uniform range draws its low) passes loading and fails in preflight.
    with pytest.raises(ConfigError, match=r"tuning\.search_space\.lr\.low: a loguniform range needs low > 0"):
        smoke_settings(tmp_path, **{"tuning.search_space": {"lr": {"type": "loguniform", "low": 0, "high": 0.1}}})
    bad_space = smoke_settings(
        tmp_path,
        **{"tuning.enabled": True, "tuning.search_space": {"lr": {"type": "uniform", "low": 0, "high": 0.1}}},
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    unwritable = smoke_settings(tmp_path, **{"store.uri": str(blocker / "store")})
    from flows.retraining import retraining

    found = {}
    for name, flow_, settings, needle in (
        ("search_space", training, bad_space, "tuning.search_space.lr.low"),
        ("store.uri", training, unwritable, "store.uri="),
        ("retraining store.uri", retraining, unwritable, "store.uri="),
    ):
        t0 = time.monotonic()
        state = flow_(settings, return_state=True)
        took = time.monotonic() - t0
        assert state.is_failed()
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            state.result()
        ran = task_runs_of(state)
        assert ran == [], f"{name}: stages ran before the error: {ran}"
        found[name] = {"tasks_run_before_error": len(ran), "seconds": round(took, 1)}

    r = _cli(
        tmp_path,
        "run",
        "training",
        "--smoke",
        "-p",
        f"store.uri={blocker / 'store'}",
        "-p",
        "tuning.enabled=false",
        "-p",
        "federated.enabled=false",
        "-p",
        "adversarial.enabled=false",
    )
    assert r.exit_code == 2 and "is not writable" in r.output, r.output
    figures.update(checks=found, cli_exit_unwritable_store=r.exit_code)


def test_the_store_probe_on_s3_leaves_nothing_and_refuses_bad_credentials(s3_store_config):
    from pydantic import SecretStr

    from tasks.preflight import check_store_writable
    from tasks.store.backends import open_backend

    settings = load_settings(environ={}).model_copy(update={"store": s3_store_config})
    check_store_writable(settings)
    assert open_backend(s3_store_config).list("") == []
    wrong = settings.model_copy(
        update={"store": s3_store_config.model_copy(update={"secret_access_key": SecretStr("not-the-secret")})}
    )
    with pytest.raises(ConfigError, match=r"store\.uri=.* is not writable") as e:
        check_store_writable(wrong)
    assert "not-the-secret" not in str(e.value)
