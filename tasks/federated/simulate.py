"""``python -m tasks.federated.simulate WORKDIR``: run the ServerApp and ClientApps of a written
work dir in Flower's simulation engine, in this process (and the Ray runtime it starts).

The engine starts this module as a subprocess so that Flower's Ray runtime never shares a process
with Ray Tune's (they crash together: ../shared/STACK.md). Exit status 0 only when the ServerApp
wrote ``out/status.json`` with state ``completed``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tasks.federated.simulate WORKDIR", file=sys.stderr)
        return 2
    workdir = str(Path(argv[0]).resolve())
    # Ray actors inherit the environment of the driver that starts Ray: the ClientApps find the
    # work dir this way (run_simulation gives them an empty run config).
    os.environ["DRIFTLOOP_FED_WORKDIR"] = workdir
    from flwr.simulation import run_simulation

    from tasks.federated.client_app import app as client_app
    from tasks.federated.server_app import app as server_app
    from tasks.federated.workspace import load_workspace

    ws = load_workspace(workdir)
    cpus = max(1, os.cpu_count() or 1)
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=int(ws.spec["num_clients"]),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": cpus, "include_dashboard": False}})
    status_file = ws.out / "status.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {"state": "missing"}
    return 0 if status.get("state") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
