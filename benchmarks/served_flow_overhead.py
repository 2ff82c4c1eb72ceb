"""served_flow_overhead: the training flow (smoke profile) run through a Prefect server as a deployment
run of the served deployment (`driftloop serve` + `prefect deployment run 'training/training' --watch`)
vs the same flow run in-process (`driftloop run training --smoke`, recording to the same server).

Both are timed as whole commands (process start, imports, the run, until the command returns), on one
real `prefect server start` on 127.0.0.1, alternating the order per repeat. Also reported: how long the
served run waited between being scheduled and starting (the runner's poll), from the run's states.

    .venv/bin/python benchmarks/served_flow_overhead.py [--repeats 3] [--quick]

--quick turns tuning/federated/adversarial off (validate, train, evaluate, register only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks._common import write_result  # noqa: E402
from deployments.stack import start_prefect_server, stop_group  # noqa: E402

BIN = Path(sys.executable).parent


def _env(api_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRIFTLOOP_"))}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "ab") as f:
        r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=1800)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}; see {log}")
    return dt


def _start_latency(api_url: str) -> float | None:
    """Seconds between the latest training deployment run's Scheduled state and its Running state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as c:
        dep = c.read_deployment_by_name("training/training")
        (run,) = c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=1,
        )
        states = c.read_flow_run_states(run.id)
    sched = next((s.timestamp for s in states if s.type.value == "SCHEDULED"), None)
    running = next((s.timestamp for s in states if s.type.value == "RUNNING"), None)
    return (running - sched).total_seconds() if sched and running else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="plain-training pipeline only (tune/federate/harden off)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-served-"))
    log = work / "commands.log"
    params = ["--param", f"store.uri={work / 'store'}", "--param", f"drift.batches_uri={work / 'batches'}"]
    if args.quick:
        params += [
            "--param",
            "tuning.enabled=false",
            "--param",
            "federated.enabled=false",
            "--param",
            "adversarial.enabled=false",
        ]
    server = start_prefect_server(work / "server")
    env = _env(server.api_url, work / "client-home")
    serve_log = open(work / "serve.log", "wb")
    served = subprocess.Popen(
        [str(BIN / "driftloop"), "serve", "--smoke", *params, "--only", "training"],
        cwd=ROOT,
        env=env,
        stdout=serve_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    served_s, inproc_s, latency = [], [], []
    try:
        # wait until the served deployment exists
        deadline = time.time() + 120
        while (
            subprocess.run(
                [str(BIN / "prefect"), "deployment", "inspect", "training/training"], env=env, capture_output=True
            ).returncode
            != 0
        ):
            if time.time() > deadline or served.poll() is not None:
                raise SystemExit(f"`driftloop serve` did not register the deployment; see {work / 'serve.log'}")
            time.sleep(1)
        inproc_cmd = [str(BIN / "driftloop"), "run", "training", "--smoke", *params]
        served_cmd = [
            str(BIN / "prefect"),
            "deployment",
            "run",
            "training/training",
            "--watch",
            "--watch-interval",
            "1",
        ]
        _timed(inproc_cmd, env, log)  # warm-up: first imports, the server's first writes
        for i in range(args.repeats):
            for mode in ("served", "inprocess") if i % 2 == 0 else ("inprocess", "served"):
                if mode == "served":
                    served_s.append(_timed(served_cmd, env, log))
                    latency.append(_start_latency(server.api_url))
                else:
                    inproc_s.append(_timed(inproc_cmd, env, log))
                print(f"repeat {i} {mode}: {(served_s if mode == 'served' else inproc_s)[-1]:.2f} s", flush=True)
    finally:
        stop_group(served.pid, 15, served)
        serve_log.close()
        server.stop()
    ratio = statistics.median(served_s) / statistics.median(inproc_s)
    res = {
        "profile": "smoke",
        "stages": "validate,train,evaluate,register" if args.quick else "all enabled",
        "repeats": args.repeats,
        "served_seconds": served_s,
        "inprocess_seconds": inproc_s,
        "served_median_s": statistics.median(served_s),
        "inprocess_median_s": statistics.median(inproc_s),
        "ratio_served_over_inprocess": ratio,
        "served_start_latency_s": latency,
        "served_command": "driftloop serve --smoke ... ; prefect deployment run training/training --watch",
        "inprocess_command": "driftloop run training --smoke ... (PREFECT_API_URL = the same server)",
        "seed": 1337,
    }
    print(
        f"served {res['served_median_s']:.2f} s vs in-process {res['inprocess_median_s']:.2f} s: "
        f"ratio {ratio:.3f}; scheduled->running {latency}"
    )
    write_result("served_flow_overhead", res)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
