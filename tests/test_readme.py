"""README's commands stay in step with CI."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {title} -->\s*```sh\n(.+?)\n```", text, re.S)
    assert match, f"README.md has no {title} command block"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = readme_block("test-command")
    assert "\n" not in command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci_lines


def test_readme_run_command_starts_the_server() -> None:
    command = readme_block("run-command")
    assert "trioroom serve" in command
