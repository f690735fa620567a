"""Build hook: ship the JavaScript client inside the wheel.

``js/*.js`` and ``js/*.d.ts`` are copied to ``trioroom/static/js/`` in the
build directory, so an installed wheel serves them at ``/js/`` with no Node
and no symlink. All other configuration is in ``pyproject.toml``. Editable
installs (``pip install -e .``) copy nothing: ``trioroom.web`` serves the
checkout's ``js/`` directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

JS_SOURCE = Path(__file__).resolve().parent / "js"


class BuildPyWithJsClient(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        files = sorted([*JS_SOURCE.glob("*.js"), *JS_SOURCE.glob("*.d.ts")])
        if not any(path.name == "trioroom.js" for path in files):
            raise RuntimeError(f"the JavaScript client is missing from {JS_SOURCE}")
        target = Path(self.build_lib) / "trioroom" / "static" / "js"
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildPyWithJsClient})
