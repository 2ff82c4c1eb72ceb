"""The training pipeline's stages (composition only): each calls its concern's Prefect tasks in
order and hands on a small typed value; the decisions are in the concerns' pure modules.

The optional stages' task modules are imported when their stage is on, so a run with tuning,
federated learning or hardening switched off never imports Ray or Flower.
"""

from __future__ import annotations

from typing import Any, cast

from tasks.adversarial.scale import attack_scale
from tasks.data import steps as data_steps
from tasks.data.dataset import Splits
from tasks.data.handoffs import PreparedData, evidence_rules
from tasks.data.sources import concat_datasets, is_file_source
from tasks.data.splits import SPLIT_IDS_NAME, SplitIds
from tasks.drift import steps as drift_steps
from tasks.federated.outcome import FederatedOutcome
from tasks.models import steps as model_steps
from tasks.models.auto import resolve_for_data
from tasks.models.gate import GateDecision
from tasks.models.handoffs import Champion, Evaluation, RegisteredModel, warm_start_compatible
from tasks.models.trained import TrainedModel, num_classes_of
from tasks.settings import Settings
from tasks.store.codecs import state_dict_to_bytes
from tasks.ui import run_logger


def load_champion(settings: Settings) -> Champion:
    """The registry's champion, its schema and the rows its lineage trained on."""
    record = model_steps.get_champion(settings)
    if record is None:
        return Champion()
    schema = model_steps.champion_schema(settings, record)
    return Champion(record, schema)


def prepare_data(settings: Settings, champion: Champion, extra_batches: list[str]) -> PreparedData:
    """Load, validate (quarantining a failing file), add the extra batches, split, infer the schema."""
    dataset = data_steps.load_data(settings.data, settings.store)
    # Defaults that follow the data (model.arch="auto"); an explicit choice the data cannot fit
    # fails here, naming the key, before any stage runs.
    settings = resolve_for_data(settings, dataset.sample_shape)
    # Rows the champion's lineage trained on never enter the test split the gate scores it on.
    if champion.record is not None:
        champion.trained_rows = model_steps.champion_trained_rows(settings, champion.record)
    # Validate against the champion's schema when there is one, else the schema of this data's
    # training split (which still catches NaN/inf, bad labels, duplicates, unreadable files).
    own_schema = data_steps.infer_schema_task(
        data_steps.split_data(dataset, settings.seed, settings.data, champion.trained_rows).train
    )
    schema = champion.schema or own_schema
    # The loaded data are validated in memory; a failing file's raw bytes are then read and
    # quarantined byte for byte (a passing file is never held twice).
    raw_uri = settings.data.source if is_file_source(settings.data.source) else None
    dataset = data_steps.validate_or_quarantine(
        dataset,
        schema,
        settings.data.validation,
        settings.store,
        label_column=settings.data.label_column,
        raw_uri=raw_uri,
    ).dataset
    extra_rules = evidence_rules(settings.data.validation, settings.drift.validate_shift)
    for uri in extra_batches:
        # Each added batch must pass too; a bad one is quarantined and the run stops.
        batch = data_steps.validate_or_quarantine(
            uri, schema, extra_rules, settings.store, label_column=settings.data.label_column, distribution="evidence"
        )
        dataset = concat_datasets(dataset, batch.dataset)
    splits = data_steps.split_data(dataset, settings.seed, settings.data, champion.trained_rows)
    return PreparedData(settings, splits, data_steps.infer_schema_task(splits.train))


def warm_start(settings: Settings, champion: Champion, splits: Splits) -> TrainedModel | None:
    """The champion's model to start from, when its architecture fits the configured one."""
    if champion.record is None:
        return None
    initial = model_steps.load_champion_model(settings, champion.record)
    k = num_classes_of(splits.train.y, splits.val.y, splits.test.y)
    if not warm_start_compatible(initial, settings.model, splits.train.sample_shape, k):
        run_logger().info("champion's architecture differs from the configured one: training from scratch")
        return None
    return initial


def federate(
    settings: Settings, splits: Splits, champion: Champion, initial: TrainedModel | None
) -> tuple[TrainedModel, FederatedOutcome]:
    """Federated training (Flower) from ``initial`` or from scratch."""
    from tasks.federated import steps as fed_steps

    parent = {"model": settings.registry.model_name, "version": champion.version} if champion.record else None
    outcome = FederatedOutcome.from_dict(
        fed_steps.federate(splits, settings, initial_weights=initial.weights if initial else None, parent_model=parent)
    )
    return TrainedModel(outcome.model_spec, outcome.weights, {}, origin="federate"), outcome


def harden(settings: Settings, model: TrainedModel, prepared: PreparedData) -> tuple[TrainedModel, dict[str, Any]]:
    """Adversarial fine-tuning; the hardened model and the hardening result (for the manifest)."""
    from tasks.adversarial import steps as adv_steps

    splits = prepared.splits
    module = model.module()
    hardened = adv_steps.harden_model(
        module, splits.train, splits.val, settings, None, None, _k(splits), scale=_scale(prepared)
    )
    return TrainedModel(
        model.spec, state_dict_to_bytes(module), model.history, origin="harden"
    ), hardened.result.as_dict()


def evaluate(settings: Settings, model: TrainedModel, prepared: PreparedData, champion: Champion) -> Evaluation:
    """Candidate and champion on the same test split (robust evaluation too with hardening on)."""
    splits = prepared.splits
    ev = Evaluation(dict(model_steps.evaluate_model(model, splits, settings, "candidate")["metrics"]))
    champion_model = None
    if champion.record is not None:
        champion_model = model_steps.load_champion_model(settings, champion.record)
        if champion_model.spec["in_shape"] == model.spec["in_shape"]:
            ev.champion_metrics = dict(
                model_steps.evaluate_model(champion_model, splits, settings, "champion")["metrics"]
            )
    if settings.adversarial.enabled:
        from tasks.adversarial import steps as adv_steps
        from tasks.adversarial.report import robust_metrics

        k, scale = _k(splits), _scale(prepared)
        ev.robust = adv_steps.robust_evaluate(
            model.module(), splits.test, settings, None, None, k, "candidate", scale=scale
        ).evaluation
        ev.metrics.update(robust_metrics(ev.robust.summary()))
        if ev.champion_metrics is not None and champion_model is not None:
            ev.champion_robust = adv_steps.robust_evaluate(
                champion_model.module(), splits.test, settings, None, None, k, "champion", scale=scale
            ).evaluation
            ev.champion_metrics.update(robust_metrics(ev.champion_robust.summary()))
    return ev


def gate(settings: Settings, ev: Evaluation, splits: Splits, champion: Champion) -> GateDecision:
    """With hardening on, robustness is part of promotion (clean within tolerance, robust not lower);
    then a candidate that cannot be right is refused whatever the comparison said."""
    if settings.adversarial.enabled:
        from tasks.adversarial import steps as adv_steps

        decision = adv_steps.robustness_gate(ev.robust, ev.champion_robust, settings)
    else:
        decision = model_steps.accuracy_gate(ev.metrics, ev.champion_metrics, settings)
    decision = model_steps.sanity_gate(decision, splits, ev.metrics, champion.labels, settings)
    run_logger().info("gate: %s (%s)", "promote" if decision.promote else "keep champion", decision.reason)
    return decision


def register(
    settings: Settings,
    model: TrainedModel,
    prepared: PreparedData,
    ev: Evaluation,
    champion: Champion,
    warm_started: bool,
    trigger: dict,
    extras: dict[str, Any],
) -> RegisteredModel:
    """Store the candidate with its drift reference and trained-on row ids; add a registry version."""
    splits = prepared.splits
    # The drift reference is stored beside the weights, so a promoted model always has one.
    files = drift_steps.reference_files_for(model, splits, settings)
    # The rows this model's lineage trained on (a warm start inherits the champion's), for the next gate.
    ids = cast(SplitIds, splits.ids)
    files[SPLIT_IDS_NAME] = ids.with_inherited(champion.trained_rows if warm_started else None).to_npz_bytes()
    return RegisteredModel.from_dict(
        model_steps.register_candidate(
            settings,
            model,
            prepared.schema,
            splits,
            ev.metrics,
            extras,
            parent=champion.record,
            trigger=trigger,
            extra_files=files,
        )
    )


def _k(splits: Splits) -> int:
    return num_classes_of(splits.train.y, splits.val.y, splits.test.y)


def _scale(prepared: PreparedData):
    # Epsilon is a fraction of each feature's training range (tasks/adversarial/scale.py).
    s = prepared.splits
    return attack_scale(prepared.schema, s.train.x, s.val.x, s.test.x)
