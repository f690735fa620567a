"""The demo page in a real browser: two Chromium pages chat through ``trioroom serve``.

The browser side is ``tests/browser/demo.mjs`` (playwright-core from
``js/node_modules`` driving Debian's ``/usr/bin/chromium``; no browser is ever
downloaded). Missing tools skip this test, except in CI (``CI`` set), where
they fail it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest
import trio

from .serveproc import running, serve_process

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "browser" / "demo.mjs"
CHROMIUM = os.environ.get("TRIOROOM_CHROMIUM", "/usr/bin/chromium")
NODE_MIN_MAJOR = 20


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        _missing("node is not installed")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < NODE_MIN_MAJOR:
        _missing(f"node >= {NODE_MIN_MAJOR} is needed, found {version or 'nothing'}")
    if not (ROOT / "js" / "node_modules" / "playwright-core").is_dir():
        _missing("js/node_modules lacks playwright-core: run `npm ci --prefix js`")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"Chromium is not installed at {CHROMIUM}: apt-get install chromium")
    return node


@pytest.mark.timeout(300)
async def test_demo_chat_between_two_browser_pages(tmp_path: Path) -> None:
    node = _node()
    env = {**os.environ, "TRIOROOM_CHROMIUM": CHROMIUM}
    with trio.fail_after(240):
        async with serve_process() as server:
            port = server.port
            command = [node, str(SCRIPT), server.base_url, str(tmp_path)]
            async with running(command, env) as browser:
                try:
                    await browser.stdout.wait_for(rb"restart the server\n")
                    # A person stops the server (Ctrl-C) and starts it again.
                    server.proc.send_signal(signal.SIGINT)
                    assert await server.wait() == 0
                    await browser.stdout.wait_for(rb"pages show they are reconnecting\n")
                    args = ["--host", "127.0.0.1", "--port", str(port)]
                    async with serve_process(*args, address_flags=False):
                        status = await browser.wait()
                except BaseException:
                    print(browser.stdout.text, browser.stderr.text, sep="\n")
                    raise
            output = f"{browser.stdout.text}\n{browser.stderr.text}"
            assert status == 0, output
            assert browser.stdout.text.endswith("ok\n"), output
    for name in ("demo.png", "demo-reconnecting.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
