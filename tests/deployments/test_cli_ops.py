"""`driftloop artifacts ls/get`, `hyperband-plan`, `simulate-stream`, `up`'s port check and bad input."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.store.artifacts import ArtifactStore, write_run
from tasks.store.config import StoreConfig

runner = CliRunner()


@pytest.fixture
def store_with_run(tmp_path, monkeypatch):
    uri = str(tmp_path / "store")
    monkeypatch.setenv("DRIFTLOOP_STORE__URI", uri)
    store = ArtifactStore.from_config(StoreConfig(uri=uri))
    m = write_run(store, "training", {"metrics.json": {"test_accuracy": 0.93}, "notes.txt": b"hello bytes"})
    return store, m["run_id"]


def test_artifacts_ls_lists_runs_and_objects(store_with_run):
    store, run_id = store_with_run
    r = runner.invoke(app, ["artifacts", "ls"])
    assert r.exit_code == 0 and run_id in r.output
    r = runner.invoke(app, ["artifacts", "ls", "--json"])
    assert json.loads(r.output)["runs"] == [run_id]
    r = runner.invoke(app, ["artifacts", "ls", "--kind", "drift", "--json"])
    assert json.loads(r.output)["runs"] == []
    r = runner.invoke(app, ["artifacts", "ls", run_id, "--json"])
    objs = json.loads(r.output)["objects"]
    assert set(objs) == {"metrics.json", "notes.txt"} and objs["notes.txt"]["size"] == len(b"hello bytes")


def test_artifacts_get_verified_to_file_and_stdout(store_with_run, tmp_path):
    _, run_id = store_with_run
    out = tmp_path / "m.json"
    r = runner.invoke(app, ["artifacts", "get", run_id, "metrics.json", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text()) == {"test_accuracy": 0.93}
    r = runner.invoke(app, ["artifacts", "get", run_id, "notes.txt"])
    assert r.exit_code == 0 and r.stdout_bytes == b"hello bytes"


def test_artifacts_get_unknown_names_what_is_missing(store_with_run):
    store, run_id = store_with_run
    r = runner.invoke(app, ["artifacts", "get", run_id, "nope.bin"])
    assert r.exit_code == 1 and "nope.bin" in r.output and "metrics.json" in r.output
    r = runner.invoke(app, ["artifacts", "ls", "training-20000101T000000Z-ffff"])
    assert r.exit_code != 0
    # a tampered object is refused (sha256 against the manifest)
    key = f"runs/{run_id}/notes.txt"
    store.backend.put_bytes(key, b"tampered!!!")
    r = runner.invoke(app, ["artifacts", "get", run_id, "notes.txt"])
    assert r.exit_code == 1 and "does not match" in r.output


def test_malformed_config_is_named(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("training: [epochs: 3\n")
    r = runner.invoke(app, ["artifacts", "ls", "--config", str(bad)])
    assert r.exit_code == 2 and "broken.yaml" in r.output and "malformed" in r.output
    r = runner.invoke(app, ["run", "trainng"])
    assert r.exit_code == 2 and "unknown flow 'trainng'" in r.output and "training" in r.output


def test_hyperband_plan_and_simulate_stream(tmp_path):
    r = runner.invoke(app, ["hyperband-plan", "--max-t", "81", "--eta", "3", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["first_rung_sizes"][0] == 81
    r = runner.invoke(app, ["hyperband-plan", "--max-t", "2", "--eta", "3"])
    assert r.exit_code == 2
    out = tmp_path / "stream"
    r = runner.invoke(
        app,
        [
            "simulate-stream",
            "--out",
            str(out),
            "--batches",
            "3",
            "--batch-size",
            "20",
            "--onset",
            "1",
            "--duration",
            "1",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert len(list(out.glob("batch-*.npz"))) == 3 and (out / "stream.json").exists()
    r = runner.invoke(app, ["simulate-stream", "--out", str(out), "--kind", "sideways"])
    assert r.exit_code == 2 and "sideways" in r.output


def test_up_refuses_a_busy_port_before_starting_anything(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = runner.invoke(app, ["up", "--dir", str(tmp_path / "stack"), "--prefect-port", str(busy)])
    assert r.exit_code == 1 and f"port {busy}" in r.output and "in use" in r.output
    assert not (tmp_path / "stack" / "state.json").exists()
    r = runner.invoke(app, ["down", "--dir", str(tmp_path / "stack")])
    assert r.exit_code == 0 and "nothing was running" in r.output
