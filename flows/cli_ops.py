"""Operations commands of ``driftloop``: deploy, serve, up/down, artifacts (ls/get/gc), hyperband-plan, simulate-stream.

``flows/cli.py`` mounts them with ``register(app)``. Exit codes follow cli.py: 0 success, 1 the work
failed (a server refused, an object is missing), 2 bad usage or configuration (including "no
server to talk to", with the command that starts one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tasks.errors import ConfigError, DriftloopError


def register(app: typer.Typer) -> None:
    """Add the operations commands to the ``driftloop`` Typer app."""
    # Imported here: flows.cli imports this module at its end, so its helpers exist by now.
    from flows.cli import ConfigOpt, JsonOpt, ParamOpt, SmokeOpt, _fail, _print_json, _settings

    only_opt = typer.Option(None, "--only", help="Only this deployment (repeatable): training, drift-check, retraining.")

    @app.command()
    def deploy(config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt, smoke: bool = SmokeOpt,
               work_pool: str = typer.Option("driftloop-process", "--work-pool", help="Work pool (created when missing)."),
               pool_type: str = typer.Option("process", "--pool-type",
                                             help="Type of a pool created here: process, docker or kubernetes "
                                                  "(docker/kubernetes need prefect-docker/prefect-kubernetes on the worker)."),
               only: Optional[list[str]] = only_opt, as_json: bool = JsonOpt) -> None:
        """Create or update the training, drift-check and retraining deployments on PREFECT_API_URL's server.

        Idempotent: an unchanged deployment is not written; a changed one is updated in place and keeps
        a pause set in the UI; no schedule or trigger from an earlier configuration is left behind.
        Start a worker with `prefect worker start --pool driftloop-process`, or use `driftloop serve` instead.
        """
        from deployments.serve import DeploymentError, deploy_all

        settings = _settings(config, param, smoke)
        try:
            result = deploy_all(settings, work_pool=work_pool, pool_type=pool_type, only=only)
        except (DeploymentError, ConfigError) as e:
            _fail(str(e), 2)
        except DriftloopError as e:
            _fail(str(e), 1)
        if as_json:
            _print_json(result)
            return
        for d in result:
            sched = ", ".join(f"cron {s['cron']} ({'active' if s['active'] else 'inactive'})" for s in d["schedules"])
            trig = ", ".join(f"on {','.join(a['expect'])} for each {','.join(a['for_each'])} within {a['within_s']:g} s"
                             for a in d["automations"])
            extra = "; ".join(x for x in (sched, trig, f"concurrency {d['concurrency_limit']} ({d['collision_strategy']})"
                                          if d["concurrency_limit"] else "", "PAUSED" if d["paused"] else "") if x)
            typer.echo(f"{d['action']:>9}  {d['name']}  [pool {d['work_pool']}]  {extra or 'on demand'}")
        typer.echo(f"run one: prefect deployment run 'training/training'   "
                   f"(needs a worker: prefect worker start --pool {work_pool})")

    @app.command()
    def serve(config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt, smoke: bool = SmokeOpt,
              limit: Optional[int] = typer.Option(None, "--limit", help="At most this many runs at once."),
              only: Optional[list[str]] = only_opt) -> None:
        """Serve the three deployments from this process (no work pool, no worker) until Ctrl-C."""
        from deployments.serve import DeploymentError, serve_all

        settings = _settings(config, param, smoke)
        try:
            serve_all(settings, limit=limit, only=only)
        except (DeploymentError, ConfigError) as e:
            _fail(str(e), 2)

    dir_opt = typer.Option(Path(".driftloop/stack"), "--dir", help="Where the servers keep their data, logs and state.json.")

    @app.command()
    def up(stack_dir: Path = dir_opt,
           prefect_port: int = typer.Option(4200, "--prefect-port"), s3_port: int = typer.Option(8333, "--s3-port"),
           bucket: str = typer.Option("driftloop", "--bucket"), as_json: bool = JsonOpt) -> None:
        """Start a local Prefect server and a SeaweedFS S3 on 127.0.0.1 (data under --dir); print the UI URL and env."""
        from deployments.stack import StackError, stack_env, stack_up

        try:
            state = stack_up(stack_dir, prefect_port, s3_port, bucket)
        except (StackError, DriftloopError) as e:
            _fail(str(e), 1)
        env = state.get("env") or stack_env(state)
        if as_json:
            _print_json(dict(state, env=env))
            return
        typer.echo(("already running" if state.get("already_running") else "started") +
                   f": Prefect server (pid {state['prefect']['pid']}) and SeaweedFS S3 (pid {state['seaweedfs']['pid']}), "
                   f"data under {state['stack_dir']}")
        typer.echo(f"Prefect UI: {state['prefect']['ui_url']}")
        typer.echo(f"S3 endpoint: {state['seaweedfs']['endpoint_url']} (bucket {state['bucket']})")
        typer.echo(f"\nexport these (or: source {Path(state['stack_dir']) / 'env.sh'}):")
        for k, v in env.items():
            typer.echo(f"export {k}={v}")
        typer.echo("\nthen: driftloop deploy && driftloop serve     # stop with: driftloop down")

    @app.command()
    def down(stack_dir: Path = dir_opt, as_json: bool = JsonOpt) -> None:
        """Stop the servers `driftloop up` started (by their recorded process groups); their data stays."""
        from deployments.stack import StackError, stack_down

        try:
            res = stack_down(stack_dir)
        except StackError as e:
            _fail(str(e), 1)
        if as_json:
            _print_json(res)
        else:
            typer.echo(f"stopped: {', '.join(res['stopped']) or 'nothing was running'} ({res['stack_dir']})")

    artifacts_app = typer.Typer(help="List and fetch the objects of stored runs (sha256-verified).", no_args_is_help=True)
    app.add_typer(artifacts_app, name="artifacts")

    @artifacts_app.command("ls")
    def artifacts_ls(run: Optional[str] = typer.Argument(None, help="A run id: list its objects (default: list runs)."),
                     kind: Optional[str] = typer.Option(None, "--kind", help="Only runs of this kind (training, drift, ...)."),
                     config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt, as_json: bool = JsonOpt) -> None:
        """List committed runs, or one run's objects with size and sha256."""
        from tasks.store.artifacts import ArtifactStore

        settings = _settings(config, param, False)
        try:
            store = ArtifactStore.from_config(settings.store)
            if run is None:
                runs = store.list_runs(kind)
                if as_json:
                    _print_json({"store": settings.store.uri, "runs": runs})
                else:
                    for r in runs:
                        typer.echo(r)
                    if not runs:
                        typer.echo(f"no runs in {settings.store.uri}: run `driftloop run training`", err=True)
                return
            objects = store.manifest(run).get("objects", {})
        except DriftloopError as e:
            _fail(str(e), 1)
        if as_json:
            _print_json({"run_id": run, "objects": objects})
            return
        for name, entry in sorted(objects.items()):
            typer.echo(f"{entry.get('size', 0):>12}  {str(entry.get('sha256', ''))[:16]}  {name}")

    @artifacts_app.command("get")
    def artifacts_get(run: str = typer.Argument(..., help="Run id."), name: str = typer.Argument(..., help="Object name."),
                      out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here (default: stdout)."),
                      config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt) -> None:
        """Fetch one object of a run, verified against the run's manifest."""
        import sys

        from tasks.store.artifacts import ArtifactStore

        settings = _settings(config, param, False)
        try:
            store = ArtifactStore.from_config(settings.store)
            if out is not None:
                store.get_file(run, name, out)
                typer.echo(f"wrote {out}", err=True)
                return
            data = store.get_bytes(run, name)
        except DriftloopError as e:
            _fail(str(e), 1)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    @artifacts_app.command("gc")
    def artifacts_gc(older_than_hours: float = typer.Option(24.0, "--older-than-hours", min=0.0,
                                                            help="Only runs started at least this long ago "
                                                                 "(longer than your longest run)."),
                     dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
                     config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt, as_json: bool = JsonOpt) -> None:
        """Delete the objects of runs that never committed (killed before their manifest)."""
        from tasks.store.artifacts import ArtifactStore

        settings = _settings(config, param, False)
        try:
            report = ArtifactStore.from_config(settings.store).collect_garbage(min_age_s=older_than_hours * 3600.0,
                                                                               dry_run=dry_run)
        except DriftloopError as e:
            _fail(str(e), 1)
        if as_json:
            _print_json(report)
            return
        verb = "would delete" if dry_run else "deleted"
        for r in report["runs"]:
            n = len(r["objects"]) if dry_run else r["objects_deleted"]
            typer.echo(f"{verb} {n} objects of {r['run_id']} (no manifest, started {r['age_s'] / 3600:.1f} h ago)")
        for rid in report["committed_meanwhile"]:
            typer.echo(f"skipped {rid}: committed while collecting")
        for r in report.get("referenced_by_registry", []):
            typer.echo(f"kept {r['run_id']}: no manifest, but the registry references it ({', '.join(r['versions'])}); "
                       "restore its manifest (or roll back) instead", err=True)
        if not report["runs"]:
            typer.echo(f"no orphaned runs older than {older_than_hours:g} h in {settings.store.uri}")

    @app.command("hyperband-plan")
    def hyperband_plan(max_t: Optional[int] = typer.Option(None, "--max-t", "-R", help="Max epochs per configuration (default: tuning.max_t)."),
                       eta: Optional[int] = typer.Option(None, "--eta", help="Reduction factor (default: tuning.eta)."),
                       config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt, smoke: bool = SmokeOpt,
                       as_json: bool = JsonOpt) -> None:
        """Print Hyperband's brackets (Li et al. 2018, Algorithm 1) and Ray Tune's for R and eta."""
        from tasks.tuning.cli import format_plan

        settings = _settings(config, param, smoke)
        try:
            # `is None`, not `or`: an explicit --max-t 0 or --eta 0 is an error, not the default.
            typer.echo(format_plan(settings.tuning.max_t if max_t is None else max_t,
                                   settings.tuning.eta if eta is None else eta, as_json))
        except ConfigError as e:
            _fail(str(e), 2)

    @app.command("simulate-stream")
    def simulate_stream(out: str = typer.Option(..., "--out", help="Directory, file:// or s3:// prefix for the batches."),
                        kind: str = typer.Option("gaussian_noise", "--kind", help="Drift kind (none, gaussian_noise, rotation, ...)."),
                        onset: int = typer.Option(60, "--onset", help="First drifted batch."),
                        duration: int = typer.Option(20, "--duration", help="Drifted batches."),
                        batches: int = typer.Option(100, "--batches"), batch_size: int = typer.Option(100, "--batch-size"),
                        severity: float = typer.Option(1.0, "--severity"),
                        seed: Optional[int] = typer.Option(None, "--seed", help="Default: derived from the config's seed."),
                        config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt,
                        as_json: bool = JsonOpt) -> None:
        """Write a simulated labelled batch stream with drift from --onset for --duration batches."""
        from tasks.drift.cli import simulate_stream_command

        settings = _settings(config, param, False)
        try:
            manifest = simulate_stream_command(out, kind=kind, onset=onset, duration=duration, batches=batches,
                                               batch_size=batch_size, severity=severity, seed=seed, settings=settings)
        except ConfigError as e:
            _fail(str(e), 2)
        except DriftloopError as e:
            _fail(str(e), 1)
        if as_json:
            _print_json(manifest)
        else:
            typer.echo(f"wrote {batches} batches ({kind}, onset {onset}, duration {duration}) to {out}")
