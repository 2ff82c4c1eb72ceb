"""Reliability fixtures: a recorder for each scenario's figures, and a champion on a local store.

Every scenario test records what it did (faults injected, runs completed, objects lost, ...) with
the ``figures`` fixture; the numbers land in ``test-output/reliability/figures/<test>.json``, which
``scripts/reliability_report.py`` turns into the table of ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES_DIR = ROOT / "test-output" / "reliability" / "figures"


class Figures(dict):
    """A dict of a scenario's figures, written to JSON when the test ends (pass or fail)."""

    def __init__(self, nodeid: str):
        super().__init__()
        self.nodeid = nodeid

    def write(self) -> Path:
        FIGURES_DIR.mkdir(parents=True, exist_ok=True)
        path = FIGURES_DIR / (re.sub(r"[^A-Za-z0-9_.-]+", "_", self.nodeid) + ".json")
        path.write_text(json.dumps({"nodeid": self.nodeid, "figures": dict(self)}, indent=1, default=str))
        return path


@pytest.fixture
def figures(request):
    """Record a scenario's figures: ``figures["faults_injected"] = 2``."""
    rec = Figures(request.node.nodeid)
    yield rec
    rec.write()


def smoke_settings(root: Path, **overrides):
    """Smoke-profile settings on a local store under ``root``, optional stages off (fast, no Ray/Flower)."""
    from tasks.settings import load_settings

    base = {
        "tuning.enabled": False,
        "federated.enabled": False,
        "adversarial.enabled": False,
        "training.epochs": 3,
        "store.uri": str(root / "store"),
        "drift.batches_uri": str(root / "batches"),
    }
    base.update(overrides)
    return load_settings(profile="smoke", environ={}, overrides=base)


def store_snapshot(settings) -> dict:
    """What a reader of the store can see: committed runs, registry versions, the champion, every key."""
    from tasks.store.artifacts import ArtifactStore
    from tasks.store.registry import ModelRegistry

    store = ArtifactStore.from_config(settings.store)
    reg = ModelRegistry(store, settings.registry.model_name)
    return {
        "runs": store.list_runs(),
        "versions": [v["version"] for v in reg.versions()],
        "champion": reg.champion_version(),
        "keys": store.backend.list(""),
    }
