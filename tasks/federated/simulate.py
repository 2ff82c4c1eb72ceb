"""``python -m tasks.federated.simulate WORKDIR [WORKDIR...]``: run the ServerApp and ClientApps of
each written work dir in Flower's simulation engine, in this process (and the Ray runtime it starts),
one work dir after another.

The engine starts this module as a subprocess so that Flower's Ray runtime never shares a process
with Ray Tune's (they crash together: ../shared/STACK.md). Several work dirs (``run_simulations``:
a clean run and its faulty variants) share the process start-up; each gets its own Ray runtime,
which ``run_simulation`` starts and shuts down. A run that fails does not stop the next one: its
ServerApp has written ``out/status.json`` (state ``failed``) for the engine to report. Exit status 0
only when every ServerApp wrote ``out/status.json`` with state ``completed``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def backend_config(cpus: int) -> dict:
    """Flower's Ray backend: one CPU per ClientApp, ``cpus`` in all, no dashboard (the token
    authentication comes from the environment the engine gives this process)."""
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False}}


def run_one(workdir: str) -> bool:
    """Run the simulation of one work dir; True when its ServerApp completed."""
    # Ray actors inherit the environment of the driver that starts Ray (afresh for every run):
    # the ClientApps find the work dir this way (run_simulation gives them an empty run config).
    os.environ["DRIFTLOOP_FED_WORKDIR"] = workdir
    from flwr.simulation import run_simulation

    from tasks.federated.client_app import app as client_app
    from tasks.federated.server_app import app as server_app
    from tasks.federated.workspace import load_workspace

    ws = load_workspace(workdir)
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=int(ws.spec["num_clients"]),
                       backend_config=backend_config(max(1, os.cpu_count() or 1)))
    except Exception:  # the ServerApp's own failure is in status.json; go on with the next work dir
        traceback.print_exc()
    status_file = ws.out / "status.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {"state": "missing"}
    print(f"driftloop simulate: {workdir}: {status.get('state')}", flush=True)
    return status.get("state") == "completed"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m tasks.federated.simulate WORKDIR [WORKDIR...]", file=sys.stderr)
        return 2
    results = [run_one(str(Path(wd).resolve())) for wd in argv]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
