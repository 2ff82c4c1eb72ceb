"""flow_overhead: the training flow (smoke profile) under Prefect vs the same pipeline code with every
Prefect task replaced by its plain function, outside any flow run, in the same process.

Reports the wall-time ratio (goal under 1.3), the one-off cost of the ephemeral API server, and the
peak resident memory of the whole process tree (Ray and Flower subprocesses included; goal under 4 GiB).

    .venv/bin/python benchmarks/flow_overhead.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="driftloop-bench-prefect-"))

from benchmarks._common import PeakTreeMemory, write_result  # noqa: E402

STEP_MODULES = [
    "tasks.data.steps",
    "tasks.models.steps",
    "tasks.tuning.steps",
    "tasks.federated.steps",
    "tasks.adversarial.steps",
    "tasks.drift.steps",
]


@contextlib.contextmanager
def tasks_as_plain_functions():
    """Swap every Prefect Task in the steps modules for its underlying function."""
    from prefect import Task

    saved = []
    for name in STEP_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for attr, obj in list(vars(mod).items()):
            if isinstance(obj, Task):
                saved.append((mod, attr, obj))
                setattr(mod, attr, obj.fn)
    try:
        yield len(saved)
    finally:
        for mod, attr, obj in saved:
            setattr(mod, attr, obj)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="plain-training pipeline only (tune/federate/harden off)")
    args = ap.parse_args()

    from flows.pipeline import PipelineInputs, run_pipeline
    from flows.training import training
    from tasks.settings import load_settings

    over = {"tuning.enabled": False, "federated.enabled": False, "adversarial.enabled": False} if args.quick else {}

    def settings(tag: str):
        s = load_settings(profile="smoke", overrides=over, environ={})
        s.store.uri = tempfile.mkdtemp(prefix=f"driftloop-bench-{tag}-")
        return s

    flow_times, direct_times = [], []
    with PeakTreeMemory() as mem:
        t = time.perf_counter()
        training(settings("warmup"))  # starts the ephemeral API server once
        first = time.perf_counter() - t
        for i in range(args.repeats):
            for mode in ("flow", "direct") if i % 2 == 0 else ("direct", "flow"):
                s = settings(mode)
                t = time.perf_counter()
                if mode == "flow":
                    training(s)
                    flow_times.append(time.perf_counter() - t)
                else:
                    with tasks_as_plain_functions() as n:
                        run_pipeline(s, PipelineInputs(trigger={"kind": "benchmark"}))
                    direct_times.append(time.perf_counter() - t)
                print(f"repeat {i} {mode}: {(flow_times if mode == 'flow' else direct_times)[-1]:.2f} s")
    ratio = statistics.median(flow_times) / statistics.median(direct_times)
    res = {
        "profile": "smoke",
        "stages": "validate,train,evaluate,register" if args.quick else "all enabled",
        "repeats": args.repeats,
        "flow_seconds": flow_times,
        "direct_seconds": direct_times,
        "flow_median_s": statistics.median(flow_times),
        "direct_median_s": statistics.median(direct_times),
        "ratio_flow_over_direct": ratio,
        "goal_ratio": 1.3,
        "tasks_swapped": n,
        "first_flow_run_incl_ephemeral_server_s": first,
        "peak_process_tree_rss_gib": mem.peak / 2**30,
        "goal_peak_gib": 4.0,
    }
    print(
        f"flow {res['flow_median_s']:.2f} s vs direct {res['direct_median_s']:.2f} s: ratio {ratio:.3f} "
        f"(goal < 1.3); first run incl. ephemeral server {first:.1f} s; peak tree RSS "
        f"{res['peak_process_tree_rss_gib']:.2f} GiB"
    )
    write_result("flow_overhead", res)


if __name__ == "__main__":
    main()
