import uuid

from tasks.drift.events import DRIFT_EVENT, Episode, assign_episode, drift_event, episode_id_for, event_id, resource_id
from tasks.drift.report import DriftReport


def _r(batch, drift, det="ks_softmax", p=0.001):
    return DriftReport(det, batch, drift, 0.4, 0.005, p)


def test_event_ids_are_deterministic():
    ep = episode_id_for("m", 3, 1000.0)
    assert ep == episode_id_for("m", 3, 1000.0) != episode_id_for("m", 4, 1000.0)
    a = event_id("m", 3, ["b2", "b1"], ep)
    assert a == event_id("m", 3, ["b1", "b2"], ep)  # order of batches does not matter
    assert isinstance(a, uuid.UUID)
    assert a != event_id("m", 3, ["b1"], ep) and a != event_id("m", 3, ["b1", "b2"], episode_id_for("m", 3, 2000.0))


def test_episode_grouping_by_cooldown_and_version():
    e1, new1 = assign_episode(None, "m", 1, 100.0, 600, ["b60"])
    e2, new2 = assign_episode(e1, "m", 1, 400.0, 600, ["b61", "b60"])
    e3, new3 = assign_episode(e2, "m", 1, 700.0, 600, ["b62"])  # 600 s after the start: same episode
    e4, new4 = assign_episode(e3, "m", 1, 701.0, 600, ["b70"])  # past the cooldown: a new one
    e5, new5 = assign_episode(e4, "m", 2, 702.0, 600, ["b71"])  # a new champion version: a new one
    assert (new1, new2, new3, new4, new5) == (True, False, False, True, True)
    assert e1.episode_id == e2.episode_id == e3.episode_id != e4.episode_id != e5.episode_id
    assert e3.batch_ids == ["b60", "b61", "b62"] and e3.n_events == 3
    assert Episode.from_dict(e3.as_dict()) == e3
    # a replay of the same inputs reproduces the same episode id
    assert assign_episode(None, "m", 1, 100.0, 600)[0].episode_id == e1.episode_id


def test_event_spec_and_no_event_without_drift():
    assert drift_event("m", 1, [_r("b1", False), _r("b1", False, "mmd_embedding")], "ep") is None
    spec = drift_event(
        "m",
        1,
        [_r("b1", True), _r("b1", False, "mmd_embedding", 0.3), _r("b2", True, "lsdd")],
        "ep",
        batch_uris=["s3://x/b1.npz"],
    )
    assert spec["event"] == DRIFT_EVENT
    assert spec["resource"]["prefect.resource.id"] == resource_id("m") == "driftloop.model.m"
    p = spec["payload"]
    assert p["batch_ids"] == ["b1", "b2"] and p["detector"] == "ks_softmax,lsdd" and p["episode_id"] == "ep"
    assert len(p["scores"]) == 3 and p["scores"][1]["p_value"] == 0.3 and p["batch_uris"] == ["s3://x/b1.npz"]
    assert spec["id"] == event_id("m", 1, ["b1", "b2"], "ep")
