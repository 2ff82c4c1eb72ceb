"""The stage sequence shared by the training and retraining flows (composition only).

The optional stages' task modules are imported when their stage is on, so a run with tuning or
federated learning switched off never imports Ray or Flower.

load -> validate -> [tune] -> federate | train -> [harden] -> evaluate -> register -> gate/promote.
A disabled stage is skipped and the previous stage's model and configuration go on unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any



from tasks.data import steps as data_steps
from tasks.adversarial.scale import attack_scale
from tasks.data.sources import concat_datasets, is_file_source
from tasks.data.splits import SPLIT_IDS_NAME, split_summary
from tasks.drift import steps as drift_steps
from tasks.models import steps as model_steps
from tasks.models.auto import resolve_for_data
from tasks.models.serialize import model_spec, same_architecture, state_dict_to_bytes
from tasks.models.trained import TrainedModel, num_classes_of
from tasks.settings import Settings
from tasks.ui import publish_markdown, publish_table, run_logger


@dataclass
class PipelineInputs:
    """What started the run and what it adds to the configured training data."""

    trigger: dict[str, Any] = field(default_factory=lambda: {"kind": "manual"})
    # Labelled batch URIs (npz/parquet/csv) trained on together with the training data (retraining).
    extra_batches: list[str] = field(default_factory=list)
    # Start from the champion's weights when the architecture matches (retraining).
    warm_start: bool = False


def run_pipeline(settings: Settings, inputs: PipelineInputs) -> dict[str, Any]:
    log = run_logger()
    stages: list[str] = []

    # Load
    champion = model_steps.get_champion(settings)
    ref_schema = model_steps.champion_schema(settings, champion) if champion else None
    dataset = data_steps.load_data(settings.data, settings.store)
    # Defaults that follow the data (model.arch="auto"); an explicit choice the data cannot fit
    # fails here, naming the key, before any stage runs.
    settings = resolve_for_data(settings, dataset.sample_shape)
    # Rows the champion's lineage trained on never enter the test split the gate scores it on.
    champion_rows = model_steps.champion_trained_rows(settings, champion) if champion else None

    # Validate: against the champion's schema when there is one, else the schema of this data's
    # training split (which still catches NaN/inf, bad labels, duplicates, unreadable files).
    own_schema = data_steps.infer_schema_task(data_steps.split_data(dataset, settings.seed, settings.data,
                                                                    champion_rows).train)
    # The loaded data are validated in memory; a failing file's raw bytes are then read and
    # quarantined byte for byte (a passing file is never held twice).
    raw_uri = settings.data.source if is_file_source(settings.data.source) else None
    dataset = data_steps.validate_or_quarantine(dataset, ref_schema or own_schema, settings.data.validation,
                                                settings.store, label_column=settings.data.label_column,
                                                raw_uri=raw_uri).dataset
    # Drifted batches added by retraining are shifted by definition: the gross-shift rule is the
    # drift check's call (drift.validate_shift); every other rule still applies.
    extra_validation = settings.data.validation.model_copy(update={"check_shift": settings.drift.validate_shift})
    for uri in inputs.extra_batches:
        # Each added batch must pass too; a bad one is quarantined and the run stops.
        # Drifted data moves out of the training range by definition: integrity rules only.
        batch = data_steps.validate_or_quarantine(uri, ref_schema or own_schema, extra_validation,
                                                  settings.store, label_column=settings.data.label_column,
                                                  distribution="evidence")
        dataset = concat_datasets(dataset, batch.dataset)
    splits = data_steps.split_data(dataset, settings.seed, settings.data, champion_rows)
    schema = data_steps.infer_schema_task(splits.train)
    stages.append("validate")

    # Tune
    best_config: dict[str, Any] | None = None
    if settings.tuning.enabled:
        from tasks.tuning import steps as tuning_steps

        study = tuning_steps.tune_hyperparameters(splits, settings)
        best_config = study["best_config"]
        settings = tuning_steps.apply_best_config(settings, best_config)
        stages.append("tune")

    initial: TrainedModel | None = None
    if inputs.warm_start and champion is not None:
        initial = model_steps.load_champion_model(settings, champion)
        k = num_classes_of(splits.train.y, splits.val.y, splits.test.y)
        if not same_architecture(initial.spec, model_spec(settings.model, splits.train.sample_shape, k)):
            log.info("champion's architecture differs from the configured one: training from scratch")
            initial = None

    # Federate (or train centrally)
    federated: dict[str, Any] | None = None
    if settings.federated.enabled:
        from tasks.federated import steps as fed_steps

        parent_ref = {"model": settings.registry.model_name, "version": champion["version"]} if champion else None
        federated = fed_steps.federate(splits, settings, initial_weights=initial.weights if initial else None,
                                       parent_model=parent_ref)
        model = TrainedModel(federated["model_spec"], federated["weights"], {}, origin="federate")
        stages.append("federate")
    else:
        model = model_steps.train_model(splits, settings, initial)
        stages.append("train")

    # Harden
    hardening: dict[str, Any] | None = None
    lo = hi = scale = None
    k = num_classes_of(splits.train.y, splits.val.y, splits.test.y)
    if settings.adversarial.enabled:
        from tasks.adversarial import steps as adv_steps

        # Epsilon is a fraction of each feature's training range (tasks/adversarial/scale.py).
        scale = attack_scale(schema, splits.train.x, splits.val.x, splits.test.x)

        module = model.module()
        hardened = adv_steps.harden_model(module, splits.train, splits.val, settings, lo, hi, k, scale=scale)
        hardening = hardened.result.as_dict()
        model = TrainedModel(model.spec, state_dict_to_bytes(module), model.history, origin="harden")
        stages.append("harden")

    # Evaluate: candidate and champion on the same test split
    evaluation = model_steps.evaluate_model(model, splits, settings, "candidate")
    metrics = dict(evaluation["metrics"])
    champion_metrics = None
    champion_model = None
    if champion is not None:
        champion_model = model_steps.load_champion_model(settings, champion)
        if champion_model.spec["in_shape"] == model.spec["in_shape"]:
            champion_metrics = dict(model_steps.evaluate_model(champion_model, splits, settings, "champion")["metrics"])
    robust = champion_robust = None
    if settings.adversarial.enabled:
        robust = adv_steps.robust_evaluate(model.module(), splits.test, settings, lo, hi, k, "candidate",
                                           scale=scale).evaluation
        metrics.update(_robust_metrics(robust.summary()))
        if champion_metrics is not None:
            champion_robust = adv_steps.robust_evaluate(champion_model.module(), splits.test, settings, lo, hi, k,
                                                        "champion", scale=scale).evaluation
            champion_metrics.update(_robust_metrics(champion_robust.summary()))
    stages.append("evaluate")

    # Gate: with hardening on, robustness is part of promotion (clean within tolerance, robust not lower).
    if settings.adversarial.enabled:
        decision = adv_steps.robustness_gate(robust, champion_robust, settings).as_dict()
    else:
        decision = model_steps.accuracy_gate(metrics, champion_metrics, settings)
    # Sanity: a candidate that cannot be right is refused whatever the comparison said.
    decision = model_steps.sanity_gate(decision, splits, metrics, ref_schema.labels if ref_schema else None, settings)
    log.info("gate: %s (%s)", "promote" if decision["promote"] else "keep champion", decision["reason"])

    # Register
    extras = {"best_config": best_config, "stages": stages, "trigger": inputs.trigger,
              "history": model.history, "extra_batches": inputs.extra_batches,
              "federated": federated and {"run_id": federated["run_id"], "metrics": federated["metrics"],
                                          "rounds": federated["rounds"]},
              "hardening": hardening, "robust_evaluation": robust.as_dict() if robust else None, "gate": decision,
              "splits": split_summary(splits, champion_rows)}
    # The drift reference is stored beside the weights, so a promoted model always has one.
    reference_files = drift_steps.reference_files_for(model, splits, settings)
    # The rows this model's lineage trained on (a warm start inherits the champion's), for the next gate.
    reference_files[SPLIT_IDS_NAME] = splits.ids.with_inherited(champion_rows if initial is not None else None
                                                                ).to_npz_bytes()
    registered = model_steps.register_candidate(settings, model, schema, splits, metrics, extras,
                                                parent=champion, trigger=inputs.trigger, extra_files=reference_files)
    stages.append("register")
    promoted = None
    if decision["promote"]:
        promoted = model_steps.promote_version(settings, registered["version"], decision["reason"],
                                               champion["version"] if champion else None)
        stages.append("promote")

    summary = _summary(settings, registered, metrics, champion, champion_metrics, decision, stages)
    publish_table("training-metrics", [{"metric": k, "candidate": round(float(v), 6),
                                        "champion": (round(float(champion_metrics[k]), 6)
                                                     if champion_metrics and k in champion_metrics else None)}
                                       for k, v in metrics.items() if isinstance(v, (int, float))],
                  "Candidate vs champion on the same test split")
    publish_markdown("training-summary", summary, "What this run did and where its artifacts are")
    return {"run_id": registered["run_id"], "version": registered["version"], "promoted": promoted is not None,
            "metrics": metrics, "champion_metrics": champion_metrics, "decision": decision, "stages": stages,
            "manifest_uri": registered["manifest_uri"], "summary": summary, "best_config": best_config}


def _robust_metrics(summary: dict) -> dict[str, Any]:
    return {"clean_accuracy": summary["clean_accuracy"], "robust_accuracy": summary["robust_accuracy"],
            "robust_epsilon": summary["epsilon"], "robust_reliable": float(bool(summary["reliable"]))}


def _summary(settings: Settings, registered: dict, metrics: dict, champion: dict | None,
             champion_metrics: dict | None, decision: dict, stages: list[str]) -> str:
    lines = [f"# driftloop run `{registered['run_id']}`", "",
             f"* model **{settings.registry.model_name}** version **{registered['version']}**",
             f"* stages: {' -> '.join(stages)}",
             f"* decision: **{'promoted to champion' if decision['promote'] else 'champion kept'}**: {decision['reason']}",
             f"* previous champion: {('version ' + str(champion['version'])) if champion else 'none'}",
             f"* manifest: `{registered['manifest_uri']}`", "", "| metric | candidate | champion |", "|---|---|---|"]
    for k, v in metrics.items():
        if isinstance(v, (int, float)):
            c = champion_metrics.get(k) if champion_metrics else None
            lines.append(f"| {k} | {v:.4f} | {'' if c is None else f'{c:.4f}'} |")
    lines += ["", "Stored artifacts:", ""]
    lines += [f"* `{name}`: `{uri}`" for name, uri in registered.get("artifacts", {}).items()]
    return "\n".join(lines)
