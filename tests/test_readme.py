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


def test_readme_links_resolve_inside_the_project() -> None:
    # Users get the repository, not the folders beside it: every relative link
    # must name a file of the project.
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    relative = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    assert relative, "README.md has no relative links to check"
    missing = [
        link
        for link in relative
        if not (ROOT / link).resolve().is_relative_to(ROOT) or not (ROOT / link).exists()
    ]
    assert missing == []
