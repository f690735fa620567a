"""The JavaScript client and the demo page are part of the built Python package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_build_copies_the_js_client_and_demo_into_the_package(tmp_path: Path) -> None:
    # Build from a copy, so the checkout gets no build/ or egg-info directory.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "trioroom", source / "trioroom", ignore=shutil.ignore_patterns("__pycache__")
    )
    (source / "js").mkdir()
    client = sorted([*(ROOT / "js").glob("*.js"), *(ROOT / "js").glob("*.d.ts")])
    for path in client:
        shutil.copy(path, source / "js" / path.name)
    build = tmp_path / "build"
    # build_py is the step of `pip wheel` that fills the wheel's trioroom/ directory.
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    static = build / "trioroom" / "static"
    assert sorted(p.name for p in (static / "js").iterdir()) == [p.name for p in client]
    for path in client:
        assert (static / "js" / path.name).read_bytes() == path.read_bytes()
    demo = sorted(p.name for p in (static / "demo").iterdir())
    assert demo == ["app.js", "index.html", "style.css"]
    assert (build / "trioroom" / "web.py").is_file()
