"""The `driftloop` command: the main job end to end (a real subprocess), and its error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIFTLOOP = [sys.executable, "-m", "flows.cli"]


def _run(args, tmp_path, timeout=600, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    e.update(
        {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DRIFTLOOP_STORE__URI": str(tmp_path / "store"),
            **env,
        }
    )
    return subprocess.run(DRIFTLOOP + args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)


@pytest.mark.integration
@pytest.mark.slow
def test_smoke_run_registers_verified_champion_then_validate_and_models(tmp_path):
    """`driftloop run training --smoke`: every stage, a champion with test accuracy >= 0.95."""
    r = _run(["run", "training", "--smoke", "--json"], tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout[r.stdout.index("{") :])
    assert out["stages"] == ["validate", "tune", "federate", "harden", "evaluate", "register", "promote"]
    assert out["metrics"]["test_accuracy"] >= 0.95 and out["best_config"]

    from tasks.settings import load_settings
    from tasks.store.artifacts import ArtifactStore

    s = load_settings(environ={"DRIFTLOOP_STORE__URI": str(tmp_path / "store")})
    manifest = ArtifactStore.from_config(s.store).verify_run(out["run_id"])
    assert manifest["extra"]["best_config"] == out["best_config"]

    listed = _run(["models", "list", "--json"], tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout)["champion"] == 1

    # validate: a clean batch passes (exit 0), a broken one fails (exit 1) and names the rule.
    from tasks.data.sources import load_digits_dataset

    d = load_digits_dataset()
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, x=d.x[:100], y=d.y[:100])
    x = d.x[:100].copy()
    x[0, 0, 0, 0] = np.inf
    np.savez(bad, x=x, y=d.y[:100])
    assert _run(["validate", "--data", str(good)], tmp_path).returncode == 0
    v = _run(["validate", "--data", str(bad)], tmp_path)
    assert v.returncode == 1 and "non_finite" in v.stdout


def test_cli_errors_name_the_problem(tmp_path):
    r = _run(["run", "trainnig"], tmp_path)
    assert r.returncode == 2 and "unknown flow 'trainnig'" in r.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("[training]\nepochz = 1\n")
    r = _run(["run", "training", "--config", str(cfg)], tmp_path)
    assert r.returncode == 2 and "training.epochz: unknown key" in r.stderr
    r = _run(["run", "training", "-p", "training.epochs=0"], tmp_path)
    assert r.returncode == 2 and "training.epochs" in r.stderr
    r = _run(["validate", "--data", str(tmp_path / "x.npz")], tmp_path)
    assert r.returncode == 1 and "no champion" in r.stderr
    r = _run(["models", "list", "--json"], tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["versions"] == []
