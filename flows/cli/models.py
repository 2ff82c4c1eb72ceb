"""``driftloop models``: inspect the model registry and move the champion."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, JsonOpt, ParamOpt, exits, fail, load, print_json
from tasks.errors import DriftloopError

app = typer.Typer(help="Inspect the model registry and move the champion.", no_args_is_help=True)


def _registry(settings):
    from tasks.models.registration import open_registry

    return open_registry(settings)


@app.command("list")
@exits(usage=1)
def models_list(
    config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt, as_json: bool = JsonOpt
) -> None:
    """Versions, their metrics and which one is champion."""
    settings = load(config, param)
    _, registry = _registry(settings)
    versions = registry.versions()
    champ = registry.champion()
    cv = champ["version"] if champ else None
    if as_json:
        print_json({"model": settings.registry.model_name, "champion": cv, "versions": versions})
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{settings.registry.model_name} ({settings.store.uri})")
    for col in ("version", "champion", "run", "created", "test_accuracy", "robust_accuracy"):
        t.add_column(col)
    for v in versions:
        m = v.get("metrics", {})
        t.add_row(
            str(v["version"]),
            "*" if v["version"] == cv else "",
            v["run_id"],
            str(v.get("created_at", ""))[:19],
            f"{m['test_accuracy']:.4f}" if "test_accuracy" in m else "",
            f"{m['robust_accuracy']:.4f}" if "robust_accuracy" in m else "",
        )
    Console().print(t)
    if not versions:
        typer.echo("no versions yet: run `driftloop run training`")


@app.command("show")
@exits(usage=1)
def models_show(
    version: Optional[int] = typer.Argument(None, help="Version (default: the champion)."),
    verify: bool = typer.Option(
        False, "--verify", help="Check every object's sha256 against the manifest; exit 1 when any fails."
    ),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
) -> None:
    """One version's record and its run manifest (JSON); with --verify its integrity too."""
    settings = load(config, param)
    integrity = None
    store, registry = _registry(settings)
    rec = registry.get(version) if version is not None else registry.champion()
    if rec is None:
        fail("no champion yet", 1)
    if verify:
        integrity = registry.verify(rec["version"])
    try:
        manifest = store.manifest(rec["run_id"])
    except DriftloopError as e:
        if integrity is None:
            raise
        manifest = f"unreadable: {e}"  # the integrity report below says why
    print_json({"version": rec, "manifest": manifest, **({"integrity": integrity} if verify else {})})
    if integrity is not None and not integrity["ok"]:
        fail(f'version {rec["version"]} fails verification: see "integrity" above', 1)


@app.command("promote")
@exits(usage=1)
def models_promote(
    version: int = typer.Argument(..., help="Version to make champion."),
    reason: str = typer.Option("manual promotion", "--reason"),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
) -> None:
    """Make VERSION the champion (recorded in the history)."""
    settings = load(config, param)
    entry = _registry(settings)[1].promote(version, reason)
    if not entry.get("changed", True):
        typer.echo(
            f"version {version} is already the champion of {settings.registry.model_name}: nothing changed "
            f"(--reason {reason!r} not recorded)"
        )
        return
    typer.echo(f"champion of {settings.registry.model_name} is now version {version}")
    print_json(entry)


@app.command("rollback")
@exits(usage=1)
def models_rollback(
    to: Optional[int] = typer.Option(None, "--to", help="Version to roll back to (default: the previous champion)."),
    reason: str = typer.Option("manual rollback", "--reason"),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
) -> None:
    """Make an earlier version champion again."""
    settings = load(config, param)
    entry = _registry(settings)[1].rollback(to, reason)
    if not entry.get("changed", True):
        typer.echo(
            f"version {entry['champion']} is already the champion of {settings.registry.model_name}: "
            f"nothing changed (--reason {reason!r} not recorded)"
        )
        return
    typer.echo(f"rolled back {settings.registry.model_name}")
    print_json(entry)


@app.command("repair")
@exits(usage=1)
def models_repair(
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be rebuilt; write nothing."),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
) -> None:
    """Rebuild a corrupt champion pointer from the append-only history; list damaged version records."""
    settings = load(config, param)
    report = _registry(settings)[1].repair(dry_run=dry_run)
    print_json(report)
    integrity = report.get("champion_integrity")
    if report["repaired"]:
        typer.echo(
            f"rebuilt the champion pointer of {settings.registry.model_name}: champion is version {report['champion']}",
            err=True,
        )
    if report["damaged_versions"] or (integrity and not integrity["ok"]):
        fail(
            "damage remains (see damaged_versions / champion_integrity): restore those records from a backup, "
            "or `driftloop models rollback`",
            1,
        )
