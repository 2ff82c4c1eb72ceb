"""The drift loop's store-backed memory: write-once checks and one retraining claim per episode."""

import threading

from tasks.drift import ledger
from tasks.drift.events import Episode
from tasks.store.backends import open_backend
from tasks.store.config import StoreConfig


def _backend(tmp_path):
    return open_backend(StoreConfig(uri=str(tmp_path / "store")))


def test_checks_are_recorded_once_and_listed_in_order(tmp_path):
    b = _backend(tmp_path)
    assert ledger.record_check(b, "m", "batch-1", {"status": "checked"})
    assert not ledger.record_check(b, "m", "batch-1", {"status": "checked again"})
    assert ledger.record_check(b, "m", "batch-2", {"status": "quarantined"})
    assert ledger.checked_ids(b, "m") == {"batch-1", "batch-2"}
    assert [h["status"] for h in ledger.check_history(b, "m")] == ["checked", "quarantined"]
    assert ledger.checked_ids(b, "other-model") == set()


def test_episode_round_trip(tmp_path):
    b = _backend(tmp_path)
    assert ledger.load_episode(b, "m") is None
    ep = Episode("e1", "m", 3, 10.0, 12.0, ["batch-1"], 2)
    ledger.save_episode(b, ep)
    assert ledger.load_episode(b, "m") == ep


def test_exactly_one_concurrent_claim_per_episode(tmp_path):
    b = _backend(tmp_path)
    wins = []

    def claim(i):
        wins.append(ledger.claim_retraining(b, "m", "episode-1", {"caller": i}))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert len(ledger.retraining_claims(b, "m")) == 1
    assert ledger.claim_retraining(b, "m", "episode-2", {})


def test_labels_files_and_labelled_copies(tmp_path):
    """Labels beside a batch (tasks.drift.labels): absent -> None; present -> a labelled copy in
    the batch's own format; malformed or the wrong length -> an error naming the file."""
    import io
    import json

    import numpy as np
    import pandas as pd
    import pytest

    from tasks.drift.labels import BatchRef, labels_uri, write_labelled_copies
    from tasks.errors import DataError
    from tasks.store.config import StoreConfig

    store = StoreConfig(uri=str(tmp_path / "store"))
    np.savez(tmp_path / "a.npz", x=np.ones((3, 2), np.float32))
    pd.DataFrame({"f": [1.0, 2.0]}).to_csv(tmp_path / "b.csv", index=False)
    refs = [BatchRef("a-1", str(tmp_path / "a.npz"), False), BatchRef("b-1", str(tmp_path / "b.csv"), False)]
    assert write_labelled_copies(refs, store, "m") is None
    (tmp_path / "a.npz.labels.json").write_text(json.dumps({"y": [0, 1, 2]}))
    assert write_labelled_copies(refs, store, "m") is None  # b's labels still missing
    (tmp_path / "b.csv.labels.json").write_text(json.dumps({"y": [1, 0]}))
    a_uri, b_uri = write_labelled_copies(refs, store, "m")
    from tasks.store.backends import read_uri

    with np.load(io.BytesIO(read_uri(a_uri, store))) as z:
        assert z["y"].tolist() == [0, 1, 2] and z["x"].shape == (3, 2)
    assert pd.read_csv(io.BytesIO(read_uri(b_uri, store)))["label"].tolist() == [1, 0]
    assert labels_uri("s3://b/p/x.npz") == "s3://b/p/x.npz.labels.json"
    (tmp_path / "b.csv.labels.json").write_text(json.dumps({"y": [1]}))
    with pytest.raises(DataError, match="1 labels for 2 rows"):
        write_labelled_copies(refs, store, "m")
    (tmp_path / "b.csv.labels.json").write_text("{not json")
    with pytest.raises(DataError, match="b.csv.labels.json"):
        write_labelled_copies(refs, store, "m")
