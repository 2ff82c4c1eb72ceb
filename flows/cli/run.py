"""``driftloop run FLOW``: a flow in this process (an ephemeral Prefect API, or PREFECT_API_URL's server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, JsonOpt, ParamOpt, SmokeOpt, exits, fail, load, print_json

app = typer.Typer()

FLOWS = ("training", "drift-check", "retraining")


def _flow(name: str):
    if name == "training":
        from flows.training import training

        return training
    if name == "drift-check":
        from flows.drift_check import drift_check

        return drift_check
    from flows.retraining import retraining

    return retraining


@app.command()
@exits()  # a ConfigError found by the flow's preflight is still a configuration error (2)
def run(
    flow: str = typer.Argument(..., help=f"The flow to run: {', '.join(FLOWS)}."),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
    smoke: bool = SmokeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run a flow in this process (an ephemeral Prefect API, or PREFECT_API_URL's server)."""
    if flow not in FLOWS:
        fail(f"unknown flow {flow!r}; choose one of: {', '.join(FLOWS)}")
    settings = load(config, param, smoke)
    from flows.ephemeral_server import start_tied_ephemeral_server

    # A temporary Prefect server (no PREFECT_API_URL) that stops when this command dies, even by SIGKILL.
    start_tied_ephemeral_server()
    result = _flow(flow)(settings)
    if as_json:
        print_json({k: v for k, v in result.items() if k != "summary"})
    else:
        typer.echo(result.get("summary", json.dumps(result, indent=2, default=str)))
    if flow == "drift-check" and result.get("quarantined"):
        raise typer.Exit(3)  # some batches quarantined: they got no drift verdict
