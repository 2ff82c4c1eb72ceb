"""``driftloop predict``: the champion's predictions for a batch (tasks/drift/serving.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, JsonOpt, ParamOpt, exits, load, print_json

app = typer.Typer()


@app.command()
@exits(usage=1)
def predict(
    data: str = typer.Option(..., "--data", help="Batch file: a path or file:// / s3:// URI (npz, parquet, csv)."),
    log: bool = typer.Option(
        False,
        "--log",
        help="Also write the inputs as an unlabelled batch under drift.batches_uri (the drift check picks it up).",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the predictions CSV here instead of stdout."),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The champion's prediction and confidence per row (CSV: row,prediction,confidence). Exit 1
    when the batch cannot be predicted (no champion, unreadable, integrity violations)."""
    from tasks.drift.serving import predict as _predict

    settings = load(config, param)
    result = _predict(settings, data, log=log)
    if out is not None:
        out.write_text(result.to_csv())
    if as_json:
        print_json(result.as_dict())
    elif out is None:
        typer.echo(result.to_csv(), nl=False)
    if result.logged_uri:
        typer.echo(f"logged the inputs as {result.logged_uri}", err=True)
