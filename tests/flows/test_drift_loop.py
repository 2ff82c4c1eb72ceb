"""The drift check and retraining flows under a real Prefect API, on the local store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.settings import load_settings
from tasks.store.artifacts import ArtifactStore
from tasks.store.registry import ModelRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_api):
    """A champion trained once for the module, and a stream with drift at batches 3-5."""
    from flows.training import training
    from tasks.drift.cli import simulate_stream_command

    root = tmp_path_factory.mktemp("loop")
    # seed 1: the detectors' false-alarm rate is 5% per clean batch; with the hash splits of
    # tasks/data/splits.py the default seed's stream had one (batch 1, p = 0.0025 < 0.05/10),
    # seeds 1-3 none (min clean-batch p 0.0105..0.0882).
    s = load_settings(
        profile="smoke",
        environ={},
        overrides={
            "seed": 1,
            "tuning.enabled": False,
            "federated.enabled": False,
            "adversarial.enabled": False,
            "store.uri": str(root / "store"),
            "drift.batches_uri": str(root / "batches"),
        },
    )
    training(s)
    simulate_stream_command(
        str(root / "batches"), kind="gaussian_noise", onset=3, duration=3, batches=8, batch_size=100, settings=s
    )
    # A broken batch among them: NaN values. It must be quarantined and get no verdict.
    bad = np.load(root / "batches" / "batch-00001.npz")
    x = bad["x"].copy()
    x[0, 0, 0, 0] = np.nan
    np.savez(root / "batches" / "batch-00001b.npz", x=x, y=bad["y"])
    return s, root


def _ids_by_key(r):
    """The check result's batch ids by file name (ids are key + content hash)."""
    return {uri.rsplit("/", 1)[-1]: bid for bid, uri in r["keys"].items()}


def _read_events(name, resource_id, expect, timeout=60.0):
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id]))
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=flt, limit=50).events
        if len(events) >= expect or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_drift_check_flags_drift_quarantines_bad_batch_and_emits_one_event(loop):
    from flows.drift_check import drift_check

    s, root = loop
    r = drift_check(s)
    assert r["status"] == "drift-and-quarantined"
    by_key = _ids_by_key(r)
    assert sorted(by_key) == [f"batch-{i:05d}.npz" for i in range(8)]
    assert r["drifted"] == [by_key[f"batch-{i:05d}.npz"] for i in (3, 4, 5)]
    assert [q["uri"].rsplit("/", 1)[-1] for q in r["quarantine"]] == ["batch-00001b.npz"]
    assert r["quarantine"][0]["rules"] == ["non_finite"] and len(r["checked"]) == 8
    ev = r["event"]
    assert ev["sent"] and ev["payload"]["batch_ids"] == r["drifted"] and ev["payload"]["model"] == "digits-classifier"
    # Labelled batches: CBPE's estimate and the measured accuracy, with each verdict.
    harm = r["harm"][r["drifted"][0]]
    assert harm["measured_accuracy"] is not None and harm["basis"] == "measured"
    assert 0.0 <= harm["estimated_accuracy"] <= 1.0 and harm["reference_accuracy"] > 0.8
    q = r["quarantine_event"]
    assert q["sent"] and q["payload"]["batch_ids"] == r["quarantined"]
    events = _read_events("driftloop.data.quarantined", "driftloop.model.digits-classifier", 1)
    assert str(events[0].id) == q["event_id"]
    store = ArtifactStore.from_config(s.store)
    assert any(k.endswith("report.json") for k in store.backend.list(f"quarantine/{r['quarantined'][0]}"))

    # Nothing new: nothing checked twice, no event.
    again = drift_check(s)
    assert again["checked"] == [] and again["event"] is None and again["status"] == "ok"


def test_unlabelled_clean_and_shifted_batches_get_verdicts_not_quarantine(loop, tmp_path):
    """Features only (npz with just x, csv without the label column): verdicts, CBPE estimates,
    and a batch whose features were scaled up is drift (its range and shift evidence), not quarantined."""
    from flows.drift_check import drift_check
    from tasks.data.sources import load_digits_dataset, split_dataset

    s, _ = loop
    s = s.model_copy(update={"drift": s.drift.model_copy(update={"batches_uri": str(tmp_path)})})
    test = split_dataset(load_digits_dataset(), s.seed, s.data.val_fraction, s.data.test_fraction).test
    np.savez(tmp_path / "clean.npz", x=test.x[:100])
    scaled = test.x[100:200].copy()
    scaled[:, :, :, :3] = scaled[:, :, :, :3] * 4.0 + 1.0  # three pixel columns scaled up
    np.savez(tmp_path / "scaled.npz", x=scaled)
    import pandas as pd

    pd.DataFrame(test.x[200:300].reshape(100, -1), columns=[f"p{i}" for i in range(64)]).to_csv(
        tmp_path / "clean.csv", index=False
    )
    r = drift_check(s)
    by_key = _ids_by_key(r)
    assert sorted(by_key) == ["clean.csv", "clean.npz", "scaled.npz"] and r["quarantined"] == []
    assert r["drifted"] == [by_key["scaled.npz"]] and r["status"] == "drift"
    from tasks.drift import ledger

    rec = ledger.get_check(ArtifactStore.from_config(s.store).backend, s.registry.model_name, by_key["scaled.npz"])
    assert rec["labelled"] is False and "out_of_range" in rec["evidence_rules"]
    assert [x["detector"] for x in rec["reports"] if x["drift"]][-1] == "data_rules"
    for key in ("clean.npz", "clean.csv"):
        h = r["harm"][by_key[key]]
        assert h["measured_accuracy"] is None and h["basis"] == "estimated" and h["estimated_accuracy"] > 0.7
    assert r["event"]["payload"]["unlabelled_batch_ids"] == [by_key["scaled.npz"]]


def test_batch_discovery_one_bad_file_cannot_break_a_check(loop, tmp_path):
    import os

    from flows.drift_check import drift_check
    from tasks.errors import DataError

    s, root = loop
    d = tmp_path / "b"
    (d / "one").mkdir(parents=True)
    (d / "two").mkdir()
    src = np.load(root / "batches" / "batch-00000.npz")
    x, y = src["x"], src["y"]
    np.savez(d / "one" / "b.npz", x=x[:50], y=y[:50])
    np.savez(d / "two" / "b.npz", x=x[50:], y=y[50:])
    import pandas as pd

    pd.DataFrame(x[:60].reshape(60, -1), columns=[str(i) for i in range(64)]).to_csv(d / "one" / "b.csv", index=False)
    np.savez(d / "bad name!.npz", x=x)
    os.symlink(root / "batches" / "batch-00002.npz", d / "link.npz")
    os.mkfifo(d / "pipe.npz")
    np.savez(d / "big.npz", x=np.tile(x, (40, 1, 1, 1)))
    np.savez(d / "tiny.npz", x=x[:3])  # fewer rows than drift.min_batch_size: no verdict, no failure
    size_cap = (d / "big.npz").stat().st_size - 1
    cfg = s.drift.model_copy(update={"batches_uri": str(d), "max_batch_bytes": size_cap})
    s = s.model_copy(update={"drift": cfg})
    r = drift_check(s)
    assert sorted(k.replace(str(d) + "/", "") for k in r["keys"].values()) == ["one/b.csv", "one/b.npz", "two/b.npz"]
    rules = {q["uri"].replace(str(d) + "/", ""): q["rules"] for q in r["quarantine"]}
    assert rules == {
        "bad name!.npz": ["bad_batch_name"],
        "link.npz": ["not_regular_file"],
        "pipe.npz": ["not_regular_file"],
        "big.npz": ["batch_too_large"],
    }
    big = next(q for q in r["quarantine"] if q["uri"].endswith("big.npz"))
    assert str(size_cap + 1) in big["message"]
    assert r["status"] in ("quarantined", "drift-and-quarantined") and len(r["too_small"]) == 1
    # The same files again: nothing new. A rewritten file (new content) is checked again.
    assert drift_check(s)["checked"] == []
    np.savez(d / "two" / "b.npz", x=x[60:], y=y[60:])
    again = drift_check(s)
    assert [u.replace(str(d) + "/", "") for u in again["keys"].values()] == ["two/b.npz"]
    # A batches_uri that does not exist is an error, not "0 new batches".
    missing = s.model_copy(update={"drift": cfg.model_copy(update={"batches_uri": str(tmp_path / "nope")})})
    with pytest.raises(DataError, match="does not exist"):
        drift_check(missing)


def test_cli_drift_check_exit_code_3_when_batches_were_quarantined(loop, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    s, root = loop
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    res = CliRunner().invoke(
        app,
        [
            "run",
            "drift-check",
            "-p",
            f"store.uri={s.store.uri}",
            "-p",
            f"drift.batches_uri={tmp_path}",
            "-p",
            "drift.reference_size=200",
        ],
    )
    assert res.exit_code == 3, res.output
    assert "status: quarantined" in res.output


def test_retraining_runs_once_per_episode_with_lineage(loop):
    from flows.retraining import retraining

    s, root = loop
    store = ArtifactStore.from_config(s.store)
    reg = ModelRegistry(store, s.registry.model_name)
    from tasks.drift import ledger

    ids = {
        h["key"]: h["batch_id"]
        for h in ledger.check_history(store.backend, s.registry.model_name)
        if h.get("status") == "checked"
    }
    episode = "episode-test-1"
    r = retraining(
        s,
        event_id="evt-1",
        episode_id=episode,
        batch_ids=[ids["batch-00003.npz"], ids["batch-00004.npz"]],
        detector="ks_softmax",
        model_version=1,
    )
    assert r["status"] in ("promoted", "kept-champion")
    rec = reg.get(r["version"])
    assert rec["lineage"]["parent_version"] == 1 and rec["lineage"]["trigger"]["event_id"] == "evt-1"
    assert store.manifest(r["run_id"])["extra"]["extra_batches"][0].endswith("batch-00003.npz")
    n_versions = len(reg.versions())
    # A duplicate delivery of the same episode trains nothing.
    dup = retraining(s, event_id="evt-2", episode_id=episode, batch_ids=[ids["batch-00005.npz"]])
    assert dup["status"] == "duplicate" and len(reg.versions()) == n_versions
    with pytest.raises(Exception, match="batch-99999"):
        retraining(s, event_id="evt-3", episode_id="episode-test-2", batch_ids=["batch-99999"])


def test_drift_check_without_champion_skips_and_emits_nothing(prefect_api, tmp_path):
    from flows.drift_check import drift_check

    s = load_settings(
        profile="smoke",
        environ={},
        overrides={"store.uri": str(tmp_path / "s"), "drift.batches_uri": str(tmp_path / "b")},
    )
    r = drift_check(s)
    assert r["status"] == "skipped" and "no champion" in r["reason"] and r["event"] is None


def test_predict_log_then_drift_check_finds_the_logged_batch(loop, tmp_path):
    """`driftloop predict --data X --log`: the champion's predictions and confidences; the inputs
    land under drift.batches_uri as an unlabelled batch, which the next drift check verdicts."""
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.drift_check import drift_check

    s, root = loop
    batches = tmp_path / "served"
    batches.mkdir()
    src = np.load(root / "batches" / "batch-00006.npz")
    np.savez(tmp_path / "request.npz", x=src["x"][:40])  # what a client sends: features only
    params = ["-p", f"store.uri={s.store.uri}", "-p", f"drift.batches_uri={batches}"]
    res = CliRunner().invoke(app, ["predict", "--data", str(tmp_path / "request.npz"), "--log", "--json", *params])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert out["n"] == 40 and len(out["confidences"]) == 40 and all(0.0 < c <= 1.0 for c in out["confidences"])
    assert np.mean(np.array(out["predictions"]) == src["y"][:40]) > 0.8  # the champion, not noise
    logged = out["logged_uri"]
    assert logged.startswith(str(batches / "predictions")) and set(np.load(logged).files) == {"x"}
    csv = CliRunner().invoke(app, ["predict", "--data", str(tmp_path / "request.npz"), *params])
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0] == "row,prediction,confidence"
    assert len(csv.stdout.splitlines()) == 41

    r = drift_check(s.model_copy(update={"drift": s.drift.model_copy(update={"batches_uri": str(batches)})}))
    assert list(r["keys"].values()) == [logged] and r["quarantined"] == []
    (bid,) = r["checked"]
    assert r["harm"][bid]["basis"] == "estimated"
    # A broken request is refused with the rule named, exit 1.
    bad = src["x"][:40].copy()
    bad[0, 0, 0, 0] = np.inf
    np.savez(tmp_path / "bad.npz", x=bad)
    res = CliRunner().invoke(app, ["predict", "--data", str(tmp_path / "bad.npz"), *params])
    assert res.exit_code == 1 and "non_finite" in res.output


def _in_thread(fn, *args, **kwargs):
    """Run ``fn`` in a thread that sees this context's Prefect settings (which server to talk to)."""
    import contextvars
    import threading

    out = {}
    ctx = contextvars.copy_context()

    def target():
        try:
            out["result"] = ctx.run(fn, *args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def _paused_run(episode_id, timeout=120.0):
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as c:
            runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["retraining"])), limit=200)
        for r in runs:
            if r.parameters.get("episode_id") == episode_id and r.state and r.state.is_paused():
                return r
        time.sleep(0.5)
    raise AssertionError(
        f"no paused retraining run for {episode_id} within {timeout} s: "
        f"{[(r.parameters.get('episode_id'), r.state_name) for r in runs]}"
    )


@pytest.mark.slow
def test_retraining_pauses_for_labels_on_a_real_server(loop, tmp_path, on_server):
    """Unlabelled drifted batches: the retraining run pauses with a labels form (Prefect interactive
    input); input sent through the API as the UI does resumes it; labels files beside the batches
    resume it by themselves; a timeout trains nothing; duplicates during the pause train nothing."""
    from prefect.client.orchestration import get_client

    from flows.drift_check import drift_check
    from flows.retraining import retraining
    from tasks.drift import ledger

    s, root = loop
    d = tmp_path / "unlabelled"
    d.mkdir()
    for i in (3, 4):
        np.savez(d / f"u{i}.npz", x=np.load(root / "batches" / f"batch-{i:05d}.npz")["x"])
    cfg = s.drift.model_copy(update={"batches_uri": str(d), "labels_poll_seconds": 1.0, "cooldown_seconds": 0.0})
    s = s.model_copy(update={"drift": cfg})
    r = drift_check(s)
    assert r["event"] and r["event"]["payload"]["unlabelled_batch_ids"] == r["triggering"]
    ids = r["triggering"]
    by_id = r["keys"]
    reg = ModelRegistry(ArtifactStore.from_config(s.store), s.registry.model_name)

    # 1. The form: input sent through the API resumes the run, which trains on the given batches.
    t, out = _in_thread(retraining, s, event_id=r["event"]["event_id"], episode_id="labels-ep-form", batch_ids=ids)
    run = _paused_run("labels-ep-form", timeout=60)
    assert "error" not in out, out
    keyset = run.state.state_details.run_input_keyset
    with get_client(sync_client=True) as c:
        schema = c.read_flow_run_input(run.id, keyset["schema"])
    assert "labelled_batch_uris" in schema and "skip" in schema  # what the UI renders as a form
    dup = retraining(s, event_id="again", episode_id="labels-ep-form", batch_ids=ids)  # a redelivery while paused
    assert dup["status"] == "duplicate"
    labelled = []
    for i in (3, 4):
        src = np.load(root / "batches" / f"batch-{i:05d}.npz")
        np.savez(tmp_path / f"labelled-{i}.npz", x=src["x"], y=src["y"])
        labelled.append(str(tmp_path / f"labelled-{i}.npz"))
    n0 = len(reg.versions())
    with get_client(sync_client=True) as c:
        c.resume_flow_run(run.id, run_input={"labelled_batch_uris": labelled})
    t.join(300)
    assert "error" not in out, out
    res = out["result"]
    assert res["status"] in ("promoted", "kept-champion") and len(reg.versions()) == n0 + 1
    lineage = reg.get(res["version"])["lineage"]["trigger"]
    assert lineage["labels"]["resumed_by"] == "user" and lineage["labels"]["uris"] == labelled

    # 2. Labels files beside the batches resume a waiting run by itself.
    t, out = _in_thread(retraining, s, episode_id="labels-ep-files", batch_ids=ids)
    _paused_run("labels-ep-files")
    for i, bid in zip((3, 4), ids):
        y = np.load(root / "batches" / f"batch-{i:05d}.npz")["y"]
        (d / f"u{i}.npz.labels.json").write_text(json.dumps({"y": [int(v) for v in y]}))
        assert by_id[bid].endswith(f"u{i}.npz")
    t.join(300)
    assert "error" not in out, out
    assert out["result"]["status"] in ("promoted", "kept-champion") and len(reg.versions()) == n0 + 2
    assert reg.get(out["result"]["version"])["lineage"]["trigger"]["labels"]["resumed_by"] == "labels-files"
    for i in (3, 4):
        (d / f"u{i}.npz.labels.json").unlink()

    # 3. Nobody answers: "awaiting labels", nothing trained.
    short = s.model_copy(update={"drift": cfg.model_copy(update={"labels_timeout_seconds": 3})})
    res = retraining(short, episode_id="labels-ep-timeout", batch_ids=ids)
    assert res["status"] == "awaiting-labels" and len(reg.versions()) == n0 + 2
    outcome = ledger.retraining_outcome(
        ArtifactStore.from_config(s.store).backend, s.registry.model_name, "labels-ep-timeout"
    )
    assert outcome["status"] == "awaiting-labels"


@pytest.mark.slow
def test_served_loop_predict_log_scheduled_check_labels_retrain_gate(on_server, tmp_path):
    """The loop end to end on a real server with served deployments only: `predict --log` writes an
    unlabelled batch; the *scheduled* drift check (cron every minute) flags it and emits the event;
    the event-triggered retraining pauses for labels; a labels file beside the batch resumes it; it
    trains and the gate promotes the candidate or keeps the champion (recorded either way)."""
    import os
    import subprocess
    import sys
    import time
    import uuid
    from pathlib import Path

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.deployments import run_deployment
    from typer.testing import CliRunner

    from deployments.stack import stop_group
    from flows.cli import app
    from tasks.data.sources import load_digits_dataset, split_dataset
    from tasks.drift.stream import simulate_stream

    model = f"loop-{uuid.uuid4().hex[:6]}"
    store_uri, batches = str(tmp_path / "store"), tmp_path / "batches"
    batches.mkdir()
    params = {
        "tuning.enabled": "false",
        "federated.enabled": "false",
        "adversarial.enabled": "false",
        "training.epochs": "3",
        "store.uri": store_uri,
        "registry.model_name": model,
        "drift.batches_uri": str(batches),
        "drift.schedule_cron": "* * * * *",
        "drift.labels_poll_seconds": "1",
    }
    flat = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRIFTLOOP_"))}
    env.update(
        PREFECT_API_URL=on_server.api_url,
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
    )
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--smoke", *flat],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def runs_of(name):
        with get_client(sync_client=True) as c:
            return c.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])), limit=200
            )

    def wait_for(pred, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = pred()
            if got:
                return got
            time.sleep(1)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what}; serve log:\n"
            f"{(tmp_path / 'serve.log').read_text()[-3000:]}"
        )

    try:

        def served():
            with get_client(sync_client=True) as c:
                try:
                    d = c.read_deployment_by_name("retraining/retraining")
                except Exception:  # noqa: BLE001 - not there yet
                    return None
                return d.parameters["config"]["registry"]["model_name"] == model

        wait_for(served, 120, "the served deployments")
        assert run_deployment("training/training", timeout=300, poll_interval=1).state.is_completed()

        # Serving: a drifted request, answered and logged as an unlabelled batch.
        s = load_settings(profile="smoke", environ={}, overrides={"store.uri": store_uri})
        splits = split_dataset(load_digits_dataset(), s.seed, s.data.val_fraction, s.data.test_fraction)
        (req,) = list(
            simulate_stream(
                splits, kind="gaussian_noise", onset=0, duration=1, n_batches=1, batch_size=100, seed=5, severity=1.5
            )
        )
        np.savez(tmp_path / "request.npz", x=req.x)
        cli = [
            "-p",
            f"store.uri={store_uri}",
            "-p",
            f"registry.model_name={model}",
            "-p",
            f"drift.batches_uri={batches}",
        ]
        res = CliRunner().invoke(app, ["predict", "--data", str(tmp_path / "request.npz"), "--log", "--json", *cli])
        assert res.exit_code == 0, res.output
        logged = json.loads(res.stdout[res.stdout.index("{") :])["logged_uri"]

        # The scheduled check (no manual run) finds it; its event starts retraining, which pauses for labels.
        paused = wait_for(
            lambda: [r for r in runs_of("retraining") if r.state and r.state.is_paused()],
            240,
            "the event-triggered retraining to pause for labels",
        )
        assert any(r.state.is_completed() for r in runs_of("drift-check"))
        (rt,) = paused
        assert rt.parameters["batch_ids"] and rt.parameters["batch_ids"][0].startswith("predictions__")
        # Labels arrive beside the batch: the run resumes by itself, trains, and the gate decides.
        Path(logged + ".labels.json").write_text(json.dumps({"y": [int(v) for v in req.y]}))

        def finished():
            with get_client(sync_client=True) as c:
                r = c.read_flow_run(rt.id)
            return r if r.state and r.state.is_final() else None

        done = wait_for(finished, 300, "the retraining run to finish")
        assert done.state.is_completed(), done.state
        reg = ModelRegistry(ArtifactStore.from_config(s.store.model_copy(update={"uri": store_uri})), model)
        v2 = reg.get(2)
        trigger = v2["lineage"]["trigger"]
        assert v2["lineage"]["parent_version"] == 1 and trigger["labels"]["resumed_by"] == "labels-files"
        assert reg.champion()["version"] in (1, 2)  # promoted or kept: the gate's call, recorded either way
    finally:
        stop_group(proc.pid, 15, proc)
        log.close()
    assert proc.poll() is not None
