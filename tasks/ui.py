"""Publishing results where users look: Prefect UI artifacts (tables, markdown, images).

This is Prefect-layer code (pure modules never import it). Images are embedded as ``data:`` URIs,
so they show without a web server for the store; the stored PNG's key is named beside it.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Sequence

from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext


def artifact_key(*parts: object, default: str = "") -> str:
    """A Prefect artifact key from ``parts`` (joined by dashes): Prefect allows only lowercase
    letters, digits and dashes; at most 100 characters; ``default`` when nothing is left."""
    key = re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower())
    return re.sub(r"-+", "-", key).strip("-")[:100] or default


def in_prefect_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def publish_table(key: str, rows: Sequence[dict[str, Any]], description: str = "") -> None:
    if in_prefect_run():
        create_table_artifact(table=[dict(r) for r in rows], key=artifact_key(key), description=description)


def publish_markdown(key: str, markdown: str, description: str = "") -> None:
    if in_prefect_run():
        create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def publish_image(key: str, png: bytes, description: str = "") -> None:
    """An image artifact (data URI) plus a markdown artifact showing the same picture inline."""
    if not in_prefect_run():
        return
    uri = png_data_uri(png)
    create_image_artifact(image_url=uri, key=artifact_key(key), description=description)
    create_markdown_artifact(
        markdown=f"### {description or key}\n\n![{key}]({uri})\n", key=artifact_key(key, "md"), description=description
    )


def run_logger():
    """Prefect's run logger inside a flow/task run; a plain ``driftloop`` logger outside one
    (so the same code runs when a benchmark or test calls the functions directly)."""
    if in_prefect_run():
        from prefect import get_run_logger

        return get_run_logger()
    import logging

    return logging.getLogger("driftloop")
