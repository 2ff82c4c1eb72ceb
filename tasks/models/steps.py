"""Prefect tasks for plain training and evaluation: thin wrappers over tasks.models.trained."""

from __future__ import annotations

import sys

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.dataset import Splits
from tasks.data.schema import Schema
from tasks.data.steps import IO_RETRY
from tasks.models.gate import GateDecision, apply_sanity, candidate_facts, sanity_rules
from tasks.models.gate import accuracy_gate as decide_on_accuracy
from tasks.models.report import learning_curve_png, metrics_rows
from tasks.models.trained import TrainedModel, evaluate_candidate, num_classes_of, train_candidate
from tasks.settings import Settings
from tasks.ui import publish_image, publish_table, run_logger


def _progress(total: int, label: str):
    """A rich progress bar on a terminal; None otherwise (logs carry the progress)."""
    if not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        transient=True,
    )
    return p


@task(name="train", cache_policy=NO_CACHE)
def train_model(splits: Splits, settings: Settings, initial: TrainedModel | None = None) -> TrainedModel:
    """Train on the training split, validating every epoch; learning curve published as an image."""
    log = run_logger()
    k = num_classes_of(splits.train.y, splits.val.y, splits.test.y)
    bar = _progress(settings.training.epochs, "training")
    tid = bar.add_task("train", total=settings.training.epochs, info="") if bar else None

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        log.info(
            "epoch %d/%d train_loss=%.4f val_loss=%.4f val_accuracy=%.4f",
            epoch,
            settings.training.epochs,
            m["train_loss"],
            m["val_loss"],
            m["val_accuracy"],
        )
        if bar:
            bar.update(tid, advance=1, info=f"val_acc={m['val_accuracy']:.3f}")

    if bar:
        bar.start()
    try:
        model = train_candidate(
            splits.train.x,
            splits.train.y,
            splits.val.x,
            splits.val.y,
            settings.model,
            settings.training,
            settings.seed,
            k,
            initial,
            on_epoch,
        )
    finally:
        if bar:
            bar.stop()
    publish_image(
        "training-learning-curve",
        learning_curve_png(model.history, "training: learning curve"),
        "Learning curve of plain training (loss and validation accuracy per epoch)",
    )
    return model


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_model(model: TrainedModel, splits: Splits, settings: Settings, label: str = "candidate") -> dict:
    """Test-split loss, accuracy, per-class accuracy and confusion matrix of ``model``."""
    ev = evaluate_candidate(model, splits.test.x, splits.test.y, settings.training.device)
    metrics = {"test_loss": ev.loss, "test_accuracy": ev.accuracy}
    publish_table(
        f"{label}-test-metrics",
        metrics_rows(metrics)
        + [{"metric": f"class_{c}_accuracy", "value": round(a, 6)} for c, a in ev.per_class_accuracy.items()],
        f"Test-split metrics of the {label}",
    )
    return {"metrics": metrics, "per_class_accuracy": ev.per_class_accuracy, "confusion": ev.confusion, "n": ev.n}


# Registry I/O: retried, since the store may be remote, but only for transient failures (IO_RETRY).
_IO = dict(**IO_RETRY, cache_policy=NO_CACHE)


@task(name="get-champion", **_IO)
def get_champion(settings: Settings) -> dict | None:
    from tasks.models.registration import open_registry

    return open_registry(settings)[1].champion()


@task(name="champion-schema", **_IO)
def champion_schema(settings: Settings, champion: dict) -> Schema:
    from tasks.models.registration import load_schema, open_registry

    return load_schema(open_registry(settings)[0], champion)


@task(name="champion-trained-rows", **_IO)
def champion_trained_rows(settings: Settings, champion: dict):
    """Row ids the champion's lineage trained on (None for a champion stored without them)."""
    from tasks.models.registration import load_trained_rows, open_registry

    return load_trained_rows(open_registry(settings)[0], champion)


@task(name="load-champion", **_IO)
def load_champion_model(settings: Settings, champion: dict) -> TrainedModel:
    from tasks.models.registration import load_trained, open_registry

    return load_trained(open_registry(settings)[0], champion)


@task(name="accuracy-gate", cache_policy=NO_CACHE)
def accuracy_gate(metrics: dict, champion_metrics: dict | None, settings: Settings) -> GateDecision:
    return decide_on_accuracy(metrics, champion_metrics, settings.registry.promote_tolerance)


@task(name="sanity-gate", cache_policy=NO_CACHE)
def sanity_gate(
    decision: GateDecision, splits: Splits, metrics: dict, champion_labels: list[int] | None, settings: Settings
) -> GateDecision:
    """Refuse a candidate that cannot be right (one class, dropped champion classes, too few rows,
    unreliable evaluation), whatever the comparison with the champion said."""
    facts = candidate_facts(splits, metrics, champion_labels, settings.data.classes)
    verdict = sanity_rules(facts, settings.registry.min_train_rows, settings.registry.min_test_rows)
    return apply_sanity(decision, verdict)


@task(name="register", **_IO)
def register_candidate(
    settings: Settings,
    model: TrainedModel,
    schema,
    splits: Splits,
    metrics: dict,
    extras: dict,
    parent: dict | None,
    trigger: dict,
    extra_files: dict[str, bytes] | None = None,
) -> dict:
    from prefect.runtime import task_run

    from tasks.models.registration import open_registry
    from tasks.models.registration import register_candidate as _register

    store, registry = open_registry(settings)
    # The task run's id is the same on every retry: a retry after the version record landed (its
    # response lost) finds that version instead of registering a second run.
    key = f"task-run:{task_run.id}" if task_run.id else None
    return _register(
        store,
        registry,
        settings,
        model,
        schema,
        splits,
        metrics,
        extras,
        parent,
        trigger,
        extra_files,
        idempotency_key=key,
    )


@task(name="promote", **_IO)
def promote_version(settings: Settings, version: int, reason: str, expected_champion: int | None) -> dict:
    """Promote ``version`` only if the champion is still the one the gate compared against
    (a concurrent promotion in between makes this fail with RegistryError instead of overwriting it)."""
    from tasks.models.registration import open_registry

    return open_registry(settings)[1].promote(version, reason, expected_champion=expected_champion)
