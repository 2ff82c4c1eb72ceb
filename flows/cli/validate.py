"""``driftloop validate``: a batch against the current champion's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, JsonOpt, ParamOpt, exits, fail, load

app = typer.Typer()


@app.command()
@exits(usage=1)
def validate(
    data: str = typer.Option(..., "--data", help="Batch file: a path or file:// / s3:// URI (npz, parquet, csv)."),
    config: Optional[Path] = ConfigOpt,
    param: Optional[list[str]] = ParamOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Validate a batch against the current champion's schema. Exit 0 when it passes, 1 when it fails."""
    settings = load(config, param)
    from tasks.data.validation import load_batch_from_uri, validate_batch
    from tasks.models.registration import load_schema, open_registry

    store, registry = open_registry(settings)
    champion = registry.champion()
    if champion is None:
        fail(
            f"no champion for model {settings.registry.model_name!r} in {settings.store.uri}: "
            "run `driftloop run training` first",
            1,
        )
    schema = load_schema(store, champion)
    ds, _raw, report = load_batch_from_uri(data, settings.store, settings.data.label_column)
    if report is None:
        assert ds is not None  # no refusal report: the batch was read
        report = validate_batch(ds, schema, settings.data.validation, batch_id=Path(data).name, source=data)
    typer.echo(report.to_json() if as_json else report.to_text())
    raise typer.Exit(0 if report.passed else 1)
