"""The shell commands of docs/observability.md's troubleshooting section run
as written, from the repository root, and say what the guide says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def troubleshooting_commands() -> list[str]:
    text = (ROOT / "docs/observability.md").read_text()
    section = text.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def run(command: str) -> subprocess.CompletedProcess:
    venv = ROOT / ".venv/bin/python"
    if not venv.exists():
        # Run by an interpreter outside the repository's venv: the same
        # command with this interpreter.
        command = command.replace(".venv/bin/python", sys.executable)
    return subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_the_troubleshooting_commands_run_as_written():
    commands = troubleshooting_commands()
    assert commands, "the section has shell commands"
    for command in commands:
        out = run(command)
        assert out.returncode == 0, (command, out.stderr)
        assert "loads:" in out.stdout and "ping" in out.stdout, out.stdout


def test_check_names_an_adapter_that_does_not_load():
    command = troubleshooting_commands()[0].replace(
        "snakepit_bridge.adapters.showcase:ShowcaseAdapter", "my_app.adapters:Missing")
    out = run(command)
    assert out.returncode == 3, out
    assert "SNAKEPIT_ADAPTER_ERROR" in out.stderr and "my_app" in out.stderr, out.stderr
    assert "Traceback" in out.stderr
