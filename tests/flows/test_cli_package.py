"""The shape of the `driftloop` CLI package: no import cycles, one error handler on every command."""

from __future__ import annotations

import ast
from pathlib import Path

import typer.main

from flows.cli import app

CLI = Path(__file__).resolve().parents[2] / "flows" / "cli"


def test_command_modules_import_common_never_the_package():
    # flows/cli/__init__.py mounts the modules; a module importing it back would be a cycle.
    for path in CLI.glob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module != "flows.cli", f"{path.name} imports flows.cli (import flows.cli.common)"
                assert not (node.module == "flows" and any(a.name == "cli" for a in node.names)), path.name


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), cmd


def test_every_command_goes_through_the_one_error_handler():
    commands = dict(_commands(typer.main.get_command(app)))
    assert {
        "run",
        "validate",
        "models show",
        "deploy",
        "serve",
        "up",
        "down",
        "artifacts gc",
        "hyperband-plan",
        "simulate-stream",
        "supernode",
        "predict",
    } <= set(commands)
    unwrapped = [name for name, cmd in commands.items() if not hasattr(cmd.callback, "exit_codes")]
    assert unwrapped == []
    # configuration errors exit 2 where they always did; 1 where they surface while doing the work
    assert commands["run"].callback.exit_codes == {"usage": 2, "failure": 1}
    assert commands["deploy"].callback.exit_codes == {"usage": 2, "failure": 1}
    assert commands["validate"].callback.exit_codes == {"usage": 1, "failure": 1}
