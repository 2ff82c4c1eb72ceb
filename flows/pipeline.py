"""The stage sequence shared by the training and retraining flows (composition only).

load -> validate -> [tune] -> federate | train -> [harden] -> evaluate -> register -> gate/promote.
A disabled stage is skipped and the previous stage's model and configuration go on unchanged.
Each stage (``flows.stages``) hands the next a small typed value; the decisions are in the concerns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from flows import stages as st
from tasks.data.splits import split_summary
from tasks.models import steps as model_steps
from tasks.models.report import comparison_rows, run_summary_markdown
from tasks.settings import Settings
from tasks.ui import publish_markdown, publish_table


@dataclass
class PipelineInputs:
    """What started the run and what it adds to the configured training data."""

    trigger: dict[str, Any] = field(default_factory=lambda: {"kind": "manual"})
    # Labelled batch URIs (npz/parquet/csv) trained on together with the training data (retraining).
    extra_batches: list[str] = field(default_factory=list)
    # Start from the champion's weights when the architecture matches (retraining).
    warm_start: bool = False


def run_pipeline(settings: Settings, inputs: PipelineInputs) -> dict[str, Any]:
    stages: list[str] = []
    champion = st.load_champion(settings)
    data = st.prepare_data(settings, champion, inputs.extra_batches)
    settings, splits = cast(Settings, data.settings), data.splits
    stages.append("validate")

    best_config: dict[str, Any] | None = None
    if settings.tuning.enabled:
        from tasks.tuning import steps as tuning_steps

        best_config = tuning_steps.tune_hyperparameters(splits, settings)["best_config"]
        settings = tuning_steps.apply_best_config(settings, best_config)
        stages.append("tune")

    initial = st.warm_start(settings, champion, splits) if inputs.warm_start else None
    federated = None
    if settings.federated.enabled:
        model, federated = st.federate(settings, splits, champion, initial)
        stages.append("federate")
    else:
        model = model_steps.train_model(splits, settings, initial)
        stages.append("train")

    hardening = None
    if settings.adversarial.enabled:
        model, hardening = st.harden(settings, model, data)
        stages.append("harden")

    ev = st.evaluate(settings, model, data, champion)
    stages.append("evaluate")
    decision = st.gate(settings, ev, splits, champion)

    extras = {
        "best_config": best_config,
        "stages": list(stages),
        "trigger": inputs.trigger,
        "history": model.history,
        "extra_batches": inputs.extra_batches,
        "federated": federated.summary() if federated else None,
        "hardening": hardening,
        "robust_evaluation": ev.robust.as_dict() if ev.robust else None,
        "gate": decision.as_dict(),
        "splits": split_summary(splits, champion.trained_rows),
    }
    registered = st.register(settings, model, data, ev, champion, initial is not None, inputs.trigger, extras)
    stages.append("register")
    promoted = None
    if decision.promote:
        promoted = model_steps.promote_version(settings, registered.version, decision.reason, champion.version)
        stages.append("promote")

    summary = run_summary_markdown(
        settings.registry.model_name or "",
        registered.run_id,
        registered.version,
        registered.manifest_uri,
        registered.artifacts,
        ev.metrics,
        champion.version,
        ev.champion_metrics,
        decision.promote,
        decision.reason,
        stages,
    )
    publish_table(
        "training-metrics",
        comparison_rows(ev.metrics, ev.champion_metrics),
        "Candidate vs champion on the same test split",
    )
    publish_markdown("training-summary", summary, "What this run did and where its artifacts are")
    return {
        "run_id": registered.run_id,
        "version": registered.version,
        "promoted": promoted is not None,
        "metrics": ev.metrics,
        "champion_metrics": ev.champion_metrics,
        "decision": decision.as_dict(),
        "stages": stages,
        "manifest_uri": registered.manifest_uri,
        "summary": summary,
        "best_config": best_config,
    }
