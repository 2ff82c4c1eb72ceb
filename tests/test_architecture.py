"""House rule 1: pure modules never import prefect; only steps.py, ui.py and flows/ do."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFECT_LAYER = {"steps.py", "ui.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_pure_modules_do_not_import_prefect():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tasks").rglob("*.py")
        if p.name not in PREFECT_LAYER and "prefect" in _imports(p)
    ]
    assert offenders == []


def test_tasks_never_import_flows():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "tasks").rglob("*.py") if "flows" in _imports(p)]
    assert offenders == []


def test_rule_is_checkable():
    # The checker sees a prefect import when one is there (so the tests above can fail).
    assert "prefect" in _imports(ROOT / "tasks" / "ui.py")
