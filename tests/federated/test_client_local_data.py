"""A real federation whose clients hold their own data: a ``flower-superlink`` and four
``flower-supernode`` processes on 127.0.0.1, each SuperNode serving a different file in a directory
of its own (three data owners with clean files of different sizes, the third joined through
``driftloop supernode``; a fourth whose file breaks the schema). ``run_federated`` runs against
this existing federation through ``federated.superlink_address`` (it starts no process), and the
run is stored. One topology, several assertions:

- per-client example counts in the results equal each file's rows (validation table, train and
  held-out counts of every round, federated evaluation counts);
- the client with the broken file is left out with its report (rule names, counts, feature names;
  no row, no value) and never sampled;
- after the run nothing the orchestrator wrote (its work dir with the Flower home and logs, the
  store, the drift check's work dir) holds a training row: every file's bytes, and the members of
  every zip/npz, are searched for every client row (float32 and float64);
- a federated drift check over the same federation (the trained model as champion, its drift
  reference from the orchestrator's validation split): the client whose new data are shifted
  (inverted images) is flagged, the others are not, and the replies carry p-values and verdicts only.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tasks.federated.engine import FlowerCluster, run_federated
from tasks.federated.processes import PROJECT_ROOT, child_env

from .conftest import fed_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]
SIZES = (150, 230, 310)  # three owners' clean files, of different sizes
BROKEN = 3  # client id of the owner whose file fails validation


def _write(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def federation(digits_splits, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client-local")
    train = digits_splits.train
    perm = np.random.default_rng(11).permutation(len(train))
    cuts = np.split(perm, np.cumsum(SIZES))[: len(SIZES)]
    files = [
        _write(tmp / f"owner-{i}" / "data.npz", train.x[np.sort(c)], train.y[np.sort(c)]) for i, c in enumerate(cuts)
    ]
    # the fourth owner's file: 40 rows, some pixels NaN, some far outside [0, 1]
    bx, by = train.x[perm[-40:]].copy(), train.y[perm[-40:]].copy()
    bx[:5, 0, 2, 3] = np.nan
    bx[5:12, 0, 4, 4] = 7.5
    broken = _write(tmp / f"owner-{BROKEN}" / "data.npz", bx, by)
    # new data for the drift check: held-out digits for owners 0 and 2, inverted ones for owner 1
    test = digits_splits.test
    new = [
        _write(tmp / "owner-0" / "new.npz", test.x[:120], test.y[:120]),
        _write(tmp / "owner-1" / "new.npz", 1.0 - test.x[:120], test.y[:120]),
        _write(tmp / "owner-2" / "new.npz", test.x[120:240], test.y[120:240]),
    ]

    # The owners' federation: a SuperLink with owners 0, 1 and 3 started here; owner 2 joins with
    # `driftloop supernode` (its own process group, stopped by pid below).
    cluster = FlowerCluster(
        3,
        tmp / "federation-home",
        data_paths=[files[0], files[1], broken],
        client_ids=[0, 1, BROKEN],
        new_data_paths=[new[0], new[1], None],
        startup_timeout=90,
    )
    cli = None
    with cluster:
        env = child_env({"FLWR_HOME": str(tmp / "owner-2" / "flwr-home")})
        with open(tmp / "owner-2" / "supernode.log", "wb") as log:
            cli = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flows.cli",
                    "supernode",
                    "--superlink",
                    cluster.fleet_address,
                    "--data",
                    str(files[2]),
                    "--client-id",
                    "2",
                    "--new-data",
                    str(new[2]),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(PROJECT_ROOT),
                start_new_session=True,
            )
        try:
            cluster.wait_for_nodes(4)
            # generous timeouts: the drift check's ClientApps import alibi-detect (~10 s, more on a busy machine)
            s = fed_settings(
                engine="deployment",
                num_clients=4,
                rounds=2,
                min_fit_clients=3,
                round_timeout_s=180.0,
                superlink_address=cluster.control_address,
            )
            s = s.model_copy(update={"store": s.store.model_copy(update={"uri": str(tmp / "store")})})
            res = run_federated(s, digits_splits, workdir=tmp / "work")
            from tasks.federated.publish import publish_federated

            manifest = publish_federated(res, s.store, config=s.resolved())
            drift = _drift_check(s, res, digits_splits, cluster, tmp / "drift-work")
        finally:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait(timeout=10)
    rows = {i: int(np.load(f)["y"].shape[0]) for i, f in enumerate(files)}
    return {
        "res": res,
        "drift": drift,
        "tmp": tmp,
        "files": files,
        "rows": rows,
        "manifest": manifest,
        "cli_log": tmp / "owner-2" / "supernode.log",
        "val_test": np.concatenate([digits_splits.val.x, digits_splits.test.x]),
    }


def _drift_check(settings, res, splits, cluster, workdir):
    from tasks.drift.config import DriftConfig
    from tasks.drift.reference import build_reference, reference_to_files
    from tasks.federated.engine import run_federated_drift_check
    from tasks.models.serialize import build_from_spec

    model = build_from_spec(res.model_spec)
    model.load_state_dict(res.state_dict)
    ref = build_reference(model, splits.val.x, DriftConfig(detectors=["ks_softmax"]), settings.seed)
    return run_federated_drift_check(
        settings, res.model_spec, res.weights_bytes(), reference_to_files(ref), cluster=cluster, workdir=workdir
    )


def test_per_client_counts_equal_each_files_rows(federation):
    res, rows = federation["res"], federation["rows"]
    assert res.engine == "deployment" and res.partition["scheme"] == "client-local"
    table = {c["client"]: c for c in res.validation}
    assert sorted(table) == [0, 1, 2, BROKEN]
    for i, n in rows.items():
        assert table[i]["status"] == "valid" and table[i]["rows"] == n
    for r in res.rounds[1:]:
        assert r["participants"] == [0, 1, 2] and r["sampled"] == 3
        for i, n in rows.items():
            c = r["clients"][str(i)]
            assert c["train_examples"] + c["held_out_examples"] == n
            assert r["client_eval"][str(i)]["examples"] == c["held_out_examples"] > 0
        assert r["client_eval_examples"] == sum(r["clients"][str(i)]["held_out_examples"] for i in rows)
        assert 0.0 <= r["client_eval_accuracy"] <= 1.0
    assert res.rounds[-1]["test_accuracy"] > res.rounds[0]["test_accuracy"] + 0.2


def test_client_with_a_broken_file_is_left_out_with_its_report(federation):
    res = federation["res"]
    bad = next(c for c in res.validation if c["client"] == BROKEN)
    assert bad["status"] == "invalid" and bad["rows"] == 40
    rules = {v["rule"]: v for v in bad["violations"]}
    assert {"non_finite", "out_of_range"} <= set(rules)
    assert rules["non_finite"]["count"] == 5 and rules["out_of_range"]["count"] == 7
    # only rule names, counts and feature names leave the node: no rows, no values
    assert all(set(v) == {"rule", "count", "features"} for v in bad["violations"])
    assert all(isinstance(f, str) for v in bad["violations"] for f in v["features"])
    assert "7.5" not in json.dumps(bad) and "nan" not in json.dumps(bad["violations"]).lower()
    # never sampled, so never a failure either
    assert all(BROKEN not in r["participants"] and not r["failures"] for r in res.rounds[1:])


def _blobs(root: Path):
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            yield p, data
            if zipfile.is_zipfile(io.BytesIO(data)):
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    for name in z.namelist():
                        yield p / name, z.read(name)


def test_nothing_the_orchestrator_wrote_holds_a_training_row(federation):
    tmp, val_test = federation["tmp"], federation["val_test"]
    held = {tuple(r.ravel()) for r in val_test}  # digits has true duplicates: a row the orchestrator holds itself
    needles = []
    for f in federation["files"]:
        for row in np.load(f)["x"]:
            if tuple(row.ravel()) not in held:
                needles += [row.astype(np.float32).tobytes(), row.astype(np.float64).tobytes()]
    assert len(needles) > 2 * 600
    written = list(_blobs(tmp / "work")) + list(_blobs(tmp / "store")) + list(_blobs(tmp / "drift-work"))
    assert any(p.name == "rounds.json" for p, _ in written) and any("flwr-home" in str(p) for p, _ in written)
    found = [str(p) for p, data in written if any(n in data for n in needles)]
    assert not found
    # the search would have found them: the owners' own files do hold them
    owner_x = [data for p, data in _blobs(tmp / "owner-0") if p.name == "x.npy"]
    assert owner_x and any(n in owner_x[0] for n in needles)


def test_federated_drift_check_flags_the_client_with_shifted_data(federation):
    by_client = {d.client: d for d in federation["drift"]}
    assert sorted(c for c in by_client if c is not None) == [0, 1, 2, BROKEN]
    assert by_client[1].drift and by_client[1].rows == 120
    assert not by_client[0].drift and not by_client[2].drift and by_client[0].rows == by_client[2].rows == 120
    assert by_client[1].detectors[0]["detector"] == "ks_softmax" and by_client[1].detectors[0]["p_value"] < 0.01
    # p-values and verdicts only
    assert all(set(r) == {"detector", "p_value", "drift"} for d in by_client.values() for r in d.detectors)
    # the owner without new data says so, and is not counted as drifting
    assert not by_client[BROKEN].drift and "no new data" in by_client[BROKEN].error
