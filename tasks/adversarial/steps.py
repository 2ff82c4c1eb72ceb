"""Prefect tasks of the harden stage: each calls one pure function and publishes its artifacts.

Plots: Prefect's (3.8.8, 3.9.1) ``create_image_artifact(image_url=...)`` only stores a URL, so it needs the
PNG to be served from somewhere the UI can reach. The plots are instead embedded in markdown
artifacts as ``data:image/png;base64`` URIs (a few tens of kB each), which keeps every artifact
self-contained; the same PNG bytes are returned for the flow to store with the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from tasks.adversarial.evaluation import RobustEvaluation, evaluate_with_config
from tasks.adversarial.gate import GateDecision
from tasks.adversarial.gate import robustness_gate as decide
from tasks.adversarial.report import (
    curve_plot,
    curve_rows,
    evaluation_markdown,
    gate_markdown,
    history_markdown,
    history_plot,
    history_rows,
)
from tasks.adversarial.scale import AttackScale
from tasks.adversarial.training import HardenResult, adversarial_train
from tasks.data.dataset import Dataset
from tasks.models.train import select_device
from tasks.seeding import derive_seed
from tasks.settings import Settings
from tasks.ui import artifact_key, publish_markdown, publish_table


@dataclass
class Hardened:
    result: HardenResult
    plot_png: bytes | None  # Figure-2-like natural vs adversarial accuracy per epoch


@dataclass
class Evaluated:
    evaluation: RobustEvaluation
    plot_png: bytes  # accuracy vs epsilon


# Models and arrays are not hashable inputs: no caching.
@task(name="harden-model", cache_policy=NO_CACHE)
def harden_model(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    settings: Settings,
    lo,
    hi,
    num_classes: int,
    key_prefix: str = "harden",
    scale: AttackScale | None = None,
) -> Hardened:
    """Adversarially fine-tune ``model`` in place (mode from ``settings.adversarial``); publish the
    per-epoch history as a table and a markdown artifact with the Figure-2-like plot.

    With ``scale`` the epsilon is a fraction of each feature's training range
    (:mod:`tasks.adversarial.scale`) and ``lo``/``hi`` are ignored; without it, input units in ``[lo, hi]``."""
    tx, vx = train.x, val.x
    if scale is not None:
        model, tx, vx, lo, hi = scale.wrap(model), scale.to_unit(tx), scale.to_unit(vx), scale.lo, scale.hi
    res = adversarial_train(
        model,
        tx,
        train.y,
        vx,
        val.y,
        settings.adversarial,
        settings.training,
        derive_seed(settings.seed, "harden"),
        lo,
        hi,
        num_classes,
        max_clean_drop=settings.adversarial.max_clean_drop,
    )
    png = history_plot(res) if res.history else None
    key_prefix = artifact_key(key_prefix, default="model")
    publish_table(f"{key_prefix}-history", history_rows(res), "natural and robust accuracy per epoch")
    publish_markdown(f"{key_prefix}-curves", history_markdown(res, png), "adversarial fine-tuning")
    return Hardened(res, png)


@task(name="robust-evaluate", cache_policy=NO_CACHE)
def robust_evaluate(
    model: nn.Module,
    test: Dataset,
    settings: Settings,
    lo,
    hi,
    num_classes: int,
    label: str = "candidate",
    scale: AttackScale | None = None,
) -> Evaluated:
    """Accuracy-vs-epsilon curve and sanity checks on ``test``; published as a table and markdown.
    ``scale``: as in :func:`harden_model`."""
    x = test.x
    if scale is not None:
        model, x, lo, hi = scale.wrap(model), scale.to_unit(x), scale.lo, scale.hi
    ev = evaluate_with_config(
        model,
        x,
        test.y,
        settings.adversarial,
        lo,
        hi,
        num_classes,
        derive_seed(settings.seed, "robust-eval"),
        select_device(settings.training.device),
        label=label,
    )
    png = curve_plot([ev])
    slug = artifact_key(label, default="model")
    publish_table(f"robust-curve-{slug}", curve_rows(ev), f"accuracy vs epsilon ({label})")
    publish_markdown(
        f"robust-eval-{slug}",
        evaluation_markdown(ev, png),
        f"robust evaluation ({label}): {'reliable' if ev.reliable else 'UNRELIABLE'}",
    )
    return Evaluated(ev, png)


@task(name="robustness-gate", cache_policy=NO_CACHE)
def robustness_gate(
    candidate: RobustEvaluation, champion: RobustEvaluation | dict | None, settings: Settings
) -> GateDecision:
    """Promote or keep the champion (tasks.adversarial.gate); the decision as a markdown artifact."""
    decision = decide(candidate, champion, settings.adversarial.clean_tolerance)
    publish_markdown("robustness-gate", gate_markdown(decision), "promote" if decision.promote else "keep champion")
    return decision
