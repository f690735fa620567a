"""The ``trioroom`` command line.

``trioroom serve`` runs a server. Every field of :class:`~trioroom.Settings` is
a flag (``--queue-frames 512``) and an environment variable
(``TRIOROOM_QUEUE_FRAMES=512``); a flag wins over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from .log import JsonFormatter, TextFormatter
from .server import Server
from .settings import Settings

__all__ = ["main", "settings_from_args"]

logger = logging.getLogger("trioroom.cli")

ENV_PREFIX = "TRIOROOM_"


def _env_name(dest: str) -> str:
    return ENV_PREFIX + dest.upper()


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _field_doc() -> dict[str, str]:
    """The ``#:`` comments of Settings, used as help texts."""
    import inspect

    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(Settings).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif ":" in stripped and pending and not stripped.startswith("#"):
            docs[stripped.split(":", 1)[0].strip()] = " ".join(pending)
            pending = []
        elif not stripped.startswith("#"):
            pending = []
    return docs


def _add_settings_arguments(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Add a flag per setting; return each setting's text-to-value converter."""
    types: dict[str, Any] = {}
    docs = _field_doc()
    group = parser.add_argument_group("server settings (also TRIOROOM_<NAME> variables)")
    for field in attrs.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        env = _env_name(field.name)
        default = field.default
        help_text = f"{docs.get(field.name, '')} [env {env}; default {default!r}]"
        kind: Any
        type_name = str(field.type)
        if type_name == "bool":
            types[field.name] = _parse_bool
            group.add_argument(
                flag, dest=field.name, type=_parse_bool, nargs="?", const=True, help=help_text
            )
            if field.name == "root_notices":
                group.add_argument(
                    "--no-root-notices",
                    dest=field.name,
                    action="store_const",
                    const=False,
                    help="Shorthand for --root-notices false.",
                )
            continue
        if type_name == "int":
            kind = int
        elif type_name in ("float", "float | None"):
            kind = _optional_float
        elif field.name == "allowed_origins":
            kind = _origin_list
        else:
            kind = str
        types[field.name] = kind
        group.add_argument(flag, dest=field.name, type=kind, help=help_text)
    return types


def _optional_float(text: str) -> float | None:
    if text.strip().lower() in ("none", "off", ""):
        return None
    return float(text)


def _origin_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def settings_from_args(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """Build Settings from flags, then ``TRIOROOM_*`` variables, then defaults."""
    values: dict[str, Any] = {}
    parser_types: dict[str, Any] = getattr(args, "setting_types", {})
    for field in attrs.fields(Settings):
        value = getattr(args, field.name, None)
        if value is None:
            raw = environ.get(_env_name(field.name))
            if raw is not None:
                convert = parser_types.get(field.name, str)
                value = convert(raw)
        if value is not None:
            values[field.name] = value
    return Settings(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioroom", description="Trio-native room-based WebSocket server (wsrooms protocol)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a server until Ctrl-C or SIGTERM")
    serve.add_argument(
        "--host",
        default=os.environ.get(_env_name("host"), "127.0.0.1"),
        help="address to listen on [env TRIOROOM_HOST; default 127.0.0.1]",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(_env_name("port"), "8080")),
        help="TCP port; 0 picks a free one [env TRIOROOM_PORT; default 8080]",
    )
    serve.add_argument(
        "--log-level",
        default=os.environ.get(_env_name("log_level"), "info"),
        choices=["debug", "info", "warning", "error"],
        help="[env TRIOROOM_LOG_LEVEL; default info]",
    )
    serve.add_argument(
        "--log-format",
        default=os.environ.get(_env_name("log_format"), "text"),
        choices=["text", "json"],
        help="[env TRIOROOM_LOG_FORMAT; default text]",
    )
    serve.set_defaults(setting_types=_add_settings_arguments(serve))
    return parser


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


async def _serve(server: Server, host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        bound_host, bound_port = await nursery.start(server.serve, host, port)
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        # The first stdout line tells scripts and tests where we listen.
        sys.stdout.write(f"trioroom serving on ws://{shown}:{bound_port}{server.settings.path}\n")
        sys.stdout.flush()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logger.info(
                    "%s: closing %d connections (deadline %.0fs)",
                    signal.Signals(signum).name,
                    len(server.connections),
                    server.settings.shutdown_timeout,
                )
                await server.shutdown()
                break
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``trioroom`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        settings = settings_from_args(args, dict(os.environ))
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    server = Server(settings)
    trio.run(_serve, server, args.host, args.port)
