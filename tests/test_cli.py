"""``trioroom serve``: HTTP routes, configuration, logging and shutdown, as a subprocess."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio

from trioroom import Server, Settings
from trioroom.cli import (
    COMMAND_OPTIONS,
    build_parser,
    command_options,
    main,
    settings_from_args,
    tune_gc,
)
from trioroom.metrics import PrometheusCollector
from trioroom.protocol import Message

from .serveproc import (
    WAIT,
    Client,
    ServeProcess,
    http_get,
    metric_value,
    serve_command,
    serve_process,
)
from .wire import HandshakeRejected


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
        client = await Client.connect(("127.0.0.1", int(match.group(1))))
        assert client.id
        proc.send_signal(signal.SIGINT)
        assert await client.wait_closed() == (1001, "server shutting down")
        with trio.fail_after(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- HTTP routes of `trioroom serve` -------------------------------------------------

JS_DIR = Path(__file__).resolve().parent.parent / "js"


async def test_serve_answers_demo_client_health_and_metrics() -> None:
    async with serve_process() as server:
        page = await http_get(server.address, "/")
        assert page.status == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert "content-security-policy" in page.headers
        assert '<script type="module" src="demo/app.js">' in page.text

        for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
            asset = await http_get(server.address, "/demo/" + name)
            assert asset.status == 200, name
            assert asset.headers["content-type"] == kind + "; charset=utf-8"
            assert asset.headers["cache-control"] == "no-cache"
        config = await http_get(server.address, "/demo/config.js")
        assert config.text == 'export const WS_PATH = "/ws";\n'

        # Every file of the JS client, byte for byte, with the right type.
        shipped = sorted([*JS_DIR.glob("*.js"), *JS_DIR.glob("*.d.ts")])
        assert "trioroom.js" in [path.name for path in shipped]
        for path in shipped:
            response = await http_get(server.address, "/js/" + path.name)
            assert response.status == 200, path.name
            assert response.body == path.read_bytes(), path.name
            assert response.headers["cache-control"] == "no-cache"
            expected = "text/plain" if path.name.endswith(".d.ts") else "text/javascript"
            assert response.headers["content-type"] == expected + "; charset=utf-8"

        health = await http_get(server.address, "/healthz")
        assert health.status == 200
        assert health.headers["content-type"] == "application/json"
        assert json.loads(health.body) == {
            "status": "ok",
            "connections": 0,
            "rooms": 0,
            "backplane": "up",
        }

        before = await http_get(server.address, "/metrics")
        assert before.status == 200
        assert before.headers["content-type"].startswith("text/plain; version=")
        assert metric_value(before.text, "trioroom_messages_in_total") == 0
        assert metric_value(before.text, "trioroom_connections") == 0
        assert metric_value(before.text, "trioroom_backplane_up") == 1  # in-process: always

        # Real traffic: two clients in one room, one broadcast.
        alice = await Client.connect(server.address)
        bob = await Client.connect(server.address)
        await alice.join("lobby")
        await bob.join("lobby")
        await alice.send(Message("lobby", "chat", "", "", b"hello"))
        heard = await bob.recv_until("chat", "lobby")
        assert (heard.src, heard.payload) == (alice.id, b"hello")

        health = await http_get(server.address, "/healthz")
        assert json.loads(health.body) == {
            "status": "ok",
            "connections": 2,
            "rooms": 2,
            "backplane": "up",
        }
        after = (await http_get(server.address, "/metrics")).text
        assert metric_value(after, "trioroom_messages_in_total") == 3  # 2 joins, 1 chat
        assert metric_value(after, "trioroom_connections") == 2
        assert metric_value(after, "trioroom_rooms") == 2
        assert metric_value(after, "trioroom_broadcasts_total") == 1
        assert metric_value(after, "trioroom_fanout_deliveries_total") == 1
        assert metric_value(after, "trioroom_connections_opened_total") == 2
        assert metric_value(after, "trioroom_bytes_in_total") > 0
        assert metric_value(after, "trioroom_http_responses_total", 'status="200"') >= 10
        assert "trioroom_handler_duration_seconds_count 0.0" in after

        await bob.close()
        # Bob's close is counted once the server finished it: poll (bounded).
        with trio.fail_after(WAIT):
            while 'trioroom_close_codes_total{code="1000"} 1.0' not in (
                text := await _metrics(server)
            ):
                pass
        assert metric_value(text, "trioroom_disconnects_total", 'reason="peer"') == 1
        assert metric_value(text, "trioroom_connections_closed_total") == 1
        await alice.close()


async def _metrics(server: ServeProcess) -> str:
    return (await http_get(server.address, "/metrics")).text


async def test_serve_refuses_other_files_and_paths() -> None:
    async with serve_process() as server:
        for target in [
            "/js/../pyproject.toml",
            "/js/%2e%2e/pyproject.toml",
            "/js/..%2fpyproject.toml",
            "/js//etc/passwd",
            "/js/package.json",
            "/js/node_modules/ws/package.json",
            "/js/test/browser.test.js",
            "/js/",
            "/demo/../../pyproject.toml",
            "/demo/",
            "/static/demo/index.html",
            "/trioroom/cli.py",
        ]:
            response = await http_get(server.address, target)
            assert response.status == 404, target
            assert b"[project]" not in response.body
        # Plain GET of the WebSocket path: upgrade required.
        assert (await http_get(server.address, "/ws")).status == 426
        # A WebSocket upgrade of the page's path is not a page.
        with pytest.raises(HandshakeRejected) as refused:
            await Client.connect(server.address, path="/")
        assert refused.value.status == 404

        # Revalidation: Cache-Control no-cache plus an ETag.
        first = await http_get(server.address, "/js/trioroom.js")
        etag = first.headers["etag"]
        again = await http_get(server.address, "/js/trioroom.js", {"If-None-Match": etag})
        assert (again.status, again.body, again.headers["etag"]) == (304, b"", etag)


async def test_cors_origins_let_other_origins_import_the_js_client() -> None:
    app = "http://app.example:3000"
    async with serve_process("--cors-origins", app) as server:
        allowed = await http_get(server.address, "/js/trioroom.js", {"Origin": app})
        assert allowed.status == 200
        assert allowed.headers["access-control-allow-origin"] == app
        assert allowed.headers["vary"] == "Origin"
        other = await http_get(server.address, "/js/codec.js", {"Origin": "http://evil.example"})
        assert other.status == 200
        assert "access-control-allow-origin" not in other.headers
        # Only the client's files: not the health check or the demo page.
        health = await http_get(server.address, "/healthz", {"Origin": app})
        assert "access-control-allow-origin" not in health.headers
    async with serve_process() as server:
        default = await http_get(server.address, "/js/trioroom.js", {"Origin": app})
        assert "access-control-allow-origin" not in default.headers
    async with serve_process("--cors-origins", "*") as server:
        anyone = await http_get(server.address, "/js/trioroom.js", {"Origin": "http://x.example"})
        assert anyone.headers["access-control-allow-origin"] == "*"


async def test_serve_without_demo_and_metrics() -> None:
    async with serve_process("--no-demo", "--metrics", "false") as server:
        for target in ["/", "/js/trioroom.js", "/demo/app.js", "/metrics"]:
            assert (await http_get(server.address, target)).status == 404, target
        assert (await http_get(server.address, "/healthz")).status == 200


# -- configuration -------------------------------------------------------------------


async def test_serve_reads_trioroom_environment_variables() -> None:
    env = {
        "TRIOROOM_HOST": "127.0.0.1",
        "TRIOROOM_PORT": "0",
        "TRIOROOM_PATH": "/chat",
        "TRIOROOM_ROOT_NOTICES": "false",
        "TRIOROOM_LOG_FORMAT": "json",
    }
    async with serve_process(env=env, address_flags=False) as server:
        assert server.path == "/chat"
        config = await http_get(server.address, "/demo/config.js")
        assert config.text == 'export const WS_PATH = "/chat";\n'
        alice = await Client.connect(server.address, path="/chat")
        bob = await Client.connect(server.address, path="/chat")
        # With root notices on, alice's next frame would be new_member for bob.
        await bob.send(Message("root", "poke", alice.id, "", b"hi"))
        poke = await alice.recv()
        assert (poke.event, poke.src) == ("poke", bob.id)
        await alice.close()
        await bob.close()
        # JSON logs: every stderr line so far is one JSON object.
        assert server.stderr.text.strip()
        for line in server.stderr.text.splitlines():
            json.loads(line)

    # A flag wins over the variable.
    async with serve_process("--path", "/flag", env={"TRIOROOM_PATH": "/chat"}) as server:
        assert server.path == "/flag"


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"TRIOROOM_QUEUE_FRAMES": "many"}, [], "TRIOROOM_QUEUE_FRAMES: not int: 'many'"),
        ({"TRIOROOM_ROOT_NOTICES": "maybe"}, [], "TRIOROOM_ROOT_NOTICES: not a boolean"),
        ({"TRIOROOM_PORT": "http"}, [], "TRIOROOM_PORT: not int"),
        ({}, ["--queue-frames", "0"], "queue_frames must be positive"),
        ({}, ["--slow-consumer-policy", "panic"], "'panic' is not one of disconnect, drop_oldest"),
        ({"TRIOROOM_SLOW_CONSUMER_POLICY": "panic"}, [], "'panic' is not one of"),
    ],
)
async def test_serve_rejects_bad_configuration(
    env: dict[str, str], args: list[str], message: str
) -> None:
    result = await trio.run_process(
        serve_command(*args),
        env={**os.environ, **env},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr.decode(), result.stderr.decode()
    assert result.stdout == b""


async def test_serve_reports_a_port_in_use() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await trio.run_process(
            serve_command("--host", "127.0.0.1", "--port", str(port)),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr.decode()


def _non_default(name: str, default: object) -> tuple[str, object]:
    """A text for a setting and the value it must give, different from the default."""
    if isinstance(default, bool):
        return ("false", False) if default else ("yes", True)
    if isinstance(default, int):
        return str(default + 3), default + 3
    if isinstance(default, float):
        return str(default + 1.5), default + 1.5
    if name == "rate_limit":  # off (None) by default
        return "50", 50.0
    if name == "slow_consumer_policy":
        return "drop_oldest", "drop_oldest"
    if name == "rate_limit_policy":
        return "drop", "drop"
    if name == "allowed_origins":
        return "https://a.example, https://b.example", ("https://a.example", "https://b.example")
    if name == "cors_origins":
        return "https://c.example, *", ("https://c.example", "*")
    if name == "forwarded_allow_ips":  # no proxy (None) by default
        return "10.0.0.1, 192.168.0.0/16", ("10.0.0.1", "192.168.0.0/16")
    if name == "allowed_hosts":  # None: loopback names on a loopback server
        return "chat.example.com, .example.org", ("chat.example.com", ".example.org")
    assert isinstance(default, str), name
    return "/elsewhere", "/elsewhere"


def test_every_setting_is_a_flag_and_a_variable() -> None:
    parser = build_parser()
    fields = attrs.fields(Settings)
    for field in fields:
        text, value = _non_default(field.name, field.default)
        flag = "--" + field.name.replace("_", "-")
        env = "TRIOROOM_" + field.name.upper()
        from_env = settings_from_args(parser.parse_args(["serve"]), {env: text})
        assert getattr(from_env, field.name) == value, env
        from_flag = settings_from_args(parser.parse_args(["serve", flag, text]), {})
        assert getattr(from_flag, field.name) == value, flag
    # Nothing given: the defaults.
    assert settings_from_args(parser.parse_args(["serve"]), {}) == Settings()
    # Optional values turn off; booleans have a --no- form.
    args = parser.parse_args(["serve", "--ping-interval", "off", "--no-root-notices"])
    settings = settings_from_args(args, {"TRIOROOM_ROOT_NOTICES": "true"})
    assert (settings.ping_interval, settings.root_notices) == (None, False)


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    names = [field.name for field in attrs.fields(Settings)]
    names += [option.dest for option in COMMAND_OPTIONS]
    for name in names:
        flag = "--" + name.replace("_", "-")
        env = "TRIOROOM_" + name.upper()
        # The flag, then an explanation, then its variable and default.
        assert re.search(rf"{flag}( [^ ]+)? [A-Z][^[]{{8,}}\[env {env}; default ", help_text), flag
    assert "--no-root-notices" in help_text


# -- logging -------------------------------------------------------------------------


async def test_json_logs_carry_the_connection_id() -> None:
    async with serve_process("--log-level", "debug", "--log-format", "json") as server:
        client = await Client.connect(server.address)
        await client.join("lobby")
        await server.stderr.wait_for(re.escape(f'"conn_id": "{client.id}"'.encode()))
        await server.stderr.wait_for(rb'"room": "lobby"')
        await client.close()
        server.proc.send_signal(signal.SIGINT)
        assert await server.wait() == 0
    records = [json.loads(line) for line in server.stderr.text.splitlines()]
    mine = [r for r in records if r.get("conn_id") == client.id]
    assert any(r["message"].startswith("connected from") for r in mine), mine
    assert any(r.get("room") == "lobby" and r["message"] == "joined" for r in mine), mine
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r["logger"] == "trioroom.cli" and "closing" in r["message"] for r in records)


async def test_text_logs_at_warning_level_are_quiet() -> None:
    async with serve_process("--log-level", "warning") as server:
        client = await Client.connect(server.address)
        await client.close()
        server.proc.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
    assert server.stderr.text == ""


# -- graceful shutdown progress ------------------------------------------------------


async def test_shutdown_reports_progress_until_connections_are_gone() -> None:
    # A client that never answers the close frame holds the drain for --close-timeout.
    async with serve_process("--close-timeout", "3", "--shutdown-timeout", "20") as server:
        silent = await Client.connect(server.address)
        await http_get(server.address, "/healthz")
        server.proc.send_signal(signal.SIGINT)
        await server.stderr.wait_for(rb"SIGINT: closing 1 connection \(deadline 20s\)")
        await server.stderr.wait_for(rb"1 connection left")
        assert await server.wait() == 0
        assert await silent.wait_closed() == (1001, "server shutting down")
    assert re.search(r"stopped after \d+\.\ds", server.stderr.text)


async def test_second_signal_forces_the_shutdown() -> None:
    async with serve_process("--close-timeout", "60", "--shutdown-timeout", "60") as server:
        silent = await Client.connect(server.address)
        server.proc.send_signal(signal.SIGTERM)
        await server.stderr.wait_for(rb"SIGTERM: closing 1 connection \(deadline 60s\)")
        server.proc.send_signal(signal.SIGINT)
        await server.stderr.wait_for(
            rb"SIGINT again: exiting now, without closing the remaining 1 connection\n"
        )
        assert await server.wait() == 1
        # Closed, with 1001 if the close frame went out before the second signal.
        assert await silent.wait_closed() in [(1001, "server shutting down"), (None, "")]


def test_operations_doc_lists_every_option_and_metric() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    names = [field.name for field in attrs.fields(Settings)]
    names += [option.dest for option in COMMAND_OPTIONS]
    for name in names:
        flag = "--" + name.replace("_", "-")
        assert f"| `{flag}` | `TRIOROOM_{name.upper()}` |" in doc, flag
    server = Server()
    families = PrometheusCollector(server.metrics, server.stats).collect()
    for family in families:
        suffix = "_total" if family.type == "counter" else ""
        assert f"`{family.name}{suffix}" in doc, family.name
    assert "## Limits and close codes" in doc


def test_gc_threshold_option_tunes_the_collector_and_zero_leaves_it_alone() -> None:
    args = build_parser().parse_args(["serve", "--gc-threshold", "12345"])
    assert command_options(args, {})["gc_threshold"] == 12345
    args = build_parser().parse_args(["serve"])
    assert command_options(args, {"TRIOROOM_GC_THRESHOLD": "0"})["gc_threshold"] == 0
    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
        tune_gc(12345)
        assert gc.get_threshold() == (12345, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_redis_outbox_bounds_are_flags_and_variables() -> None:
    from trioroom import workers

    parser = build_parser()
    defaults = workers.cluster_options(parser.parse_args(["serve"]), {})
    assert (defaults.redis_outbox_bytes, defaults.redis_outbox_seconds) == (16 * 1024 * 1024, 60.0)
    args = parser.parse_args(["serve", "--redis-outbox-bytes", "1000"])
    env = {"TRIOROOM_REDIS_OUTBOX_SECONDS": "2.5", "TRIOROOM_REDIS_OUTBOX_BYTES": "9"}
    options = workers.cluster_options(args, env)
    assert (options.redis_outbox_bytes, options.redis_outbox_seconds) == (1000, 2.5)
    with pytest.raises(ValueError, match="must not be negative"):
        workers.cluster_options(parser.parse_args(["serve", "--redis-outbox-seconds", "-1"]), {})
    if importlib.util.find_spec("coredis") is not None:
        from trioroom.backplane.redis import RedisBackplane

        backplane = workers.make_backplane(attrs.evolve(options, redis="redis://127.0.0.1:1/0"))
        assert isinstance(backplane, RedisBackplane)
        assert (backplane.outbox_bytes, backplane.outbox_seconds) == (1000, 2.5)
