"""The ``trioroom`` command line.

``trioroom serve`` (or ``python -m trioroom serve``) runs a server on one
port: the WebSocket endpoint (``/ws``), the demo chat page (``/``), the
JavaScript client (``/js/``), ``/healthz`` and ``/metrics``.

Every field of :class:`~trioroom.Settings` is a flag (``--queue-frames 512``)
and an environment variable (``TRIOROOM_QUEUE_FRAMES=512``); so are the
options of the command itself (``--port``, ``TRIOROOM_PORT``). A flag wins
over the environment, which wins over the default.

The first line on stdout is always ``trioroom serving on ws://HOST:PORT/PATH``;
logs and progress lines go to stderr. SIGINT or SIGTERM closes every
connection with 1001 and exits 0 once they are gone (or the shutdown deadline
passed); a second signal exits at once, with status 1.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import logging
import os
import signal
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import attrs
import trio

from . import workers
from .connection import Connection
from .log import JsonFormatter, TextFormatter
from .server import Server
from .settings import Settings
from .web import WebApp

__all__ = ["build_parser", "configure_logging", "main", "settings_from_args", "tune_gc"]

logger = logging.getLogger("trioroom.cli")

ENV_PREFIX = "TRIOROOM_"
#: Seconds between "N connections left" lines while shutting down.
PROGRESS_INTERVAL = 1.0
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

Convert = Callable[[str], Any]


def env_name(dest: str) -> str:
    """``queue_frames`` -> ``TRIOROOM_QUEUE_FRAMES``."""
    return ENV_PREFIX + dest.upper()


# -- converters from text (flags and environment variables) -----------------


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean (true/false, yes/no, on/off, 1/0): {text!r}")


def _number(kind: type[int] | type[float]) -> Convert:
    def convert(text: str) -> Any:
        try:
            return kind(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind.__name__}: {text!r}") from None

    return convert


def _optional(convert: Convert) -> Convert:
    def parse(text: str) -> Any:
        if text.strip().lower() in ("none", "off", ""):
            return None
        return convert(text)

    return parse


def _choice(choices: tuple[str, ...]) -> Convert:
    def convert(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return convert


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _port(text: str) -> int:
    port = _number(int)(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (0-65535): {text!r}")
    return int(port)


# -- settings as flags ---------------------------------------------------------


@attrs.frozen
class Option:
    """One command-line option: flag, environment variable, converter, default."""

    dest: str
    convert: Convert
    default: Any
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    is_bool: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def env(self) -> str:
        return env_name(self.dest)


#: Options of ``serve`` that are not Settings fields.
COMMAND_OPTIONS = (
    Option("host", str, "127.0.0.1", "Address to listen on (0.0.0.0 for every IPv4 interface).",
           metavar="ADDRESS"),
    Option("port", _port, 8080, "TCP port; 0 picks a free one.", metavar="PORT"),
    Option("log_level", _choice(LOG_LEVELS), "info",
           "Log level; debug logs every connection and membership change.",
           choices=LOG_LEVELS),
    Option("log_format", _choice(LOG_FORMATS), "text",
           "Log lines as text, or one JSON object per line (with conn_id and room keys).",
           choices=LOG_FORMATS),
    Option("demo", parse_bool, True,
           "Serve the demo chat page at / and the JavaScript client at /js/.",
           metavar="BOOL", is_bool=True),
    Option("metrics", parse_bool, True, "Serve Prometheus metrics at /metrics.",
           metavar="BOOL", is_bool=True),
    Option("gc_threshold", _number(int), 50_000,
           "Allocations between young-generation garbage collections (Python's default "
           "is 700); 0 keeps Python's default. See docs/operations.md.",
           metavar="N"),
)  # fmt: skip


def _settings_docs() -> tuple[dict[str, str], dict[str, str]]:
    """The ``#:`` comment of each Settings field, and the ``# Heading`` above it."""
    docs: dict[str, str] = {}
    sections: dict[str, str] = {}
    pending: list[str] = []
    section = "General"
    try:
        source = inspect.getsource(Settings)
    except (OSError, TypeError):
        return docs, sections
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif stripped.startswith("#"):
            section = stripped[1:].strip()
            pending = []
        elif ":" in stripped and not stripped.startswith(("def ", "class ", '"')):
            name = stripped.split(":", 1)[0].strip()
            if name.isidentifier():
                docs[name] = " ".join(pending)
                sections[name] = section
            pending = []
        else:
            pending = []
    return docs, sections


def _metavar(name: str, base: Any) -> str:
    if base is float and name.endswith(("_timeout", "_interval")):
        return "SECONDS"
    if base is int and name.endswith(("_size", "_bytes", "_length")):
        return "BYTES"
    if base is float:
        return "NUMBER"
    return "N"


def settings_options() -> list[tuple[str, Option]]:
    """An :class:`Option` per Settings field, with its section heading."""
    hints = typing.get_type_hints(Settings)
    docs, sections = _settings_docs()
    options: list[tuple[str, Option]] = []
    for field in attrs.fields(Settings):
        hint = hints[field.name]
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        choices: tuple[str, ...] | None = None
        convert: Convert
        metavar: str | None
        is_bool = False
        if base is bool:
            convert, metavar, is_bool = parse_bool, "BOOL", True
        elif typing.get_origin(base) is typing.Literal:
            choices = tuple(str(a) for a in typing.get_args(base))
            convert, metavar = _choice(choices), None
        elif typing.get_origin(base) is tuple:
            convert, metavar = _comma_list, "A,B,..."
        elif base in (int, float):
            convert, metavar = _number(base), _metavar(field.name, base)
        else:
            convert, metavar = str, "TEXT"
        if optional:
            convert = _optional(convert)
            metavar = f"{metavar}|off" if metavar else None
        doc = docs.get(field.name) or field.name.replace("_", " ").capitalize() + "."
        option = Option(field.name, convert, field.default, doc, metavar, choices, is_bool)
        options.append((sections.get(field.name, "General"), option))
    return options


def _show_default(option: Option) -> str:
    value = option.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _add_option(group: Any, option: Option) -> None:
    # The Settings comments are reStructuredText; on a terminal, None is "off".
    doc = option.help.replace("``None``", "off").replace("``", "")
    text = f"{doc} [env {option.env}; default {_show_default(option)}]".replace("%", "%%")
    kwargs: dict[str, Any] = {
        "dest": option.dest,
        "type": option.convert,
        "default": argparse.SUPPRESS,
        "help": text,
    }
    if option.choices is not None:
        kwargs["choices"] = option.choices
    else:
        kwargs["metavar"] = option.metavar
    if option.is_bool:
        # --root-notices, --root-notices false, --no-root-notices
        kwargs.update(nargs="?", const=True)
    group.add_argument(option.flag, **kwargs)
    if option.is_bool:
        group.add_argument(
            "--no-" + option.flag[2:],
            dest=option.dest,
            action="store_const",
            const=False,
            default=argparse.SUPPRESS,
            help=f"Same as {option.flag} false.",
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``trioroom`` argument parser, with a flag per setting."""
    parser = argparse.ArgumentParser(
        prog="trioroom",
        description="Trio-native room-based WebSocket server (wsrooms protocol).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run a server until Ctrl-C or SIGTERM",
        description=(
            "Serve on one port: the WebSocket endpoint (--path, default /ws), the demo "
            "chat page at /, the JavaScript client at /js/, /healthz and /metrics. "
            "Every option is also an environment variable, TRIOROOM_<OPTION>; a flag "
            "wins over the environment. Booleans take true/false, yes/no, on/off or 1/0. "
            "SIGINT or SIGTERM shuts down gracefully (a second one forces it)."
        ),
    )
    command = serve.add_argument_group("command options")
    for option in COMMAND_OPTIONS:
        _add_option(command, option)
    groups: dict[str, Any] = {}
    for section, option in settings_options():
        if section not in groups:
            groups[section] = serve.add_argument_group(f"server settings: {section.lower()}")
        _add_option(groups[section], option)
    workers.add_cluster_arguments(serve)
    serve.set_defaults(parser=serve)
    return parser


def _resolve(
    options: Sequence[Option], args: argparse.Namespace, environ: Mapping[str, str]
) -> dict[str, Any]:
    """Each option from its flag, else its environment variable; unset ones are left out."""
    values: dict[str, Any] = {}
    for option in options:
        if hasattr(args, option.dest):
            values[option.dest] = getattr(args, option.dest)
            continue
        raw = environ.get(option.env)
        if raw is None:
            continue
        try:
            values[option.dest] = option.convert(raw)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise ValueError(f"{option.env}: {exc}") from None
    return values


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Build Settings from flags, then ``TRIOROOM_*`` variables, then defaults.

    Raises ``ValueError`` for a bad value (naming the variable or setting).
    """
    values = _resolve([option for _, option in settings_options()], args, environ)
    try:
        return Settings(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def command_options(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The values of :data:`COMMAND_OPTIONS` (``host``, ``port``, ``gc_threshold``...)."""
    values = {option.dest: option.default for option in COMMAND_OPTIONS}
    values.update(_resolve(COMMAND_OPTIONS, args, environ))
    return values


# -- running ---------------------------------------------------------------------


def tune_gc(threshold: int) -> None:
    """Make the cyclic garbage collector run less often, and never over start-up objects.

    With Python's default (a collection every 700 net allocations), a busy
    server spends about a tenth of its time in the collector, in pauses of up
    to tens of milliseconds that show up directly in delivery latency.
    Reference counting frees almost everything a connection allocates; the
    collector is only needed for cycles, which a larger threshold still
    finds. ``gc.freeze`` moves what exists now (modules, the server) out of
    every later collection. ``threshold=0`` changes nothing.
    """
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)


def configure_logging(level: str, fmt: str) -> None:
    """Log to stderr, as text or one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s - %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":
        # websockets' per-connection open/close lines are noise at scale.
        logging.getLogger("trioroom.wire").setLevel(logging.WARNING)


def _connections(count: int) -> str:
    return f"{count} connection" + ("" if count == 1 else "s")


def _http_base(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}"


def _still_open(connections: Sequence[Connection]) -> int:
    """How many of ``connections`` have not finished closing."""
    return sum(not conn.closed.is_set() for conn in connections)


async def _report_drain(connections: Sequence[Connection], interval: float) -> None:
    """Say how many connections are still closing, every ``interval`` seconds."""
    while True:
        await trio.sleep(interval)
        left = _still_open(connections)
        if left:
            logger.info("%s left", _connections(left))


async def _shutdown(server: Server, connections: Sequence[Connection]) -> None:
    await server.shutdown()
    left = _still_open(connections)
    if left:
        logger.warning("shutdown deadline reached: cancelling %s", _connections(left))


async def serve(
    server: Server,
    host: str,
    port: int,
    *,
    demo: bool = True,
    progress_interval: float = PROGRESS_INTERVAL,
) -> int:
    """Serve until SIGINT or SIGTERM, then shut down gracefully; returns 0.

    A second signal during the shutdown ends the process at once with status 1.
    """
    started_shutdown: float | None = None
    # Connections leave server.connections when they start closing; these are
    # the ones open at the signal, done once their ``closed`` event is set.
    closing: list[Connection] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run_server(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
                await server.serve(host, port, task_status=task_status)
                # serve() returns once a shutdown closed every connection.
                nursery.cancel_scope.cancel()

            bound_host, bound_port = await nursery.start(run_server)
            address = _http_base(bound_host, bound_port)
            # The first stdout line tells scripts and tests where we listen.
            sys.stdout.write(f"trioroom serving on ws://{address}{server.settings.path}\n")
            sys.stdout.flush()
            if demo:
                logger.info("demo page at http://%s/", address)
            logger.info("health at http://%s/healthz", address)
            async for signum in signals:
                name = signal.Signals(signum).name
                if started_shutdown is None:
                    started_shutdown = trio.current_time()
                    closing = server.connections
                    logger.info(
                        "%s: closing %s (deadline %gs)",
                        name,
                        _connections(len(closing)),
                        server.settings.shutdown_timeout,
                    )
                    nursery.start_soon(_shutdown, server, closing)
                    nursery.start_soon(_report_drain, closing, progress_interval)
                else:
                    # Closing handshakes run shielded (bounded by close_timeout):
                    # cancelling would still wait for them, so leave at once.
                    logger.warning(
                        "%s again: exiting now, without closing the remaining %s",
                        name,
                        _connections(_still_open(closing)),
                    )
                    _exit_now(1)
    if started_shutdown is not None:
        logger.info("stopped after %.1fs", trio.current_time() - started_shutdown)
    return 0


def _exit_now(status: int) -> NoReturn:
    """Flush the output and end the process, skipping any cleanup still running."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(status)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``trioroom`` console script."""
    args = build_parser().parse_args(argv)
    parser: argparse.ArgumentParser = args.parser
    try:
        options = command_options(args, os.environ)
        settings = settings_from_args(args, os.environ)
        cluster = workers.cluster_options(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    configure_logging(options["log_level"], options["log_format"])
    if cluster.supervisor:
        sys.exit(workers.supervise(cluster, argv, options["host"], options["port"], settings.path))
    server = workers.make_server(cluster, settings)
    server.process_request = WebApp(server, demo=options["demo"], metrics=options["metrics"])
    tune_gc(options["gc_threshold"])
    failure = ""
    status = 1
    try:
        status = trio.run(
            lambda: serve(server, options["host"], options["port"], demo=options["demo"])
        )
    except* OSError as group:
        # Typically the port is taken or the address is not ours.
        failure = "; ".join(str(exc) for exc in group.exceptions)
    if failure:
        where = f"{options['host']}:{options['port']}"
        parser.exit(1, f"trioroom: cannot serve on {where}: {failure}\n")
    sys.exit(status)
