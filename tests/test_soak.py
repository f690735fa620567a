"""A short soak run: churning connections lose no message and leave no error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_soak(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.soak",
            "--connections",
            "200",
            "--duration",
            "5",
            "--message-interval",
            "0.5",
            "--out",
            str(out),
            "--server-log",
            str(tmp_path / "server.log"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["connections_made"] > 200
    assert report["churn_cycles"] > 0 and report["abrupt_closes"] > 0
    assert report["stable_deliveries_expected"] > 0
    assert report["lost"] == 0
    assert report["stable_members_dropped_by_server"] == 0
    assert report["client_errors"] == 0
    assert report["server_errors_logged"] == 0, (tmp_path / "server.log").read_text()[-3000:]
    assert report["server_exit_code"] == 0
