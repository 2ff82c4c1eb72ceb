"""``driftloop artifacts``: list and fetch the objects of stored runs (sha256-verified), collect orphans."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, JsonOpt, ParamOpt, exits, load, print_json

app = typer.Typer(help="List and fetch the objects of stored runs (sha256-verified).", no_args_is_help=True)


def _store(settings):
    from tasks.store.artifacts import ArtifactStore

    return ArtifactStore.from_config(settings.store)


@app.command("ls")
@exits(usage=1)
def artifacts_ls(
    run: Optional[str] = typer.Argument(None, help="A run id: list its objects (default: list runs)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only runs of this kind (training, drift, ...)."),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List committed runs, or one run's objects with size and sha256."""
    settings = load(config, param)
    store = _store(settings)
    if run is None:
        runs = store.list_runs(kind)
        if as_json:
            print_json({"store": settings.store.uri, "runs": runs})
        else:
            for r in runs:
                typer.echo(r)
            if not runs:
                typer.echo(f"no runs in {settings.store.uri}: run `driftloop run training`", err=True)
        return
    objects = store.manifest(run).get("objects", {})
    if as_json:
        print_json({"run_id": run, "objects": objects})
        return
    for name, entry in sorted(objects.items()):
        typer.echo(f"{entry.get('size', 0):>12}  {str(entry.get('sha256', ''))[:16]}  {name}")


@app.command("get")
@exits(usage=1)
def artifacts_get(
    run: str = typer.Argument(..., help="Run id."),
    name: str = typer.Argument(..., help="Object name."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here (default: stdout)."),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
) -> None:
    """Fetch one object of a run, verified against the run's manifest."""
    store = _store(load(config, param))
    if out is not None:
        store.get_file(run, name, out)
        typer.echo(f"wrote {out}", err=True)
        return
    data = store.get_bytes(run, name)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@app.command("gc")
@exits(usage=1)
def artifacts_gc(
    older_than_hours: float = typer.Option(
        24.0,
        "--older-than-hours",
        min=0.0,
        help="Only runs started at least this long ago (longer than your longest run).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Delete the objects of runs that never committed (killed before their manifest)."""
    settings = load(config, param)
    from tasks.store.gc import collect_garbage

    report = collect_garbage(_store(settings), min_age_s=older_than_hours * 3600.0, dry_run=dry_run)
    if as_json:
        print_json(report)
        return
    verb = "would delete" if dry_run else "deleted"
    for r in report["runs"]:
        n = len(r["objects"]) if dry_run else r["objects_deleted"]
        typer.echo(f"{verb} {n} objects of {r['run_id']} (no manifest, started {r['age_s'] / 3600:.1f} h ago)")
    for rid in report["committed_meanwhile"]:
        typer.echo(f"skipped {rid}: committed while collecting")
    for r in report.get("referenced_by_registry", []):
        typer.echo(
            f"kept {r['run_id']}: no manifest, but the registry references it ({', '.join(r['versions'])}); "
            "restore its manifest (or roll back) instead",
            err=True,
        )
    if not report["runs"]:
        typer.echo(f"no orphaned runs older than {older_than_hours:g} h in {settings.store.uri}")
