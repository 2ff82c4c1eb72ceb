"""drift_to_retrain_latency: seconds from a drift event to the start of the retraining run it triggers,
on a local `prefect server start` with the deployments served by `driftloop serve`.

Each repetition is a real drift check (a labelled stream drifting at batches 2-3) whose event starts a
real retraining run (smoke profile, plain training). The latency is split into event -> flow run created
(the trigger) and created -> running (the served runner's poll); the runner's poll interval
(PREFECT_RUNNER_POLL_FREQUENCY) is the baseline knob, compared in the same run at 2 s and 10 s.
Goal: under 15 s.

    .venv/bin/python benchmarks/drift_to_retrain_latency.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402

FAST = [
    "--param",
    "tuning.enabled=false",
    "--param",
    "federated.enabled=false",
    "--param",
    "adversarial.enabled=false",
    "--param",
    "training.epochs=2",
]


def _wait(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _runs(name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as c:
        dep = c.read_deployment_by_name(name)
        return c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))


def measure(poll_s: int, repeats: int, work: Path, api_url: str) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from deployments.stack import stop_group
    from tasks.drift.cli import simulate_stream_command
    from tasks.settings import load_settings

    model = f"latency-p{poll_s}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRIFTLOOP_"))}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(work / f"home-{poll_s}"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY=str(poll_s),
    )
    out = []
    for rep in range(repeats):
        # A fresh store per repetition: batch ids (file names) are remembered per model once checked.
        batches, store_uri = str(work / f"batches-{poll_s}-{rep}"), str(work / f"store-{poll_s}-{rep}")
        log = open(work / f"serve-{poll_s}-{rep}.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "serve",
                "--smoke",
                *FAST,
                "--param",
                f"store.uri={store_uri}",
                "--param",
                f"registry.model_name={model}",
                "--param",
                f"drift.batches_uri={batches}",
                "--param",
                "drift.cooldown_seconds=0",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:

            def served(batches=batches):
                with get_client(sync_client=True) as c:
                    try:
                        d = c.read_deployment_by_name("drift-check/drift-check")
                    except Exception:  # noqa: BLE001 - not there yet
                        return None
                    return d.parameters["config"]["drift"]["batches_uri"] == batches

            _wait(served, 120, "the served deployments")
            assert run_deployment("training/training", timeout=300, poll_interval=1).state.is_completed()
            s = load_settings(profile="smoke", environ={}, overrides={"store.uri": store_uri})
            simulate_stream_command(
                batches, kind="gaussian_noise", onset=2, duration=2, batches=5, batch_size=100, settings=s, seed=rep
            )
            before = {r.id for r in _runs("retraining/retraining")}
            check = run_deployment("drift-check/drift-check", timeout=300, poll_interval=1)
            assert check.state.is_completed(), check.state
            event_at = check.state.timestamp  # the event is emitted at the end of the check
            new = _wait(
                lambda before=before: [
                    r for r in _runs("retraining/retraining") if r.id not in before and r.start_time
                ],
                300,
                "the retraining run to start",
            )
            run = new[0]
            out.append(
                {
                    "poll_s": poll_s,
                    "rep": rep,
                    "event_to_created_s": (run.created - event_at).total_seconds(),
                    "created_to_running_s": (run.start_time - run.created).total_seconds(),
                    "event_to_running_s": (run.start_time - event_at).total_seconds(),
                }
            )
            print(out[-1])
            _wait(
                lambda: all(r.state and r.state.is_final() for r in _runs("retraining/retraining")),
                300,
                "the retraining run to finish",
            )
        finally:
            stop_group(proc.pid, 15, proc)
            log.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from deployments.stack import start_prefect_server

    work = Path(tempfile.mkdtemp(prefix="driftloop-latency-"))
    server = start_prefect_server(work / "server")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        rows = measure(2, args.repeats, work, server.api_url) + measure(10, args.repeats, work, server.api_url)
    finally:
        server.stop()
    summary = {}
    for poll in (2, 10):
        r = [x for x in rows if x["poll_s"] == poll]
        summary[f"poll_{poll}s"] = {
            k: statistics.median(x[k] for x in r)
            for k in ("event_to_created_s", "created_to_running_s", "event_to_running_s")
        }
    res = {
        "repeats": args.repeats,
        "rows": rows,
        "summary": summary,
        "goal_s": 15.0,
        "goal_met": summary["poll_2s"]["event_to_running_s"] < 15.0,
    }
    print(summary)
    write_result("drift_to_retrain_latency", res)


if __name__ == "__main__":
    main()
