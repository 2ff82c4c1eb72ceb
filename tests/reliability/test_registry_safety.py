"""Storage and registry faults a hostile user found (issue 17): nothing the registry names is ever
garbage-collected, a damaged version never becomes champion, a corrupt registry file names itself
and its repair, and the losers of a promotion race say that nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.errors import IntegrityError, RegistryCorrupt, RegistryError
from tasks.store.artifacts import MANIFEST, ArtifactStore, new_run_id
from tasks.store.config import StoreConfig
from tasks.store.gc import collect_garbage
from tasks.store.registry import ModelRegistry
from tests.store.conftest import commit_model_run, flip_one_byte

ROOT = Path(__file__).resolve().parents[2]
MODEL = "digits-classifier"  # the default registry.model_name the CLI uses


def _registry(store: ArtifactStore, n: int = 2, champion: int | None = None) -> ModelRegistry:
    reg = ModelRegistry(store, MODEL)
    for i in range(n):
        reg.register(commit_model_run(store, {"test_accuracy": 0.5 + i / 10}, seed=i), {"test_accuracy": 0.5 + i / 10})
    for v in range(1, (champion or 0) + 1):
        reg.promote(v, reason=f"v{v}")
    return reg


def _cli(store_uri: str, *args: str):
    from flows.cli import app

    env = {"DRIFTLOOP_STORE__URI": store_uri}
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=True)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_gc_never_deletes_objects_of_a_run_the_registry_references(backend, tmp_path, request, figures):
    cfg = StoreConfig(uri=str(tmp_path / "store")) if backend == "local" else request.getfixturevalue("s3_store_config")
    store = ArtifactStore.from_config(cfg)
    reg = _registry(store, 3, champion=2)  # v1 an earlier champion, v2 champion, v3 never promoted
    runs = {v["version"]: v["run_id"] for v in reg.versions()}
    # The fault: manifests went missing (a bad sync, a hand-deleted prefix): v2's (the champion)
    # and v3's. Both runs now look exactly like orphans of writers killed before their commit.
    for v in (2, 3):
        store.backend.delete(f"runs/{runs[v]}/{MANIFEST}")
    store._manifests.clear()
    orphan = store.begin_run("training", run_id=new_run_id("training"))
    orphan.put_bytes("model.safetensors", b"partial")  # a real orphan: nobody references it
    kept_keys = {v: store.backend.list(f"runs/{runs[v]}/") for v in runs}

    report = collect_garbage(store, min_age_s=0)
    assert [r["run_id"] for r in report["runs"]] == [orphan.run_id] and report["objects_deleted"] == 1
    assert sorted(r["run_id"] for r in report["referenced_by_registry"]) == sorted([runs[2], runs[3]])
    assert {v: store.backend.list(f"runs/{runs[v]}/") for v in runs} == kept_keys
    lost = sum(len(k) for k in kept_keys.values()) - sum(len(store.backend.list(f"runs/{runs[v]}/")) for v in runs)

    # The CLI says why it kept them (local store only: the CLI's store is configured by URI).
    cli_out = None
    if backend == "local":
        r = _cli(cfg.uri, "artifacts", "gc", "--older-than-hours", "0")
        assert r.exit_code == 0, r.output
        assert f"kept {runs[2]}" in r.output and "registry references it" in r.output
        cli_out = r.exit_code

    # A version record GC cannot read might name any run: GC stops, naming the file, deleting nothing.
    store.backend.put_bytes(f"registry/{MODEL}/versions/000004.json", b"\x89 not json")
    orphan2 = store.begin_run("drift", run_id=new_run_id("drift"))
    orphan2.put_bytes("x.json", b"{}")
    before = set(store.backend.list(""))
    with pytest.raises(RegistryError, match="000004.json.*garbage collection stopped"):
        collect_garbage(store, min_age_s=0)
    assert set(store.backend.list("")) == before
    # Nor when the champion's own version record went missing (with its manifest): the pointer names
    # version 2, and nothing says which run that was.
    store.backend.delete(f"registry/{MODEL}/versions/000004.json")
    store.backend.delete(f"registry/{MODEL}/versions/000002.json")
    with pytest.raises(RegistryError, match=r"names versions \[2\].*no version record.*garbage collection stopped"):
        collect_garbage(store, min_age_s=0)
    assert set(store.backend.list("")) == before - {
        f"registry/{MODEL}/versions/000004.json",
        f"registry/{MODEL}/versions/000002.json",
    }
    figures.update(
        backend=backend,
        faults_injected=4,
        manifests_deleted=2,
        version_record_deleted="gc refused, 0 deleted",
        versions=3,
        champion=2,
        orphans_collected=1,
        referenced_runs_kept=len(report["referenced_by_registry"]),
        objects_lost=lost,
        gc_cli_exit=cli_out,
        corrupt_version_record="gc refused, 0 deleted",
    )


def test_promote_and_rollback_verify_the_target_first_and_show_reports_integrity(tmp_path, figures):
    store = ArtifactStore.from_config(StoreConfig(uri=str(tmp_path / "store")))
    reg = _registry(store, 3, champion=1)
    runs = {v["version"]: v["run_id"] for v in reg.versions()}
    flip_one_byte(store.backend, f"runs/{runs[2]}/model.safetensors", at=100)

    with pytest.raises(IntegrityError, match=f"refusing to promote version 2.*{runs[2]}.*model.safetensors"):
        reg.promote(2, reason="looks better")
    assert reg.champion_version() == 1 and len(reg.history()) == 1

    r = _cli(str(tmp_path / "store"), "models", "promote", "2", "--reason", "x")
    assert r.exit_code == 1 and "refusing to promote version 2" in r.output and "Traceback" not in r.output
    shown = _cli(str(tmp_path / "store"), "models", "show", "2", "--verify")
    assert shown.exit_code == 1, shown.output
    integrity = json.loads(shown.output[shown.output.index("{") : shown.output.rindex("}") + 1])["integrity"]
    assert integrity["ok"] is False and "does not match the manifest" in integrity["objects"]["model.safetensors"]
    assert integrity["objects"]["model.json"] == "ok"
    ok = _cli(str(tmp_path / "store"), "models", "show", "1", "--verify")
    assert ok.exit_code == 0 and '"ok": true' in ok.output

    # Rollback to a damaged earlier champion is refused too.
    reg.promote(3, reason="v3")
    flip_one_byte(store.backend, f"runs/{runs[1]}/model.json", at=2)
    with pytest.raises(IntegrityError, match="refusing to roll back to version 1"):
        reg.rollback(reason="v3 misbehaves")
    with pytest.raises(IntegrityError, match="refusing to roll back to version 1"):
        reg.rollback(to_version=1)
    assert reg.champion_version() == 3
    figures.update(
        faults_injected=2,
        promote_refused=True,
        rollback_refused=True,
        champion_after=3,
        show_verify_exit_damaged=shown.exit_code,
        show_verify_exit_intact=ok.exit_code,
    )


@pytest.mark.integration
def test_an_integrity_error_is_not_retried_as_transient(tmp_path, prefect_api, figures):
    """The load-champion task (retries for transient I/O) fails on its first attempt."""
    from tasks.models import steps as model_steps
    from tests.reliability.conftest import smoke_settings

    settings = smoke_settings(tmp_path)
    store = ArtifactStore.from_config(settings.store)
    reg = _registry(store, 1, champion=1)
    flip_one_byte(store.backend, f"runs/{reg.champion()['run_id']}/model.safetensors", at=100)
    t0 = time.monotonic()
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        model_steps.load_champion_model(settings, reg.champion())
    took = time.monotonic() - t0
    assert took < 12, f"{took:.1f} s: the integrity error was retried (delays 1+4+10 s)"
    figures.update(
        faults_injected=1, seconds_to_fail=round(took, 1), retry_delays_configured_s=[1, 4, 10], retried=False
    )


@pytest.mark.parametrize(
    "damage",
    [b"\x8f\x00 random bytes \xff", b"[]", b'{"champion": "two", "seq": 1}'],
    ids=["random-bytes", "list", "wrong-type"],
)
def test_a_corrupt_champion_pointer_names_the_file_and_repair_rebuilds_it(damage, tmp_path, figures):
    uri = str(tmp_path / "store")
    store = ArtifactStore.from_config(StoreConfig(uri=uri))
    reg = _registry(store, 3, champion=3)
    reg.rollback(reason="v3 misbehaves")  # champion 2, stack [1, 2]
    history = reg.history()
    store.backend.put_bytes(f"registry/{MODEL}/champion.json", damage)

    batch = tmp_path / "b.npz"
    import numpy as np

    np.savez(batch, x=np.zeros((5, 1, 8, 8), np.float32), y=np.zeros(5, np.int64))
    commands = [
        ["models", "list"],
        ["models", "show"],
        ["models", "promote", "1"],
        ["models", "rollback"],
        ["validate", "--data", str(batch)],
    ]
    outcomes = {}
    for cmd in commands:
        r = _cli(uri, *cmd)
        outcomes[" ".join(cmd[:2])] = r.exit_code
        assert r.exit_code == 1, (cmd, r.output)
        assert "champion.json is corrupt" in r.output and "driftloop models repair" in r.output, (cmd, r.output)
        assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    with pytest.raises(RegistryCorrupt, match="champion.json"):
        reg.champion()

    r = _cli(uri, "models", "repair")
    assert r.exit_code == 0, r.output
    assert reg.champion_version() == 2 and reg.history() == history
    assert reg.promote(3, reason="fixed")["to"] == 3  # the registry works again
    again = _cli(uri, "models", "repair")
    assert again.exit_code == 0 and '"repaired": false' in again.output
    kind = "a JSON list" if damage == b"[]" else "wrong field types" if damage.startswith(b"{") else "random bytes"
    figures.update(
        damage=kind,
        commands_checked=len(commands),
        exit_codes=outcomes,
        raw_tracebacks=0,
        champion_before=2,
        champion_after_repair=reg.history()[-2]["to"],
        history_events_recovered=len(history),
        objects_lost=0,
    )


def test_a_corrupt_version_record_names_itself_and_repair_lists_it(tmp_path):
    uri = str(tmp_path / "store")
    store = ArtifactStore.from_config(StoreConfig(uri=uri))
    _registry(store, 2, champion=2)
    store.backend.put_bytes(f"registry/{MODEL}/versions/000001.json", b"[1, 2]")
    r = _cli(uri, "models", "show", "1")
    assert r.exit_code == 1 and "000001.json is corrupt" in r.output and "Traceback" not in r.output
    r = _cli(uri, "models", "repair")
    assert r.exit_code == 1 and "000001.json" in r.output


def test_promote_racing_itself_the_losers_say_nothing_changed(tmp_path, figures):
    uri = str(tmp_path / "store")
    store = ArtifactStore.from_config(StoreConfig(uri=uri))
    reg = _registry(store, 2, champion=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env.update(DRIFTLOOP_STORE__URI=uri, PREFECT_HOME=str(tmp_path / "ph"))
    n = 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "models", "promote", "2", "--reason", f"racer {i}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert all(rc == 0 for rc, _, _ in outs), outs
    winners = [i for i, (_, out, _) in enumerate(outs) if "is now version 2" in out]
    losers = [i for i, (_, out, _) in enumerate(outs) if "nothing changed" in out]
    assert len(winners) == 1 and len(losers) == n - 1, outs
    for i in losers:
        assert f"racer {i}" in outs[i][1] and '"seq"' not in outs[i][1]  # no older history entry printed
    hist = reg.history()
    assert len(hist) == 2 and hist[-1]["to"] == 2 and hist[-1]["reason"] == f"racer {winners[0]}"
    figures.update(
        racers=n,
        winners=1,
        losers_saying_nothing_changed=len(losers),
        history_events_added=1,
        losers_printing_a_history_entry=0,
    )
