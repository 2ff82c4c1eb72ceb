"""Shared test set-up: an isolated Prefect home and config environment per session, and the
fixtures for real servers (SeaweedFS S3, a Prefect API) in ``tests/fixtures``."""

import os
import tempfile

# Before anything imports prefect: its own home, no analytics (SQLite "database is locked"),
# no user config leaking in.
_home = tempfile.mkdtemp(prefix="driftloop-test-prefect-")
os.environ["PREFECT_HOME"] = _home
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
for _k in [k for k in os.environ if k.startswith("DRIFTLOOP_")]:
    del os.environ[_k]
# Before anything imports ray, as the `driftloop` command does: every local Ray the tests start
# (Ray Tune, Flower simulations) runs with token authentication.
from tasks.ray_security import enable_token_auth  # noqa: E402

enable_token_auth()

pytest_plugins = ["tests.fixtures.servers"]
