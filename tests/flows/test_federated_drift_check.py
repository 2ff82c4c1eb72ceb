"""The drift-check flow asking the federation (``drift.source = "federation"``), under a real
Prefect API, against a real ``flower-superlink`` with three ``flower-supernode`` processes, each
holding its own new data in a directory of its own (client 1's are shifted: inverted digits).

The flow must treat the drifting client exactly like a drifting batch: one ledger record naming the
client and its node (never its rows), the drift episode, the ``driftloop.drift.detected`` event
(read back from the API), and a retraining run for the event that does not choke on a batch it
cannot read; the clean clients are checked and not flagged; a repeated check of unchanged data
records nothing new and emits nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.settings import load_settings
from tasks.store.artifacts import ArtifactStore

pytestmark = [pytest.mark.slow, pytest.mark.integration]
DRIFTING = 1


def _write(path, x, y):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def champion(tmp_path_factory, prefect_api):
    from flows.training import training

    root = tmp_path_factory.mktemp("fed-drift")
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
    return s, root


def _longest_list(obj) -> int:
    if isinstance(obj, dict):
        return max((_longest_list(v) for v in obj.values()), default=0)
    if isinstance(obj, list):
        return max([len(obj)] + [_longest_list(v) for v in obj])
    return 0


def _read_events(name, resource_id, want_id, timeout=30.0):
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id]))
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=flt, limit=50).events
        if any(str(e.id) == want_id for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_drift_check_asks_the_federation_and_flags_the_shifted_client(champion):
    from flows.drift_check import drift_check
    from flows.retraining import retraining
    from tasks.data.sources import load_digits_dataset, split_dataset
    from tasks.drift import ledger
    from tasks.drift import steps as drift_steps
    from tasks.federated.engine import FlowerCluster

    s, root = champion
    splits = split_dataset(load_digits_dataset(), s.seed, s.data.val_fraction, s.data.test_fraction)
    train, test = splits.train, splits.test
    owners = root / "owners"
    data = [
        _write(owners / f"owner-{i}" / "data.npz", train.x[i * 60 : (i + 1) * 60], train.y[i * 60 : (i + 1) * 60])
        for i in range(3)
    ]
    new_x = [test.x[:100], 1.0 - test.x[100:200], test.x[200:300]]  # owner 1's new data: inverted digits
    new = [_write(owners / f"owner-{i}" / "new.npz", new_x[i], test.y[i * 100 : (i + 1) * 100]) for i in range(3)]

    with FlowerCluster(
        3, root / "flwr-home", data_paths=data, client_ids=[0, 1, 2], new_data_paths=new, startup_timeout=90
    ) as cluster:
        cluster.wait_for_nodes(3)
        # generous timeouts: the ClientApps import alibi-detect (~10 s, more on a busy machine)
        fs = s.model_copy(
            update={
                "drift": s.drift.model_copy(update={"source": "federation"}),
                "federated": s.federated.model_copy(
                    update={
                        "superlink_address": cluster.control_address,
                        "num_clients": 3,
                        "min_fit_clients": 3,
                        "round_timeout_s": 180.0,
                    }
                ),
            }
        )
        r = drift_check(fs)
        # drift.source = "both": a batch file under drift.batches_uri too (held-out digits: clean), in the same check
        batches = root / "batches"
        _write(batches / "batch-00000.npz", test.x[300:400], test.y[300:400])
        both = fs.model_copy(update={"drift": fs.drift.model_copy(update={"source": "both"})})
        again = drift_check(both)

    # every client checked; only the shifted one flagged, named by client and node
    assert sorted(c["client"] for c in r["clients"].values()) == [0, 1, 2] and r["clients_not_checked"] == []
    assert len(r["checked"]) == 3 and r["quarantined"] == []
    flagged = [b for b, c in r["clients"].items() if c["drift"]]
    assert len(flagged) == 1 and r["clients"][flagged[0]]["client"] == DRIFTING
    assert r["status"] == "drift" and r["drifted"] == flagged == r["triggering"]
    node = r["clients"][flagged[0]]["node_id"]
    assert isinstance(node, int) and f"client {DRIFTING} (node {node}): DRIFT" in r["summary"]
    assert sum("no drift" in line for line in r["summary"].splitlines() if "(node " in line) == 2

    # the same event as a drifting batch, read back from the Prefect API
    ev = r["event"]
    assert ev["sent"] and ev["payload"]["batch_ids"] == flagged and ev["payload"]["model"] == s.registry.model_name
    assert ev["payload"]["batch_uris"] == [f"flower://{cluster.control_address}/node-{node}/client-{DRIFTING}"]
    assert ev["payload"]["detectors"] == ["ks_softmax"] and ev["payload"]["unlabelled_batch_ids"] == flagged
    events = _read_events("driftloop.drift.detected", f"driftloop.model.{s.registry.model_name}", ev["event_id"])
    assert ev["event_id"] in {str(e.id) for e in events}

    # the same episode bookkeeping and ledger record; the record names the client, never its rows
    backend = ArtifactStore.from_config(s.store).backend
    episode = ledger.load_episode(backend, s.registry.model_name)
    assert episode.episode_id == ev["payload"]["episode_id"] and episode.batch_ids == flagged
    rec = ledger.get_check(backend, s.registry.model_name, flagged[0])
    assert rec["status"] == "checked" and rec["drift"] and rec["triggers"]
    assert (rec["source"], rec["client"], rec["node_id"], rec["rows"]) == ("federation", DRIFTING, node, 100)
    assert rec["reports"][0]["p_value"] < 0.01 and rec["reports"][0]["kind"] == "federated"
    assert _longest_list(rec) <= 3 and len(json.dumps(rec)) < 5000  # 100 rows x 64 pixels would not fit
    clean = [b for b in r["clients"] if b not in flagged]
    assert all(not ledger.get_check(backend, s.registry.model_name, b)["drift"] for b in clean)

    # unchanged data on the nodes: same replies, nothing new recorded for them; the new batch file is checked; no event
    assert [k.rsplit("/", 1)[-1] for k in again["keys"].values()] == ["batch-00000.npz"]
    assert len(again["checked"]) == 1 and again["checked"][0] not in r["clients"]
    assert again["event"] is None and again["status"] == "ok" and again["drifted"] == []
    assert sorted(again["clients"]) == sorted(r["clients"])

    # the retraining the event triggers: the client's check is known, adds no central batch, trains once
    assert drift_steps.resolve_batches.fn(s, flagged) == []
    out = retraining(
        s,
        event_id=ev["event_id"],
        episode_id=episode.episode_id,
        batch_ids=flagged,
        detector="ks_softmax",
        model_version=r["model_version"],
    )
    assert out["status"] in ("promoted", "kept-champion")
    dup = retraining(s, event_id=ev["event_id"], episode_id=episode.episode_id, batch_ids=flagged)
    assert dup["status"] == "duplicate"


def test_drift_source_federation_without_a_superlink_is_a_clear_error(champion):
    from flows.drift_check import drift_check
    from tasks.errors import ConfigError

    s, _ = champion
    fs = s.model_copy(update={"drift": s.drift.model_copy(update={"source": "federation"})})
    with pytest.raises(ConfigError, match="federated.superlink_address"):
        drift_check(fs)


def test_drift_source_is_checked_by_the_config():
    with pytest.raises(Exception, match="drift.source|source"):
        load_settings(profile="smoke", environ={}, overrides={"drift.source": "federated"})
