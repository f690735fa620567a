"""``python -m trioroom serve`` runs a server until SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import trio

from .wire import RawClient


async def test_python_m_trioroom_serve_until_ctrl_c() -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioroom", "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1)
                assert chunk, "server exited before printing its address"
                line += chunk
        match = re.search(r"ws://127\.0\.0\.1:(\d+)/ws", line.decode())
        assert match, line
        client = await RawClient.connect(("127.0.0.1", int(match.group(1))))
        assert client.id
        proc.send_signal(signal.SIGINT)
        assert await client.wait_closed() == (1001, "server shutting down")
        with trio.fail_after(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
