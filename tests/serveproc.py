"""``python -m trioroom serve`` as a subprocess, and plain HTTP to it, for tests.

Output is read as it comes; waiting for a line means waiting for the reader
to see it (no sleeps), bounded by :data:`WAIT` seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import trio
from websockets.client import ClientProtocol
from websockets.http11 import Response
from websockets.uri import parse_uri

from .wire import HandshakeRejected, RawClient

#: Upper bound on any single wait; only reached when something is broken.
WAIT = 60
READY = re.compile(rb"trioroom serving on ws://([^\s/]+):(\d+)(/\S*)\n")


class Client(RawClient):
    """A :class:`RawClient` over TCP with a handshake of its own.

    It keeps frames that arrive in the same read as the 101 response (the
    root ``join_ack`` often does), and offers no subprotocol.
    """

    @classmethod
    async def connect(  # type: ignore[override]
        cls, address: tuple[str, int], path: str = "/ws"
    ) -> Client:
        host, port = address
        stream = await trio.open_tcp_stream(host, port)
        protocol = ClientProtocol(parse_uri(f"ws://{host}:{port}{path}"), max_size=None)
        protocol.send_request(protocol.connect())
        client = cls(stream, protocol)
        await client._flush()
        with trio.fail_after(WAIT):
            response = await client._read_response()
        if response.status_code != 101:
            await stream.aclose()
            raise HandshakeRejected(response.status_code, response.body or b"")
        ack = await client.recv()
        assert (ack.room, ack.event) == ("root", "join_ack"), ack
        client.id = ack.src
        return client

    async def _read_response(self) -> Response:
        response: Response | None = None
        while response is None:
            data = await self.stream.receive_some(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            for event in self.protocol.events_received():
                if isinstance(event, Response) and response is None:
                    response = event
                else:
                    self.frames.append(event)  # type: ignore[arg-type]
            if response is None and not data:
                raise ConnectionError("server closed during handshake")
        return response


@attrs.define(eq=False)
class Output:
    """The bytes one pipe produced so far; wakes waiters on each chunk."""

    data: bytearray = attrs.field(factory=bytearray)
    eof: bool = False
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        while True:
            chunk = await stream.receive_some(65536)
            if chunk:
                self.data += chunk
            else:
                self.eof = True
            self.changed.set()
            self.changed = trio.Event()
            if not chunk:
                return

    async def wait_for(self, pattern: bytes | re.Pattern[bytes]) -> re.Match[bytes]:
        """Wait until ``pattern`` (a regex) appears; fail if the pipe closes first."""
        regex = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        with trio.fail_after(WAIT):
            while True:
                match = regex.search(self.data)
                if match is not None:
                    return match
                if self.eof:
                    raise AssertionError(f"no {regex.pattern!r} in output:\n{self.text}")
                await self.changed.wait()

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


@attrs.define(eq=False)
class Running:
    """A child process whose stdout and stderr are being read."""

    proc: trio.Process
    stdout: Output
    stderr: Output

    async def wait(self) -> int:
        """Wait for the process to exit (bounded); its exit status."""
        with trio.fail_after(WAIT):
            return await self.proc.wait()


@asynccontextmanager
async def running(
    command: list[str], env: Mapping[str, str] | None = None, cwd: str | None = None
) -> AsyncIterator[Running]:
    """Run ``command``, reading its output; kill it on the way out if still running."""
    proc = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    assert proc.stdout is not None and proc.stderr is not None
    child = Running(proc, Output(), Output())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.stdout.pump, proc.stdout)
            nursery.start_soon(child.stderr.pump, proc.stderr)
            try:
                yield child
            finally:
                # The pumps end at EOF, once the process is gone.
                if proc.returncode is None:
                    proc.kill()
    finally:
        with trio.CancelScope(shield=True):
            await proc.wait()


@attrs.define(eq=False)
class ServeProcess(Running):
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trioroom", "serve", *args]


@asynccontextmanager
async def serve_process(
    *args: str,
    env: Mapping[str, str] | None = None,
    address_flags: bool = True,
) -> AsyncIterator[ServeProcess]:
    """Start ``trioroom serve`` (on 127.0.0.1, port 0 unless ``address_flags`` is off).

    Yields once the process printed its address; kills it on the way out if
    it is still running. ``TRIOROOM_*`` variables of the test run are not
    passed on; ``env`` adds variables.
    """
    flags = ["--host", "127.0.0.1", "--port", "0"] if address_flags else []
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIOROOM_")}
    environment.update(env or {})
    async with running(serve_command(*flags, *args), environment) as child:
        server = ServeProcess(child.proc, child.stdout, child.stderr)
        try:
            match = await server.stdout.wait_for(READY)
        except AssertionError as exc:
            await server.wait()
            raise AssertionError(f"{exc}\nstderr:\n{server.stderr.text}") from None
        server.host = match.group(1).decode()
        server.port = int(match.group(2))
        server.path = match.group(3).decode()
        yield server


@attrs.frozen
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def http_get(
    address: tuple[str, int], target: str, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    """One ``GET`` over a fresh TCP connection, read to EOF (the server closes it)."""
    host, port = address
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: trioroom-tests"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(request)
            data = bytearray()
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if "content-length" in parsed:
        assert len(body) == int(parsed["content-length"]), (status_line, parsed, len(body))
    return HttpResponse(int(status_line.split()[1]), parsed, body)


def metric_value(exposition: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text format (``name{labels}``)."""
    sample = name + (f"{{{labels}}}" if labels else "")
    for line in exposition.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {sample} in:\n{exposition}")
