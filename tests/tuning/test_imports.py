"""House rules: the pure tuning modules never import prefect; the plan and its CLI never import Ray."""

import subprocess
import sys


def _modules_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_pure_modules_do_not_import_prefect():
    mods = _modules_after(
        "import tasks.tuning.plan, tasks.tuning.search, tasks.tuning.report, tasks.tuning.cli, "
        "tasks.tuning.space, tasks.tuning.trainable, tasks.tuning.runtime, tasks.tuning.study, "
        "tasks.tuning.results, tasks.tuning.progress, tasks.tuning.ray_hooks, "
        "tasks.tuning.local_cluster"
    )
    assert "prefect" not in mods


def test_plan_and_cli_do_not_import_ray():
    assert "ray" not in _modules_after("import tasks.tuning.cli")
    # The progress line and the search-space checks run before (or without) Ray too.
    assert "ray" not in _modules_after("import tasks.tuning.progress, tasks.tuning.space, tasks.tuning.results")
