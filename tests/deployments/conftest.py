"""The deployment tests use the session's real ``prefect server start`` (``prefect_server`` /
``on_server`` in tests/fixtures/servers.py); ``using_server`` is re-exported for their imports."""

from tests.fixtures.servers import using_server  # noqa: F401 - imported by the deployment tests
