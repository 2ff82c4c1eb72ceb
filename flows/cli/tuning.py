"""``driftloop hyperband-plan``: Hyperband's brackets for R and eta (tasks/tuning/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, JsonOpt, ParamOpt, SmokeOpt, exits, load

app = typer.Typer()


@app.command("hyperband-plan")
@exits()
def hyperband_plan(
    max_t: Optional[int] = typer.Option(
        None, "--max-t", "-R", help="Max epochs per configuration (default: tuning.max_t)."
    ),
    eta: Optional[int] = typer.Option(None, "--eta", help="Reduction factor (default: tuning.eta)."),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
    smoke: bool = SmokeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print Hyperband's brackets (Li et al. 2018, Algorithm 1) and Ray Tune's for R and eta."""
    from tasks.tuning.cli import format_plan

    settings = load(config, param, smoke)
    # `is None`, not `or`: an explicit --max-t 0 or --eta 0 is an error, not the default.
    max_t = settings.tuning.max_t if max_t is None else max_t
    eta = settings.tuning.eta if eta is None else eta
    typer.echo(format_plan(max_t, eta, as_json))
