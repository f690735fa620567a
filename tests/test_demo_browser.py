"""The demo page in a real browser: two Chromium pages chat through ``trioroom serve``.

The browser side is ``tests/browser/demo.mjs`` (playwright-core from
``js/node_modules`` driving Debian's ``/usr/bin/chromium``; no browser is ever
downloaded). Missing tools skip this test, except in CI (``CI`` set), where
they fail it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from .serveproc import running, serve_process
from .test_js import CHROMIUM, missing, require_node, require_node_modules

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "browser" / "demo.mjs"


def _node() -> str:
    node = require_node()
    require_node_modules("playwright-core")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"Chromium is not installed at {CHROMIUM}: apt-get install chromium")
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
