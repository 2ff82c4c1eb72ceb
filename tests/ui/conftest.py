"""The UI test's Prefect server: the same real-server fixture as tests/deployments."""

from tests.deployments.conftest import prefect_server  # noqa: F401 - a fixture, re-exported
