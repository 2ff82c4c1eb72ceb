"""Prefect task of the federate stage: one call to ``run_federated``, then the run is stored and
shown. Artifacts: the per-round table, the partition table (labels per client), and a markdown
page with the round and partition plots (PNG as ``data:`` URIs: Prefect's (3.8.8, 3.9.1)
``create_image_artifact`` only stores a URL; ``tasks.ui.publish_image`` does both)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.dataset import Splits, fingerprint
from tasks.errors import ConfigError
from tasks.federated.baseline import central_test_accuracy
from tasks.federated.client_drift import ClientDrift
from tasks.federated.drift_verdicts import client_rows
from tasks.federated.engine import run_federated, run_federated_drift_check
from tasks.federated.publish import publish_federated
from tasks.federated.report import (
    markdown_report,
    partition_plot_png,
    partition_rows,
    round_plot_png,
    round_rows,
    validation_rows,
)
from tasks.settings import Settings
from tasks.ui import publish_image, publish_markdown, publish_table, run_logger

__all__ = ["ask_federation", "federate"]


@task(name="federate", cache_policy=NO_CACHE)
def federate(
    splits: Splits, settings: Settings, initial_weights: bytes | None = None, parent_model: Any = None
) -> dict[str, Any]:
    """Run the federated rounds (settings.federated), store the run, publish its artifacts.

    Returns ``run_id`` (the store run holding model.json/model.safetensors and every round's
    checkpoint), ``metrics`` (final global val/test accuracy and loss), ``weights`` (safetensors
    bytes of the global model, the next stage's input), ``model_spec`` and ``rounds``.
    """
    result = run_federated(settings, splits, initial_weights)
    baseline = central_test_accuracy(settings, splits) if settings.federated.central_baseline else None
    manifest = publish_federated(
        result,
        settings.store,
        config=settings.resolved(),
        data_fingerprint=fingerprint(splits.train),
        parent_model=parent_model,
        central_baseline=baseline,
    )
    publish_table(
        "federated-rounds",
        round_rows(result.rounds),
        f"{result.strategy} ({result.engine}): global model per round; round 0 is the start",
    )
    publish_table(
        "federated-validation",
        validation_rows(result.validation),
        "Federated validation: each client's data against the schema (status, rows, violated rules)",
    )
    publish_table(
        "federated-partition",
        partition_rows(result.partition),
        f"Partition '{result.partition['scheme']}': samples of each label per client",
    )
    publish_image(
        "federated-rounds-plot",
        round_plot_png(result.rounds, central_baseline=baseline),
        "Loss and accuracy per round (server-side, clients' held-out rows; central training as a line)",
    )
    publish_image("federated-partition-plot", partition_plot_png(result.partition), "Labels per client")
    publish_markdown(
        "federated-summary",
        markdown_report(result.rounds, result.partition, result.strategy, result.engine, result.validation),
        f"Federated run {manifest['run_id']}",
    )
    run_logger().info(
        "federated %s: %d rounds, final %s, stored as %s",
        result.strategy,
        len(result.rounds) - 1,
        result.final_metrics,
        manifest["run_id"],
    )
    return {
        "run_id": manifest["run_id"],
        "metrics": result.final_metrics,
        "weights": result.weights_bytes(),
        "model_spec": result.model_spec,
        "rounds": round_rows(result.rounds),
        "central_baseline_accuracy": baseline,
    }


@task(name="ask-federation-for-drift", cache_policy=NO_CACHE)
def ask_federation(settings: Settings, champion: Any, reference: Any) -> list[ClientDrift]:
    """The per-client drift report of the federation at ``federated.superlink_address``: every
    client runs ``champion`` (a TrainedModel) and ``reference``'s detectors on its new local data;
    replies are p-values and verdicts only. Published as the ``drift-federation`` table."""
    from tasks.drift.reference import reference_to_files

    if not settings.federated.superlink_address:
        raise ConfigError(
            f"drift.source = {settings.drift.source!r} asks the federation, but "
            "federated.superlink_address (the SuperLink's Control API, host:port) is not set"
        )
    replies = run_federated_drift_check(settings, champion.spec, champion.weights, reference_to_files(reference))
    publish_table(
        "drift-federation",
        client_rows(replies),
        "Federated drift check: each client's verdict and p-values on its own new data (no rows leave a node)",
    )
    return replies
