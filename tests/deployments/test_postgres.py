"""The Prefect server on PostgreSQL (Debian's postgresql binaries, 127.0.0.1, a free port, a tmp
data dir): deploy the three deployments there and read them back."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

import pytest

from deployments.stack import free_port, start_prefect_server
from tests.fixtures.servers import using_server

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


def _pg_bin() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    return None


@pytest.fixture
def postgres():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "Debian's PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin) are not "
            "installed: apt-get install -y postgresql"
        )
    data = tempfile.mkdtemp(prefix="driftloop-test-pg-")
    os.chmod(data, 0o700)
    port = free_port()
    # initdb refuses to run as root: run the server as the postgres user when we are root.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(data, "postgres", "postgres")
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(f"{bindir}/initdb", "-D", f"{data}/db", "-U", "prefect", "--auth=trust", "-E", "UTF8")
    run(
        f"{bindir}/pg_ctl",
        "-D",
        f"{data}/db",
        "-l",
        f"{data}/pg.log",
        "-w",
        "-t",
        "60",
        "-o",
        f"-h 127.0.0.1 -p {port} -k {data}",
        "start",
    )
    try:
        run(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect")
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run(
            [*as_user, f"{bindir}/pg_ctl", "-D", f"{data}/db", "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)


def test_prefect_server_on_postgresql_holds_the_deployments(postgres):
    from deployments.apply import deploy_all
    from tasks.settings import load_settings

    home = tempfile.mkdtemp(prefix="driftloop-test-prefect-pg-")
    server = start_prefect_server(home, extra_env={"PREFECT_API_DATABASE_CONNECTION_URL": postgres})
    try:
        with using_server(server.api_url):
            s = load_settings(profile="smoke", environ={})
            first = deploy_all(s)
            second = deploy_all(s)
        assert {d["action"] for d in first} == {"created"} and {d["action"] for d in second} == {"unchanged"}
        by = {d["name"]: d for d in second}
        assert [x["cron"] for x in by["drift-check/drift-check"]["schedules"]] == ["*/15 * * * *"]
        assert len(by["retraining/retraining"]["automations"]) == 1
        log = open(os.path.join(home, "server.log")).read()
        assert "sqlite" not in log.lower() or "postgresql" in log.lower()
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
