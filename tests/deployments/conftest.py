"""A real ``prefect server start`` on 127.0.0.1 (free port, own PREFECT_HOME, scheduler running)
for the deployment tests; stopped by its process group at the end of the session."""

from __future__ import annotations

import contextlib
import shutil
import tempfile

import pytest

from deployments.stack import start_prefect_server


@pytest.fixture(scope="session")
def prefect_server():
    # Its own directory, not pytest's basetemp: pytest prunes old basetemps of parallel sessions,
    # which would pull the database out from under a running server.
    home = tempfile.mkdtemp(prefix="driftloop-test-prefect-server-")
    # The scheduler's loop is shortened so a new schedule's runs appear within seconds.
    server = start_prefect_server(home, extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"})
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def using_server(url: str):
    """Point this process's Prefect client at ``url`` (innermost settings context wins, so a
    session's test harness does not interfere)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        yield


@pytest.fixture
def on_server(prefect_server):
    """This test's Prefect client talks to the session's real server."""
    with using_server(prefect_server.api_url):
        yield prefect_server
