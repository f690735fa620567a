"""Machine and software versions for the report."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Any

from .procs import LOADGEN, ROOT, have_taskset


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cmd(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    cpu = None
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "cpu_model": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "os": platform.platform(),
        "pinning": "server on cpu 0, generators on cpu 1 (taskset)"
        if have_taskset()
        else "none (taskset missing or one core)",
    }


def _pkg(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _npm_pkg(name: str) -> str | None:
    try:
        with open(LOADGEN / "node_modules" / name / "package.json") as f:
            return str(json.load(f)["version"])
    except (OSError, KeyError, ValueError):
        return None


def versions() -> dict[str, Any]:
    trioroom_version = _pkg("trioroom")
    if trioroom_version is None:
        try:
            sys.path.insert(0, str(ROOT))
            import trioroom

            trioroom_version = getattr(trioroom, "__version__", None)
        except Exception:
            trioroom_version = None
    return {
        "python": platform.python_version(),
        "trioroom": trioroom_version,
        "trioroom_commit": _cmd(["git", "rev-parse", "--short", "HEAD"]),
        "trio": _pkg("trio"),
        "websockets": _pkg("websockets"),
        "trio-websocket": _pkg("trio-websocket"),
        "python-socketio": _pkg("python-socketio"),
        "python-engineio": _pkg("python-engineio"),
        "aiohttp": _pkg("aiohttp"),
        "node": _cmd(["node", "--version"]),
        "ws": _npm_pkg("ws"),
        "bufferutil": _npm_pkg("bufferutil"),
        "socket.io-client": _npm_pkg("socket.io-client"),
    }
