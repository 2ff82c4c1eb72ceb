"""The Prefect tasks run under a real Prefect API and publish their artifacts; the pure modules
never import Prefect."""

import ast
from pathlib import Path

import pytest

import tasks.adversarial as pkg

PURE = ["attacks.py", "config.py", "evaluation.py", "gate.py", "report.py", "training.py"]


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_do_not_import_prefect(name):
    tree = ast.parse((Path(pkg.__file__).parent / name).read_text())
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in mods if m.split(".")[0] == "prefect"]


@pytest.mark.integration
def test_harden_evaluate_gate_in_a_flow(prefect_api, digits):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tasks.adversarial.steps import harden_model, robust_evaluate, robustness_gate
    from tasks.models.config import ModelConfig
    from tasks.models.zoo import build_model
    from tasks.settings import load_settings

    settings = load_settings(
        profile="smoke",
        environ={},
        overrides={
            "adversarial.epochs": 2,
            "adversarial.eval_max_samples": 60,
            "adversarial.history_samples": 40,
            "adversarial.eval_epsilons": [0.1],
        },
    )

    @flow
    def harden_flow():
        from prefect.runtime import flow_run

        model = build_model(ModelConfig(arch="mlp", width=16, depth=1), (1, 8, 8), 10)
        h = harden_model(model, digits.train, digits.val, settings, 0.0, 1.0, 10)
        ev = robust_evaluate(model, digits.test, settings, 0.0, 1.0, 10, label="candidate")
        d = robustness_gate(ev.evaluation, None, settings)
        return flow_run.id, h, ev, d

    run_id, h, ev, d = harden_flow()
    assert h.result.switch_epoch == 1 and h.plot_png.startswith(b"\x89PNG")
    assert ev.evaluation.n == 60 and d.promote == ev.evaluation.reliable
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    keys = {a.key: a for a in arts}
    assert {
        "harden-history",
        "harden-curves",
        "robust-curve-candidate",
        "robust-eval-candidate",
        "robustness-gate",
    } <= set(keys)
    assert "data:image/png;base64," in keys["harden-curves"].data
    assert keys["robustness-gate"].data.startswith("# Robustness gate")
