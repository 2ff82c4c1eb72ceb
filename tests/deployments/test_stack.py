"""`driftloop up` / `driftloop down`: a Prefect server and a SeaweedFS S3 on 127.0.0.1, data under
one directory, pids in state.json, stopped by process group."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import boto3
import httpx
import pytest
from typer.testing import CliRunner

from deployments.stack import free_port, pid_alive
from flows.cli import app
from tasks.store.seaweed import free_ports

pytestmark = pytest.mark.integration


# 30-70 s end to end: in the full suite, not in the quick `-m "not slow"` run.
@pytest.mark.slow
def test_up_prints_urls_and_env_and_down_stops_everything():
    runner = CliRunner()
    # not pytest's tmp_path: parallel sessions prune old basetemps under running servers
    stack = Path(tempfile.mkdtemp(prefix="driftloop-test-stack-")) / "stack"
    # free_ports walks the same sequence start_seaweedfs uses for its other 4 ports: take the 6th
    prefect_port, s3_port = free_port(), free_ports(6)[-1]
    r = runner.invoke(app, ["up", "--dir", str(stack), "--prefect-port", str(prefect_port), "--s3-port", str(s3_port)])
    try:
        assert r.exit_code == 0, r.output
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in r.output
        assert f"export PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api" in r.output
        assert f"export DRIFTLOOP_STORE__ENDPOINT_URL=http://127.0.0.1:{s3_port}" in r.output
        state = json.loads((stack / "state.json").read_text())
        assert (stack / "prefect").is_dir() and (stack / "seaweedfs").is_dir() and (stack / "env.sh").exists()
        assert httpx.get(f"http://127.0.0.1:{prefect_port}/api/health", timeout=5).status_code == 200
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            region_name="us-east-1",
            aws_access_key_id=state["seaweedfs"]["access_key"],
            aws_secret_access_key=state["seaweedfs"]["secret_key"],
        )
        s3.put_object(Bucket="driftloop", Key="hello", Body=b"x")  # the bucket was created at start
        # up again: already running, nothing new started
        r2 = runner.invoke(
            app, ["up", "--dir", str(stack), "--prefect-port", str(prefect_port), "--s3-port", str(s3_port), "--json"]
        )
        assert r2.exit_code == 0 and json.loads(r2.output)["already_running"] is True
        assert json.loads(r2.output)["prefect"]["pid"] == state["prefect"]["pid"]
    finally:
        r3 = runner.invoke(app, ["down", "--dir", str(stack), "--json"])
    assert r3.exit_code == 0 and set(json.loads(r3.output)["stopped"]) == {"prefect", "seaweedfs"}
    assert not pid_alive(state["prefect"]["pid"]) and not pid_alive(state["seaweedfs"]["pid"])
    for port in (prefect_port, s3_port):  # nothing listens any more (bind may still see TIME_WAIT)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert not (stack / "state.json").exists() and (stack / "prefect").is_dir()  # the data stays
    shutil.rmtree(stack.parent, ignore_errors=True)
