"""Storage: the S3 server stops during an upload and comes back; least privilege on a real SeaweedFS.

Each test starts its own SeaweedFS (``tasks.store.seaweed.start_seaweedfs``) so it can stop,
restart and configure it without touching the session's server.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid

import pytest

from tasks.errors import StoreError
from tasks.store.artifacts import ArtifactStore
from tasks.store.config import StoreConfig
from tasks.store.registry import ModelRegistry
from tasks.store.seaweed import start_seaweedfs
from tests.store.conftest import commit_model_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHUNK = 5 * 1024 * 1024  # the S3 minimum part size: a 30 MiB file is 6 parts


def test_s3_server_stopped_mid_upload_and_restarted(tmp_path, figures):
    data_dir = tmp_path / "weed"
    server = start_seaweedfs(data_dir)
    servers = [server]
    try:
        bucket = f"r-{uuid.uuid4().hex[:10]}"
        server.create_bucket(bucket)
        # max_concurrency 1: parts go one after another, so "after part 1" is a well-defined moment.
        cfg = StoreConfig(
            uri=f"s3://{bucket}/driftloop",
            endpoint_url=server.endpoint_url,
            region="us-east-1",
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
            multipart_chunk_bytes=CHUNK,
            max_concurrency=1,
            max_attempts=10,
        )
        store = ArtifactStore.from_config(cfg)
        reg = ModelRegistry(store, "digits")
        v1 = reg.register(commit_model_run(store, seed=1), {"accuracy": 0.5})
        reg.promote(v1, reason="first")

        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(6 * CHUNK))
        outage = {"parts_before_stop": 0, "stopped_at": None, "restarted_at": None}
        stop_now, stopped = threading.Event(), threading.Event()

        def after_part(**kw):
            # Part 1 is in; hold the upload until the server is down, so part 2 meets the outage.
            if not stop_now.is_set():
                outage["parts_before_stop"] += 1
                stop_now.set()
                stopped.wait(60)

        def outage_thread():
            stop_now.wait(120)
            outage["stopped_at"] = time.time()
            servers[-1].stop()
            stopped.set()
            time.sleep(2.0)  # down for a while: requests meanwhile are refused
            servers.append(start_seaweedfs(data_dir, s3_port=server.s3_port))
            outage["restarted_at"] = time.time()

        # Champion observations while the upload is in flight (errors while the server is down count as none).
        seen: list[int | None] = []
        done = threading.Event()

        def watch_champion():
            while not done.is_set():
                try:
                    seen.append(reg.champion_version())
                except StoreError:
                    pass
                time.sleep(0.2)

        store.backend.client.meta.events.register_first(
            "after-call.s3.UploadPart", after_part, unique_id="reliability-outage"
        )
        killer = threading.Thread(target=outage_thread, daemon=True)
        watcher = threading.Thread(target=watch_champion, daemon=True)
        killer.start()
        watcher.start()
        attempts: list[str] = []

        def write_candidate() -> str:
            import torch

            from tests.store.conftest import tiny_model

            with store.begin_run("training") as w:
                w.put_file("weights.bin", big)  # the upload the server dies under (first attempt)
                torch.manual_seed(2)
                model, spec = tiny_model()
                w.put_model(spec, model)
                return w.commit({"metrics": {"accuracy": 0.6}})["run_id"]

        try:
            # Attempt 1 runs into the outage. botocore retries each request (max_attempts); if the
            # upload still fails, the writer deletes what it wrote and raises StoreError, and the
            # step's own retry (IO_RETRY: 3 retries) writes the run again.
            for _ in range(1 + 3):
                try:
                    run_id = write_candidate()
                    attempts.append("ok")
                    break
                except StoreError as e:
                    attempts.append(f"StoreError: {str(e)[:300]}")
                    killer.join(180)  # the step's retry delay: the server is back before the next attempt
                    champion_during_outage = reg.champion_version()
                    assert champion_during_outage == v1
            champion_during = reg.champion_version()
            v2 = reg.register(run_id, {"accuracy": 0.6})
            reg.promote(v2, reason="complete", expected_champion=v1)
        finally:
            store.backend.client.meta.events.unregister("after-call.s3.UploadPart", unique_id="reliability-outage")
            killer.join(180)
            done.set()
            watcher.join(10)

        runs = store.list_runs()
        for rid in runs:
            store.verify_run(rid)  # every visible run is complete and matches its sha256s
        pending = store.backend.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        leftovers = [k for k in store.backend.list("runs/") if k.split("/")[1] not in runs]
        figures.update(
            faults_injected=1,
            outage_seconds=round(outage["restarted_at"] - outage["stopped_at"], 1),
            parts_before_stop=outage["parts_before_stop"],
            write_attempts=attempts,
            runs_completed=len(runs),
            champion_observations=len(seen),
            champions_seen=sorted({c for c in seen if c is not None}),
            incomplete_multipart_uploads=len(pending),
            invisible_leftover_objects=len(leftovers),
            objects_lost=0,
        )
        assert outage["stopped_at"] is not None and outage["restarted_at"] is not None
        assert attempts[-1] == "ok", attempts
        # the whole file arrived, byte for byte, in the one committed run
        assert store.get_bytes(run_id, "weights.bin") == big.read_bytes()
        assert champion_during == v1 and reg.champion_version() == v2 == 2 and len(runs) == 2
        # a failed attempt's objects were deleted by its writer (no manifest: never visible anyway)
        assert leftovers == [], leftovers
        # the champion was v1 until the new model was complete, then v2; never anything else
        assert seen and set(seen) <= {v1, v2} and seen[0] == v1
        if v2 in seen:
            assert seen[seen.index(v2) :] == [v2] * (len(seen) - seen.index(v2))
        reg.load()  # the champion in service loads, sha256-verified
    finally:
        for s in servers:
            s.stop()


def test_drift_check_runs_with_least_privilege_credentials_and_leaks_none(
    prefect_api, tmp_path, capfd, caplog, figures
):
    """The drift-check identity can read the bucket and write only under drift/ and quarantine/;
    it runs the real drift-check flow, and its attempts to write a model, a run or the registry are
    denied. Neither its secret nor the admin's appears in logs, flow-run parameters, errors or the store."""
    import json

    import numpy as np
    from prefect.client.orchestration import get_client

    from flows.drift_check import drift_check
    from flows.training import training
    from tasks.drift.cli import simulate_stream_command
    from tests.reliability.conftest import smoke_settings

    bucket = "driftloop"
    admin_key, admin_secret = f"admin-{secrets.token_hex(6)}", f"adminsecret-{secrets.token_hex(16)}"
    dc_key, dc_secret = f"driftcheck-{secrets.token_hex(6)}", f"dcsecret-{secrets.token_hex(16)}"
    # SeaweedFS action syntax: "Action:bucket" (whole bucket) or "Action:bucket/prefix*" (keys under a prefix).
    dc_actions = [
        f"Read:{bucket}",
        f"List:{bucket}",
        f"Write:{bucket}/driftloop/drift/*",
        f"Write:{bucket}/driftloop/quarantine/*",
    ]
    server = start_seaweedfs(
        tmp_path / "weed",
        access_key=admin_key,
        secret_key=admin_secret,
        extra_identities={"drift-check": (dc_key, dc_secret, dc_actions)},
    )
    try:
        server.create_bucket(bucket)
        common = {
            "store.uri": f"s3://{bucket}/driftloop",
            "store.endpoint_url": server.endpoint_url,
            "store.region": "us-east-1",
        }
        admin = smoke_settings(
            tmp_path, **common, **{"store.access_key_id": admin_key, "store.secret_access_key": admin_secret}
        )
        limited = smoke_settings(
            tmp_path, **common, **{"store.access_key_id": dc_key, "store.secret_access_key": dc_secret}
        )
        training(admin)  # the champion, written by the training identity
        simulate_stream_command(
            str(tmp_path / "batches"),
            kind="gaussian_noise",
            onset=2,
            duration=2,
            batches=4,
            batch_size=100,
            settings=admin,
        )
        bad = np.load(tmp_path / "batches" / "batch-00000.npz")
        x = bad["x"].copy()
        x[0, 0, 0, 0] = np.nan  # one broken batch: the limited identity must be able to quarantine it
        np.savez(tmp_path / "batches" / "batch-00000b.npz", x=x, y=bad["y"])

        state = drift_check(limited, return_state=True)
        result = state.result()
        assert state.is_completed() and result["status"] == "drift-and-quarantined", result
        assert [q["uri"].rsplit("/", 1)[-1] for q in result["quarantine"]] == ["batch-00000b.npz"]
        assert len(result["checked"]) == 4

        # The same credentials cannot write a model run, the registry or delete a model.
        store = ArtifactStore.from_config(limited.store)
        reg = ModelRegistry(store, limited.registry.model_name)
        champion = reg.champion()
        denied, errors = 0, []
        attempts = [
            lambda: commit_model_run(store, seed=3),
            lambda: store.backend.put_bytes(f"registry/{limited.registry.model_name}/versions/000099.json", b"{}"),
            lambda: store.backend.put_bytes(f"registry/{limited.registry.model_name}/champion.json", b"{}"),
            lambda: store.backend.delete(f"runs/{champion['run_id']}/model.safetensors"),
            lambda: store.backend.put_bytes("batches/batch-99999.npz", b"x"),
        ]
        for attempt in attempts:
            with pytest.raises(StoreError) as e:
                attempt()
            errors.append(str(e.value))
            denied += "AccessDenied" in str(e.value) or "HTTP 403" in str(e.value)
        admin_store = ArtifactStore.from_config(admin.store)
        admin_reg = ModelRegistry(admin_store, admin.registry.model_name)
        assert admin_reg.champion() == champion and [v["version"] for v in admin_reg.versions()] == [1]
        assert admin_store.list_runs() == [champion["run_id"]]  # the denied run left nothing visible
        admin_reg.load()  # the champion is intact
        written = [k for k in admin_store.backend.list("") if not k.startswith(("runs/", "registry/"))]
        assert written and all(k.startswith(("drift/", "quarantine/")) for k in written), written

        # No secret anywhere: captured output and logs, flow-run parameters, errors, stored objects.
        out, err = capfd.readouterr()
        with get_client(sync_client=True) as c:
            params = json.dumps(c.read_flow_run(state.state_details.flow_run_id).parameters, default=str)
        stored = b"".join(admin_store.backend.get_bytes(k) for k in admin_store.backend.list(""))
        haystacks = {
            "stdout/stderr": out + err,
            "log records": caplog.text,
            "flow-run parameters": params,
            "error messages": "\n".join(errors),
            "result": json.dumps(result, default=str),
            "store objects": stored.decode("latin-1"),
        }
        leaks = [
            (where, which)
            for where, text in haystacks.items()
            for which, secret in (("admin", admin_secret), ("drift-check", dc_secret))
            if secret in text
        ]
        figures.update(
            identities=2,
            drift_check_actions=dc_actions,
            batches_checked=len(result["checked"]),
            batches_quarantined=len(result["quarantined"]),
            forbidden_writes_attempted=len(attempts),
            forbidden_writes_denied=denied,
            keys_written_by_drift_check=len(written),
            places_searched_for_secrets=sorted(haystacks),
            secret_leaks=len(leaks),
            objects_lost=0,
        )
        assert denied == len(attempts), errors
        assert leaks == [], leaks
    finally:
        server.stop()
