"""The Flower simulation engine, both sides of it.

- :func:`run_in_subprocess` (the engine's side): ``python -m tasks.federated.simulate WORKDIR...`` in
  its own subprocess and process group, so Flower's Ray runtime never shares a process with Ray
  Tune's (they crash together: ../shared/STACK.md); stopped by group when it ends or times out.
- :func:`main` (the subprocess): each work dir's ServerApp and ClientApps in Flower's simulation,
  one work dir after another (``run_simulations``: a clean run and its faulty variants share the
  process start-up). Each run gets its own Ray runtime, started here with ``address="local"``: a new
  local runtime whatever else is on the machine (with no address, Ray joins the cluster named in
  ``$TMPDIR/ray/ray_current_cluster``: someone else's, or a stale file's dead one). A runtime that
  fails to start or crashes is recorded in ``out/engine_error.json`` at once, so the engine reports
  the runtime's own error instead of waiting for the round timeout and blaming the clients.

Exit status 0 only when every ServerApp wrote ``out/status.json`` with state ``completed``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

ENGINE_ERROR = "engine_error.json"


def backend_config(cpus: int) -> dict:
    """Flower's Ray backend: one CPU per ClientApp, ``cpus`` in all, no dashboard (the token
    authentication comes from the environment the engine gives this process)."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "include_dashboard": False},
    }


def run_in_subprocess(workdirs: Sequence[Path], timeout: float, logpath: Path) -> str:
    """Run the simulations of ``workdirs`` in one subprocess; return its log's tail."""
    from tasks.federated.processes import PROJECT_ROOT, FederatedEngineError, child_env, stop_group, tail

    logpath.parent.mkdir(parents=True, exist_ok=True)
    with open(logpath, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.federated.simulate", *map(str, workdirs)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=str(PROJECT_ROOT),
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            raise FederatedEngineError(
                f"the Flower simulation did not finish within {timeout:.0f} s; log {logpath}:\n{tail(logpath)}"
            ) from None
        finally:
            # Ray's workers run in the same session: make sure none outlives the run.
            stop_group(proc, grace=1.0)
    return tail(logpath)


def _error_chain(e: BaseException) -> str:
    parts: list[str] = []
    link: BaseException | None = e
    while link is not None and len(parts) < 5:
        parts.append(f"{type(link).__name__}: {link}")
        link = link.__cause__ or link.__context__
    return " <- ".join(parts)


def _start_ray(cpus: int) -> None:
    """A new local Ray runtime for one simulation. Its workers inherit this process's environment
    (the raylet starts from it): the work dir, the simulation's client files, faults, PYTHONPATH.
    No ``runtime_env``: it costs seconds of actor start-up and adds nothing here."""
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True)


def run_one(workdir: str) -> bool:
    """Run the simulation of one work dir; True when its ServerApp completed."""
    from tasks.federated.client_data import ENV_SIM_DATA
    from tasks.federated.workspace import ENV_WORKDIR, load_workspace

    ws = load_workspace(workdir)
    # The ClientApps (Ray actors) find their files and faults through their environment.
    env_vars = {ENV_WORKDIR: workdir, ENV_SIM_DATA: str(Path(workdir) / "clients"), **ws.spec.get("client_env", {})}
    os.environ.update(env_vars)  # before Ray starts: its workers inherit it; the ServerApp thread reads it too
    cpus = max(1, os.cpu_count() or 1)
    t0 = time.monotonic()

    def phase(what: str) -> None:  # start-up cost, phase by phase (benchmarks/simulation_overhead.py)
        print(f"driftloop simulate: {what} at {time.monotonic() - t0:.1f} s", flush=True)

    try:
        from flwr.simulation import run_simulation

        from tasks.federated.client_app import app as client_app
        from tasks.federated.server_app import app as server_app

        phase("imports done")
        _start_ray(cpus)
        phase("Ray started")
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=int(ws.spec["num_clients"]),
            backend_config=backend_config(cpus),
        )
        phase("simulation done")
    except Exception as e:
        traceback.print_exc()
        status = ws.read_json("out/status.json", {"state": "missing"})
        if status.get("state") != "failed":  # not the ServerApp's own failure: the runtime's
            ws.write_json(f"out/{ENGINE_ERROR}", {"error": _error_chain(e), "traceback": traceback.format_exc()})
    finally:
        for k in env_vars:
            os.environ.pop(k, None)
        try:
            import ray

            ray.shutdown()
        except Exception:
            pass
    status = ws.read_json("out/status.json", {"state": "missing"})
    print(f"driftloop simulate: {workdir}: {status.get('state')}", flush=True)
    return status.get("state") == "completed" and not ws.exists(f"out/{ENGINE_ERROR}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m tasks.federated.simulate WORKDIR [WORKDIR...]", file=sys.stderr)
        return 2
    results = [run_one(str(Path(wd).resolve())) for wd in argv]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.stdout.flush()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # A ServerApp thread of a crashed runtime may still wait on its round timeout: do not wait for it.
    os._exit(code)
