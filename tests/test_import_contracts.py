"""House rule 1 as import-linter contracts, checked on the whole import graph (indirect imports too).

- ``tasks`` never imports ``flows`` or ``deployments``;
- pure modules (everything in ``tasks`` but ``steps.py`` and ``ui.py``) never import prefect, not even
  through another module;
- no import cycles between sibling modules of ``flows``, ``deployments`` and each ``tasks`` package.

The pure-module list is generated from the file tree, so a new module is covered without editing a list.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFECT_LAYER = {"steps", "ui"}

# Known cycles, each to be broken by the redesign (issue 14); listed so that no new one can appear.
KNOWN_CYCLE_IMPORTS = [
    # the configuration tree composes every concern's config section by design
    "tasks.settings -> tasks.*.config",
    "tasks.settings -> tasks.data.sources",  # the model name derived from data.source
]
# An entry that no longer matches an import fails the contract (import-linter's default), so the
# list shrinks as cycles are broken.


def _modules(package: str) -> list[str]:
    base = ROOT / package
    out = []
    for p in sorted(base.rglob("*.py")):
        rel = p.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def _pure_modules() -> list[str]:
    return [
        m
        for m in _modules("tasks")
        if m.rsplit(".", 1)[-1] not in PREFECT_LAYER and m.split(".")[-1] != "tasks" and m != "tasks"
    ]


def _subpackages(package: str) -> list[str]:
    return [package] + sorted(
        f"{package}.{p.name}" for p in (ROOT / package).iterdir() if p.is_dir() and (p / "__init__.py").exists()
    )


def contracts_ini() -> str:
    def block(items):
        return "\n".join(f"    {i}" for i in items)

    ancestors = ["flows", "deployments"] + _subpackages("tasks")
    return f"""[importlinter]
root_packages =
    tasks
    flows
    deployments
include_external_packages = True

[importlinter:contract:tasks-not-flows]
name = tasks never imports flows or deployments
type = forbidden
source_modules = tasks
forbidden_modules =
    flows
    deployments

[importlinter:contract:pure-no-prefect]
name = pure modules never import prefect (only steps.py and ui.py do)
type = forbidden
source_modules =
{block(_pure_modules())}
forbidden_modules = prefect
# each listed module on its own (a package's __init__ is listed, not everything below it)
as_packages = False

[importlinter:contract:acyclic]
name = no import cycles between sibling modules
type = acyclic_siblings
ancestors =
{block(ancestors)}
ignore_imports =
{block(KNOWN_CYCLE_IMPORTS)}
"""


def _lint(tmp_path: Path, ini: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "importlinter.ini"
    cfg.write_text(ini)
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), str(cfg), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_are_kept(tmp_path):
    proc = _lint(tmp_path, contracts_ini())
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_a_forbidden_import_is_caught(tmp_path):
    # The checker sees a violation when there is one (so the test above can fail): the Prefect layer
    # itself imports prefect, so calling a steps module pure must break the contract.
    ini = contracts_ini().replace("forbidden_modules = prefect", "    tasks.data.steps\nforbidden_modules = prefect")
    assert "    tasks.data.steps\nforbidden_modules = prefect" in ini
    proc = _lint(tmp_path, ini)
    assert proc.returncode != 0
    assert "pure modules never import prefect (only steps.py and ui.py do) BROKEN" in proc.stdout
    assert "tasks.data.steps -> prefect" in proc.stdout
