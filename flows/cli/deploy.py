"""``driftloop deploy / serve / up / down``: the deployments (deployments/apply.py) and the local stack
(deployments/stack.py). "No server to talk to" is a usage error (exit 2) that names the command to run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from deployments.errors import DeploymentError
from flows.cli.common import ConfigOpt, JsonOpt, ParamOpt, SmokeOpt, exits, load, print_json

app = typer.Typer()

OnlyOpt = typer.Option(None, "--only", help="Only this deployment (repeatable): training, drift-check, retraining.")
DirOpt = typer.Option(Path(".driftloop/stack"), "--dir", help="Where the servers keep their data, logs and state.json.")


def _summary(d: dict[str, Any]) -> str:
    """One line per deployment: what was done, its pool, schedule, trigger, concurrency, pause."""
    sched = ", ".join(f"cron {s['cron']} ({'active' if s['active'] else 'inactive'})" for s in d["schedules"])
    trig = ", ".join(
        f"on {','.join(a['expect'])} for each {','.join(a['for_each'])} within {a['within_s']:g} s"
        for a in d["automations"]
    )
    conc = f"concurrency {d['concurrency_limit']} ({d['collision_strategy']})" if d["concurrency_limit"] else ""
    extra = "; ".join(x for x in (sched, trig, conc, "PAUSED" if d["paused"] else "") if x)
    return f"{d['action']:>9}  {d['name']}  [pool {d['work_pool']}]  {extra or 'on demand'}"


@app.command()
@exits(usage_errors=(DeploymentError,))
def deploy(
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
    smoke: bool = SmokeOpt,
    work_pool: str = typer.Option("driftloop-process", "--work-pool", help="Work pool (created when missing)."),
    pool_type: str = typer.Option(
        "process",
        "--pool-type",
        help="Type of a pool created here: process, docker or kubernetes "
        "(docker/kubernetes need prefect-docker/prefect-kubernetes on the worker).",
    ),
    only: Optional[list[str]] = OnlyOpt,
    as_json: bool = JsonOpt,
    write_yaml: Optional[Path] = typer.Option(
        None,
        "--write-yaml",
        help="Write the three deployments with the "
        "code defaults as a prefect.yaml here (for `prefect deploy --all`) "
        "and exit; no server needed.",
    ),
) -> None:
    """Create or update the training, drift-check and retraining deployments on PREFECT_API_URL's server.

    Idempotent: an unchanged deployment is not written; a changed one is updated in place and keeps
    a pause set in the UI; no schedule or trigger from an earlier configuration is left behind.
    Start a worker with `prefect worker start --pool driftloop-process`, or use `driftloop serve` instead.
    """
    if write_yaml is not None:
        from deployments.prefect_yaml import write_prefect_yaml

        write_prefect_yaml(write_yaml)
        typer.echo(f"wrote {write_yaml}")
        return
    from deployments.apply import deploy_all

    settings = load(config, param, smoke)
    result = deploy_all(settings, work_pool=work_pool, pool_type=pool_type, only=only)
    if as_json:
        print_json(result)
        return
    for d in result:
        typer.echo(_summary(d))
    typer.echo(
        f"run one: prefect deployment run 'training/training'   "
        f"(needs a worker: prefect worker start --pool {work_pool})"
    )


@app.command()
@exits(usage_errors=(DeploymentError,))
def serve(
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
    smoke: bool = SmokeOpt,
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many runs at once."),
    only: Optional[list[str]] = OnlyOpt,
) -> None:
    """Serve the three deployments from this process (no work pool, no worker) until Ctrl-C."""
    from deployments.apply import serve_all

    serve_all(load(config, param, smoke), limit=limit, only=only)


@app.command()
@exits(usage=1)
def up(
    stack_dir: Path = DirOpt,
    prefect_port: int = typer.Option(4200, "--prefect-port"),
    s3_port: int = typer.Option(8333, "--s3-port"),
    bucket: str = typer.Option("driftloop", "--bucket"),
    as_json: bool = JsonOpt,
) -> None:
    """Start a local Prefect server and a SeaweedFS S3 on 127.0.0.1 (data under --dir); print the UI URL and env."""
    from deployments.stack import stack_env, stack_up

    state = stack_up(stack_dir, prefect_port, s3_port, bucket)
    env = state.get("env") or stack_env(state)
    if as_json:
        print_json(dict(state, env=env))
        return
    typer.echo(
        ("already running" if state.get("already_running") else "started")
        + f": Prefect server (pid {state['prefect']['pid']}) and SeaweedFS S3 (pid {state['seaweedfs']['pid']}), "
        f"data under {state['stack_dir']}"
    )
    typer.echo(f"Prefect UI: {state['prefect']['ui_url']}")
    typer.echo(f"S3 endpoint: {state['seaweedfs']['endpoint_url']} (bucket {state['bucket']})")
    typer.echo(f"\nexport these (or: source {Path(state['stack_dir']) / 'env.sh'}):")
    for k, v in env.items():
        typer.echo(f"export {k}={v}")
    typer.echo("\nthen: driftloop deploy && driftloop serve     # stop with: driftloop down")


@app.command()
@exits(usage=1)
def down(stack_dir: Path = DirOpt, as_json: bool = JsonOpt) -> None:
    """Stop the servers `driftloop up` started (by their recorded process groups); their data stays."""
    from deployments.stack import stack_down

    res = stack_down(stack_dir)
    if as_json:
        print_json(res)
    else:
        typer.echo(f"stopped: {', '.join(res['stopped']) or 'nothing was running'} ({res['stack_dir']})")
