#!/usr/bin/env bash
# Set up and run the whole test suite. Tests start the real servers they need on 127.0.0.1
# (SeaweedFS, Prefect, Ray, Flower, PostgreSQL) and stop them by process id.
# System packages for the browser and PostgreSQL tests come from Debian when we are root with apt;
# elsewhere those tests skip and say what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=""
  command -v chromium >/dev/null 2>&1 || need="$need chromium"
  command -v chromedriver >/dev/null 2>&1 || need="$need chromium-driver"
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
  if [ -n "$need" ]; then
    echo "driftloop test: installing Debian packages:$need"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null) ||
      echo "driftloop test: could not install$need; the tests that need them will skip"
  fi
fi
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false RAY_USAGE_STATS_ENABLED=0
mkdir -p test-output
# Lint and type-check first (rules in pyproject.toml [tool.ruff], [tool.mypy]); the import contracts run as tests/test_import_contracts.py.
.venv/bin/ruff check --quiet . || { echo "driftloop test: ruff check failed (see above)"; exit 1; }
.venv/bin/ruff format --check --quiet . || { echo "driftloop test: files need \`ruff format\` (see above)"; exit 1; }
# Type check of tasks/ and flows/ ([tool.mypy] in pyproject.toml; no module is exempt).
.venv/bin/mypy --no-error-summary || { echo "driftloop test: mypy failed (see above)"; exit 1; }
# Two workers, whole files per worker (module fixtures are not duplicated): most integration tests
# wait on servers, so two of them overlap well even on 2 cores (~10 min instead of ~16 serially).
# DRIFTLOOP_TEST_WORKERS=0 runs everything in this process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900 -n "${DRIFTLOOP_TEST_WORKERS:-2}" --dist loadfile \
  --junitxml=test-output/junit.xml "$@"
