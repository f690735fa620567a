"""The benchmark suite runs end to end (``python -m benchmarks --smoke``).

Seconds of load against trioroom and the two bare peers (bare_trio, and
bare_direct, the direct-I/O ceiling); checks that the report has a number for
every workload, the server-CPU-per-delivery figures and the issue's targets.
Skipped where Node.js/npm are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None, reason="needs Node.js and npm"
    ),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.timeout(300),
]


def test_smoke_run_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--smoke",
            "--no-charts",
            # Smoke numbers are not compared: don't wait minutes for a quiet machine.
            "--wait-quiet",
            "5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "latest.json").read_text())
    assert (out / "latest.md").read_text().startswith("# trioroom benchmarks")
    expected = {
        "verify": "ok",
        "fanout_20": "deliveries_per_s",
        "chat": "latency_p99_ms",
        "churn": "cycles_per_s",
        "idle": "kib_per_conn",
        "dm_1": "rtt_p50_ms",
    }
    # Server CPU per unit of work, and the generator-bound flag.
    per_cpu = {
        "fanout_20": ["deliveries_per_server_cpu_s", "server_us_per_delivery"],
        "chat": ["server_us_per_msg", "msgs_per_server_cpu_s", "server_us_per_delivery"],
        "churn": ["server_us_per_cycle"],
        "dm_1": ["server_us_per_msg"],
    }
    for peer in ("trioroom", "bare_trio", "bare_direct"):
        res = data["results"][peer]
        for item, key in expected.items():
            assert item in res, (peer, item)
            assert "error" not in res[item], (peer, item, res[item].get("error"))
            value = res[item][key]
            assert isinstance(value, (int, float)), (peer, item, key, value)
        for item, keys in per_cpu.items():
            for key in keys:
                value = res[item][key]
                assert isinstance(value, (int, float)) and value > 0, (peer, item, key, value)
            assert isinstance(res[item]["gen_saturated"], bool), (peer, item)
            assert isinstance(res[item]["gen_cpu_pct"], (int, float)), (peer, item)
        assert res["verify"]["ok"] is True, (peer, res["verify"])
        assert res["fanout_20"]["deliveries_per_s"] > 0
        assert res["chat"]["lost"] == 0
        assert res["idle"]["connections"] == data["meta"]["settings"]["idle_conns"]
    fan = data["results"]["bare_direct"]["fanout_20"]
    assert fan["deliveries_per_server_cpu_s"] == pytest.approx(
        1e6 / fan["server_us_per_delivery"], rel=0.01
    )
    # The targets: one row per ratio, computed where both peers ran.
    targets = {t["target"]: t for t in data["targets"]}
    fan_targets = [t for name, t in targets.items() if name.startswith("fan-out 20:")]
    assert {t["reference_peer"] for t in fan_targets} == {"bare_trio", "bare_direct"}
    for t in fan_targets:
        assert isinstance(t["ratio"], float), t
        assert isinstance(t["met"], bool), t
    assert targets["protocol check passes"]["met"] is True
    assert targets["chat: 0 messages lost"]["met"] is True
    md = (out / "latest.md").read_text()
    assert "deliveries per server-CPU-second" in md
    assert "bare_direct" in (out / "readme_table.md").read_text()


def test_memprofile_accounts_for_the_connections_it_opened() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.memprofile", "--conns", "50", "--top", "5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "50 idle connections"
    traced = int(lines[2].split(": ")[1].split(" B/")[0].replace(",", ""))
    # A connection holds at least its tasks, queue and protocol state.
    assert traced > 5_000
    # Every row is attributed to a line of code.
    assert all(":" in line for line in lines[3:8])
