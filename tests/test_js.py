"""The JavaScript client's tests (``js/test``), run with Node's test runner.

Unit tests need only Node; the integration and browser tests start this
tree's server with ``sys.executable -m trioroom serve``. Missing tools skip
these tests locally but fail them in CI (``CI`` set), where they must run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"
NODE_MIN_MAJOR = 20
CHROMIUM = os.environ.get("TRIOROOM_CHROMIUM", "/usr/bin/chromium")

UNIT_FILES = [
    "test/utf8.test.js",
    "test/codec.test.js",
    "test/emitter.test.js",
    "test/backoff.test.js",
    "test/client.test.js",
    "test/extension.test.js",
    "test/types.test.js",
    "test/package.test.js",
]
INTEGRATION_FILES = [
    "test/integration.test.js",
    "test/extension-integration.test.js",
    "test/lifecycle.test.js",
]
BROWSER_FILES = ["test/browser.test.js"]


def missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


def require_node() -> str:
    node = shutil.which("node")
    if node is None:
        missing("node is not installed")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < NODE_MIN_MAJOR:
        missing(f"node >= {NODE_MIN_MAJOR} is needed, found {version or 'no version'}")
    return node


def require_node_modules(*packages: str) -> None:
    absent = [name for name in packages if not (JS_DIR / "node_modules" / name).is_dir()]
    if absent:
        missing(f"js/node_modules lacks {', '.join(absent)}: run `npm ci --prefix js`")


def _run_node_tests(files: list[str], timeout: float) -> None:
    node = require_node()
    env = {**os.environ, "TRIOROOM_PYTHON": sys.executable, "TRIOROOM_CHROMIUM": CHROMIUM}
    try:
        result = subprocess.run(
            [node, "--test", *files],
            cwd=JS_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"node --test {' '.join(files)} ran over {timeout} s\n{output or ''}")
    if result.returncode != 0:
        pytest.fail(
            f"node --test {' '.join(files)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )


@pytest.mark.timeout(300)
def test_js_unit() -> None:
    require_node_modules("typescript")
    _run_node_tests(UNIT_FILES, timeout=240)


@pytest.mark.timeout(300)
def test_js_integration() -> None:
    require_node_modules("ws")
    _run_node_tests(INTEGRATION_FILES, timeout=240)


@pytest.mark.timeout(400)
def test_js_browser() -> None:
    require_node_modules("ws", "playwright-core")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"Chromium is not installed at {CHROMIUM}: apt-get install chromium")
    _run_node_tests(BROWSER_FILES, timeout=340)
