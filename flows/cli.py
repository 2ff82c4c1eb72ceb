"""The ``driftloop`` command line: run flows, validate batches, inspect and move the registry.

Exit codes: 0 success; 1 the work ran and failed (a batch failed validation, a flow failed);
2 bad usage or configuration (unknown flow, malformed config, bad parameter); 3 ``run drift-check``
ran but quarantined some batches (they got no drift verdict: see the summary and the
``driftloop.data.quarantined`` event).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from tasks.errors import ConfigError, DriftloopError
from tasks.ray_security import enable_token_auth

app = typer.Typer(help="driftloop: an MLOps loop on Prefect (validate, tune, federate, harden, watch drift, retrain).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Inspect the model registry and move the champion.", no_args_is_help=True)
app.add_typer(models_app, name="models")

FLOWS = ("training", "drift-check", "retraining")

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML or YAML config file (DRIFTLOOP_CONFIG also works).")
ParamOpt = typer.Option(None, "--param", "-p", help="Override a config key: -p training.epochs=5 (value parsed as JSON).")
SmokeOpt = typer.Option(False, "--smoke", help="Use the smoke profile: tiny budgets, finishes in well under a minute.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON output.")


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _parse_params(params: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in params or []:
        if "=" not in p:
            _fail(f"--param {p!r}: expected key.path=value, e.g. --param training.epochs=5")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _settings(config: Optional[Path], params: list[str] | None, smoke: bool):
    from tasks.settings import load_settings

    try:
        return load_settings(config_file=config, profile="smoke" if smoke else None, overrides=_parse_params(params))
    except ConfigError as e:
        _fail(str(e))


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.command()
def run(flow: str = typer.Argument(..., help=f"The flow to run: {', '.join(FLOWS)}."),
        config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt, smoke: bool = SmokeOpt,
        as_json: bool = JsonOpt) -> None:
    """Run a flow in this process (an ephemeral Prefect API, or PREFECT_API_URL's server)."""
    if flow not in FLOWS:
        _fail(f"unknown flow {flow!r}; choose one of: {', '.join(FLOWS)}")
    settings = _settings(config, param, smoke)
    from flows.ephemeral_server import start_tied_ephemeral_server

    # A temporary Prefect server (no PREFECT_API_URL) that stops when this command dies, even by SIGKILL.
    start_tied_ephemeral_server()
    try:
        if flow == "training":
            from flows.training import training

            result = training(settings)
        elif flow == "drift-check":
            from flows.drift_check import drift_check

            result = drift_check(settings)
        else:
            from flows.retraining import retraining

            result = retraining(settings)
    except ConfigError as e:  # found by the flow's preflight: still a configuration error
        _fail(str(e), 2)
    except DriftloopError as e:
        _fail(str(e), 1)
    if as_json:
        _print_json({k: v for k, v in result.items() if k != "summary"})
    else:
        typer.echo(result.get("summary", json.dumps(result, indent=2, default=str)))
    if flow == "drift-check" and result.get("quarantined"):
        raise typer.Exit(3)  # some batches quarantined (documented above)


@app.command()
def validate(data: str = typer.Option(..., "--data", help="Batch file: a path or file:// / s3:// URI (npz, parquet, csv)."),
             config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt, as_json: bool = JsonOpt) -> None:
    """Validate a batch against the current champion's schema. Exit 0 when it passes, 1 when it fails."""
    settings = _settings(config, param, False)
    from tasks.data.validation import load_batch_from_uri, validate_batch
    from tasks.models.registration import load_schema, open_registry

    try:
        store, registry = open_registry(settings)
        champion = registry.champion()
        if champion is None:
            _fail(f"no champion for model {settings.registry.model_name!r} in {settings.store.uri}: "
                  "run `driftloop run training` first", 1)
        schema = load_schema(store, champion)
        ds, _raw, report = load_batch_from_uri(data, settings.store, settings.data.label_column)
        if report is None:
            report = validate_batch(ds, schema, settings.data.validation, batch_id=Path(data).name, source=data)
    except DriftloopError as e:
        _fail(str(e), 1)
    if as_json:
        typer.echo(report.to_json())
    else:
        typer.echo(report.to_text())
    raise typer.Exit(0 if report.passed else 1)


@models_app.command("list")
def models_list(config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt, as_json: bool = JsonOpt) -> None:
    """Versions, their metrics and which one is champion."""
    from tasks.models.registration import open_registry

    settings = _settings(config, param, False)
    try:
        _, registry = open_registry(settings)
        versions = registry.versions()
        champ = registry.champion()
    except DriftloopError as e:
        _fail(str(e), 1)
    cv = champ["version"] if champ else None
    if as_json:
        _print_json({"model": settings.registry.model_name, "champion": cv, "versions": versions})
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{settings.registry.model_name} ({settings.store.uri})")
    for col in ("version", "champion", "run", "created", "test_accuracy", "robust_accuracy"):
        t.add_column(col)
    for v in versions:
        m = v.get("metrics", {})
        t.add_row(str(v["version"]), "*" if v["version"] == cv else "", v["run_id"], str(v.get("created_at", ""))[:19],
                  f"{m['test_accuracy']:.4f}" if "test_accuracy" in m else "",
                  f"{m['robust_accuracy']:.4f}" if "robust_accuracy" in m else "")
    Console().print(t)
    if not versions:
        typer.echo("no versions yet: run `driftloop run training`")


@models_app.command("show")
def models_show(version: Optional[int] = typer.Argument(None, help="Version (default: the champion)."),
                verify: bool = typer.Option(False, "--verify", help="Check every object's sha256 against the "
                                            "manifest; exit 1 when any fails."),
                config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt) -> None:
    """One version's record and its run manifest (JSON); with --verify its integrity too."""
    from tasks.models.registration import open_registry

    settings = _settings(config, param, False)
    integrity = None
    try:
        store, registry = open_registry(settings)
        rec = registry.get(version) if version is not None else registry.champion()
        if rec is None:
            _fail("no champion yet", 1)
        if verify:
            integrity = registry.verify(rec["version"])
        try:
            manifest = store.manifest(rec["run_id"])
        except DriftloopError as e:
            if integrity is None:
                raise
            manifest = f"unreadable: {e}"
        _print_json({"version": rec, "manifest": manifest, **({"integrity": integrity} if verify else {})})
    except DriftloopError as e:
        _fail(str(e), 1)
    if integrity is not None and not integrity["ok"]:
        _fail(f"version {rec['version']} fails verification: see \"integrity\" above", 1)


@models_app.command("promote")
def models_promote(version: int = typer.Argument(..., help="Version to make champion."),
                   reason: str = typer.Option("manual promotion", "--reason"),
                   config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt) -> None:
    """Make VERSION the champion (recorded in the history)."""
    from tasks.models.registration import open_registry

    settings = _settings(config, param, False)
    try:
        entry = open_registry(settings)[1].promote(version, reason)
    except DriftloopError as e:
        _fail(str(e), 1)
    if not entry.get("changed", True):
        typer.echo(f"version {version} is already the champion of {settings.registry.model_name}: nothing changed "
                   f"(--reason {reason!r} not recorded)")
        return
    typer.echo(f"champion of {settings.registry.model_name} is now version {version}")
    _print_json(entry)


@models_app.command("rollback")
def models_rollback(to: Optional[int] = typer.Option(None, "--to", help="Version to roll back to (default: the previous champion)."),
                    reason: str = typer.Option("manual rollback", "--reason"),
                    config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt) -> None:
    """Make an earlier version champion again."""
    from tasks.models.registration import open_registry

    settings = _settings(config, param, False)
    try:
        entry = open_registry(settings)[1].rollback(to, reason)
    except DriftloopError as e:
        _fail(str(e), 1)
    if not entry.get("changed", True):
        typer.echo(f"version {entry['champion']} is already the champion of {settings.registry.model_name}: "
                   f"nothing changed (--reason {reason!r} not recorded)")
        return
    typer.echo(f"rolled back {settings.registry.model_name}")
    _print_json(entry)


@models_app.command("repair")
def models_repair(dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be rebuilt; write nothing."),
                  config: Optional[Path] = ConfigOpt, param: Optional[list[str]] = ParamOpt) -> None:
    """Rebuild a corrupt champion pointer from the append-only history; list damaged version records."""
    from tasks.models.registration import open_registry

    settings = _settings(config, param, False)
    try:
        report = open_registry(settings)[1].repair(dry_run=dry_run)
    except DriftloopError as e:
        _fail(str(e), 1)
    _print_json(report)
    integrity = report.get("champion_integrity")
    if report["repaired"]:
        typer.echo(f"rebuilt the champion pointer of {settings.registry.model_name}: champion is version "
                   f"{report['champion']}", err=True)
    if report["damaged_versions"] or (integrity and not integrity["ok"]):
        _fail("damage remains (see damaged_versions / champion_integrity): restore those records from a backup, "
              "or `driftloop models rollback`", 1)


from flows.cli_ops import register; register(app)  # noqa: E402,E702
from flows.cli_federated import register as _register_federated; _register_federated(app)  # noqa: E402,E702
from flows.cli_predict import register as _register_predict; _register_predict(app)  # noqa: E402,E702


def prepare_environment() -> None:
    """Process-wide defaults, set before anything imports Prefect or Ray; a user's own settings win."""
    # Quiet, local defaults for a laptop run.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # The ephemeral API server can take longer than Prefect's 20 s default on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # `driftloop serve` polls for scheduled and triggered runs every 2 s, not Prefect's 10 s: a drift
    # event's retraining starts in ~6 s instead of ~14 s (benchmarks/drift_to_retrain_latency.py).
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")
    # Heartbeats every 30 s (Prefect's minimum; its default is 180): the crash detector that
    # `driftloop deploy` / `serve` install marks a run Crashed after 3 missed ones.
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    # Token authentication for any local Ray this process (or a child) starts: Ray reads it once,
    # at import, so it must be in the environment before then (tasks/ray_security.py).
    enable_token_auth()


def main() -> None:
    prepare_environment()
    try:
        app()
    except ConfigError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
