"""``driftloop simulate-stream``: a labelled batch stream with drift (tasks/drift/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, JsonOpt, ParamOpt, exits, load, print_json

app = typer.Typer()


@app.command("simulate-stream")
@exits()
def simulate_stream(
    out: str = typer.Option(..., "--out", help="Directory, file:// or s3:// prefix for the batches."),
    kind: str = typer.Option("gaussian_noise", "--kind", help="Drift kind (none, gaussian_noise, rotation, ...)."),
    onset: int = typer.Option(60, "--onset", help="First drifted batch."),
    duration: int = typer.Option(20, "--duration", help="Drifted batches."),
    batches: int = typer.Option(100, "--batches"),
    batch_size: int = typer.Option(100, "--batch-size"),
    severity: float = typer.Option(1.0, "--severity"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Default: derived from the config's seed."),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a simulated labelled batch stream with drift from --onset for --duration batches."""
    from tasks.drift.cli import simulate_stream_command

    settings = load(config, param)
    manifest = simulate_stream_command(
        out,
        kind=kind,
        onset=onset,
        duration=duration,
        batches=batches,
        batch_size=batch_size,
        severity=severity,
        seed=seed,
        settings=settings,
    )
    if as_json:
        print_json(manifest)
    else:
        typer.echo(f"wrote {batches} batches ({kind}, onset {onset}, duration {duration}) to {out}")
