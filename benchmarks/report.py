# ruff: noqa: RUF001  (the report uses multiplication signs and dashes on purpose)
"""latest.md (tables + targets), latest.json and the PNG charts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .stats import Hist

REF_BARE = "bare_trio"
REF_DIRECT = "bare_direct"
REF_WS = "websockets"
SUBJECT = "trioroom"
#: Peers trioroom gets a ratio column against, in this order.
RATIO_PEERS = (REF_BARE, REF_DIRECT, REF_WS)
#: Server-CPU figures: not bound by the generator, so never flagged.
CPU_KEYS = frozenset(
    {
        "deliveries_per_server_cpu_s",
        "server_us_per_delivery",
        "msgs_per_server_cpu_s",
        "server_us_per_msg",
        "server_us_per_cycle",
        "cycles_per_server_cpu_s",
        "server_cpu_pct",
    }
)
GEN_MARK = "⚠"


def rows_for(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(item, key, label) rows of the main table, in order."""
    settings = data["meta"]["settings"]
    rows: list[tuple[str, str, str]] = []
    for size in settings["fanout_sizes"]:
        it = f"fanout_{size}"
        rows += [
            (
                it,
                "deliveries_per_server_cpu_s",
                f"**fan-out {size}: deliveries per server-CPU-second**",
            ),
            (it, "server_us_per_delivery", f"fan-out {size}: server CPU µs per delivery"),
            (it, "deliveries_per_s", f"fan-out {size}: deliveries/s"),
            (it, "messages_per_s", f"fan-out {size}: messages/s sent"),
            (it, "latency_p50_ms", f"fan-out {size}: latency p50 (ms)"),
            (it, "latency_p99_ms", f"fan-out {size}: latency p99 (ms)"),
            (it, "server_cpu_pct", f"fan-out {size}: server CPU (% of a core)"),
            (it, "gen_cpu_pct", f"fan-out {size}: generator CPU (% of core 1)"),
        ]
    rate = settings["chat_conns"] * 1000 / settings["chat_interval_ms"]
    chat = f"chat {settings['chat_conns']}/{settings['chat_room_size']}"
    rows += [
        ("chat", "offered_msgs_per_s", f"{chat}: offered msgs/s (target {rate:,.0f})"),
        ("chat", "deliveries_per_s", f"{chat}: deliveries/s"),
        ("chat", "latency_p50_ms", f"{chat}: latency p50 (ms)"),
        ("chat", "latency_p99_ms", f"{chat}: latency p99 (ms)"),
        ("chat", "latency_p999_ms", f"{chat}: latency p99.9 (ms)"),
        ("chat", "lost", f"{chat}: lost messages"),
        ("chat", "server_cpu_pct", f"{chat}: server CPU (% of a core)"),
        ("chat", "server_us_per_msg", f"{chat}: server CPU µs per message in"),
        ("chat", "gen_cpu_pct", f"{chat}: generator CPU (% of core 1)"),
        (
            "chat_sweep",
            "max_msgs_per_s",
            f"chat: max offered msgs/s with p99 < {settings['chat_sweep_p99_ms']:g} ms",
        ),
        ("churn", "cycles_per_s", "churn: connect+join+close cycles/s"),
        ("churn", "cycle_p99_ms", "churn: cycle time p99 (ms)"),
        ("churn", "errors", "churn: failed cycles"),
        ("churn", "server_cpu_pct", "churn: server CPU (% of a core)"),
        ("churn", "server_us_per_cycle", "churn: server CPU µs per cycle"),
        ("idle", "kib_per_conn", f"idle {settings['idle_conns']:,}: server RSS KiB/connection"),
        ("idle", "setup_s", f"idle {settings['idle_conns']:,}: setup time (s)"),
        ("idle", "connects_per_s", f"idle {settings['idle_conns']:,}: connects/s"),
    ]
    for pairs in settings["dm_pairs"]:
        it = f"dm_{pairs}"
        rows += [
            (it, "round_trips_per_s", f"DM {pairs} pair{'s' if pairs > 1 else ''}: round trips/s"),
            (it, "rtt_p50_ms", f"DM {pairs} pair{'s' if pairs > 1 else ''}: RTT p50 (ms)"),
            (it, "rtt_p99_ms", f"DM {pairs} pair{'s' if pairs > 1 else ''}: RTT p99 (ms)"),
            (
                it,
                "server_us_per_msg",
                f"DM {pairs} pair{'s' if pairs > 1 else ''}: server CPU µs per message",
            ),
            (
                it,
                "gen_cpu_pct",
                f"DM {pairs} pair{'s' if pairs > 1 else ''}: generator CPU (% of core 1)",
            ),
        ]
    rows.append(("*", "gen_cpu_pct", "max generator CPU, all workloads (% of core 1)"))
    return rows


def value(data: dict[str, Any], peer: str, item: str, key: str) -> Any:
    res = data["results"].get(peer, {})
    if item == "*":
        vals = [
            r.get(key)
            for r in res.values()
            if isinstance(r, dict) and isinstance(r.get(key), (int, float))
        ]
        return max(vals) if vals else None
    r = res.get(item)
    if not isinstance(r, dict):
        return None
    if "error" in r and key not in r:
        return "error"
    return r.get(key)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or isinstance(a, bool):
        return None
    if b == 0:
        return None
    return a / b


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def num_or_none(x: Any) -> float | None:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def gen_saturated(data: dict[str, Any], peer: str, item: str) -> bool:
    r = data["results"].get(peer, {}).get(item)
    return bool(isinstance(r, dict) and r.get("gen_saturated"))


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's targets, evaluated on this run: trioroom's figure, the
    reference peer's, their ratio and whether it is met. ``value`` is the
    ratio as shown."""
    settings = data["meta"]["settings"]
    out: list[dict[str, Any]] = []

    def v(peer: str, item: str, key: str) -> float | None:
        return num_or_none(value(data, peer, item, key))

    def rel(name: str, item: str, key: str, ref: str, factor: float, higher: bool = True) -> None:
        a, b = v(SUBJECT, item, key), v(ref, item, key)
        r = ratio(a, b)
        met = None if r is None else (r >= factor if higher else r <= factor)
        bound = [p for p in (SUBJECT, ref) if gen_saturated(data, p, item)]
        out.append(
            {
                "target": name,
                "item": item,
                "key": key,
                "reference_peer": ref,
                "trioroom": a,
                "reference": b,
                "ratio": None if r is None else round(r, 3),
                "value": fmt_ratio(r),
                "met": met,
                # Rates of a generator-bound run may be the generator's limit.
                "gen_saturated": bound if key not in CPU_KEYS else [],
            }
        )

    def absolute(name: str, item: str, key: str, shown: Any, met: bool | None) -> None:
        out.append(
            {
                "target": name,
                "item": item,
                "key": key,
                "reference_peer": None,
                "trioroom": shown,
                "reference": None,
                "ratio": None,
                "value": fmt(shown),
                "met": met,
                "gen_saturated": [],
            }
        )

    for size in settings["fanout_sizes"]:
        it = f"fanout_{size}"
        key = "deliveries_per_server_cpu_s"
        rel(
            f"fan-out {size}: deliveries per server-CPU-second ≥ 2× bare_trio", it, key, REF_BARE, 2
        )
        rel(
            f"fan-out {size}: deliveries per server-CPU-second ≥ 0.8× bare_direct",
            it,
            key,
            REF_DIRECT,
            0.8,
        )
    pairs = max(settings["dm_pairs"])
    plural = "pairs" if pairs > 1 else "pair"
    it = f"dm_{pairs}"
    rel(f"DM {pairs} {plural}: round trips/s ≥ 2× bare_trio", it, "round_trips_per_s", REF_BARE, 2)
    rel(
        f"DM {pairs} {plural}: round trips/s ≥ 0.9× websockets",
        it,
        "round_trips_per_s",
        REF_WS,
        0.9,
    )
    rel(
        f"chat: highest rate with p99 < {settings['chat_sweep_p99_ms']:g} ms ≥ 2× bare_trio's",
        "chat_sweep",
        "max_msgs_per_s",
        REF_BARE,
        2,
    )
    rel("churn: cycles/s ≥ 1.0× websockets", "churn", "cycles_per_s", REF_WS, 1.0)
    rel(
        f"idle memory per connection ({settings['idle_conns']:,} connections) ≤ bare_trio's",
        "idle",
        "kib_per_conn",
        REF_BARE,
        1.0,
        higher=False,
    )
    lost = v(SUBJECT, "chat", "lost")
    absolute("chat: 0 messages lost", "chat", "lost", lost, None if lost is None else lost == 0)
    ok = value(data, SUBJECT, "verify", "ok")
    absolute(
        "protocol check passes",
        "verify",
        "ok",
        ok if isinstance(ok, bool) else None,
        ok if isinstance(ok, bool) else None,
    )
    return out


def targets_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| target | trioroom | reference | ratio | met? |",
        "|---|---:|---:|---:|:---:|",
    ]
    for row in data.get("targets") or targets(data):
        met = {True: "✅ yes", False: "❌ no", None: "n/a"}[row["met"]]
        ref = row["reference_peer"]
        refv = "" if ref is None else f"{fmt(row['reference'])} (`{ref}`)"
        mark = f" {GEN_MARK}" if row["gen_saturated"] else ""
        lines.append(
            f"| {row['target']} | {fmt(row['trioroom'])} | {refv} | "
            f"{fmt_ratio(row['ratio']) if ref else '–'}{mark} | {met} |"
        )
    return lines


GEN_NOTE = (
    f"{GEN_MARK}: the load generators used more than 90 % of their core (core 1) in "
    "that run, so its rates and latencies may be the generator's limit, not the "
    "server's; server CPU per delivery is the figure to compare there."
)


def markdown(data: dict[str, Any], charts: list[str]) -> str:
    meta = data["meta"]
    peers = meta["peer_order"]
    s = meta["settings"]
    m = meta["machine"]
    ver = meta["versions"]
    lines: list[str] = []
    lines.append(f"# trioroom benchmarks ({meta['mode']} run)")
    lines.append("")
    lines.append(
        f"Run {meta['started']} – {meta['finished']} ({meta['elapsed_s']:.0f} s): "
        f"`{meta['command']}`. How to run and read: [docs/benchmarks.md](../../docs/benchmarks.md)."
    )
    lines.append("")
    lines.append(
        f"**Machine:** {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}; {m['pinning']}."
    )
    lines.append("")
    lines.append(
        "**Versions:** " + ", ".join(f"{k} {v}" for k, v in ver.items() if v is not None) + "."
    )
    lines.append("")
    lines.append(
        f"**Settings:** warm-up {s['warmup_s']:g} s, measured {s['duration_s']:g} s per workload; "
        f"payload {s['payload_size']} B; fan-out window {s['fanout_window']} messages in flight, "
        f"at most {s.get('fanout_lag_window', '–')} ahead of the slowest receiver process; "
        f"chat {s['chat_conns']} connections in rooms of {s['chat_room_size']}, one message "
        f"every {s['chat_interval_ms']:g} ms each; churn {s['churn_concurrency']} concurrent "
        f"workers; idle {s['idle_conns']:,} connections; DM pairs {s['dm_pairs']}; "
        f"wsrooms load client: {s['client']}. A fresh server for every workload."
        + (
            f" Fan-out, churn and DM measured {meta['repeat']} times each, the peers "
            "alternated; each is reported from the measurement with the median figure "
            '(the spread is under "Repeated measurements").'
            if meta.get("repeat", 1) > 1
            else ""
        )
    )
    lines.append("")
    lines.append("**Peers:**")
    for p in peers:
        info = meta["peers"][p]
        ok = data["results"].get(p, {}).get("verify", {}).get("ok")
        check = {
            True: "protocol check passed",
            False: "protocol check FAILED",
            None: "not checked",
        }[ok]
        lines.append(f"- `{p}` – {info['note']} ({check}).")
    lines.append("")

    lines.append("## Targets (trioroom, issue 15)")
    lines.append("")
    lines += targets_table(data)
    lines.append("")
    lines.append(
        "Ratio = trioroom's figure / the reference peer's, from this run. Fan-out is "
        "judged on deliveries per server-CPU-second: the Node generator saturates its "
        "core at these rates, and a generator-bound deliveries/s hides the server's cost. "
        + GEN_NOTE
    )
    lines.append("")

    lines.append("## Results")
    lines.append("")
    refs = [r for r in RATIO_PEERS if r in peers and SUBJECT in peers and r != SUBJECT]
    head = ["metric", *[f"`{p}`" for p in peers], *[f"trioroom / {r}" for r in refs]]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---|" + "---:|" * (len(head) - 1))
    marked = False
    for item, key, label in rows_for(data):
        if item == "chat_sweep" and not s.get("chat_sweep"):
            continue
        vals = [value(data, p, item, key) for p in peers]
        if all(v is None for v in vals):
            continue
        cells = [label]
        for p, x in zip(peers, vals, strict=True):
            flag = key not in CPU_KEYS and x is not None and gen_saturated(data, p, item)
            marked = marked or flag
            cells.append(fmt(x) + (f" {GEN_MARK}" if flag else ""))
        for r in refs:
            cells.append(
                fmt_ratio(ratio(value(data, SUBJECT, item, key), value(data, r, item, key)))
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Ratios are trioroom's value divided by the peer's: above 1 is better for "
        "deliveries/s, deliveries per server-CPU-second, cycles/s and round trips/s, "
        "below 1 is better for latencies, µs per delivery or message, memory and setup time."
        + (" " + GEN_NOTE if marked else "")
    )
    lines.append("")

    errors = [
        (p, item, r["error"])
        for p in peers
        for item, r in data["results"].get(p, {}).items()
        if isinstance(r, dict) and r.get("error")
    ]
    notes = []
    for p in peers:
        for item, r in data["results"].get(p, {}).items():
            if not isinstance(r, dict):
                continue
            if r.get("closed_early"):
                notes.append(
                    f"`{p}` {item}: {r['closed_early']} connections closed by the server "
                    "during the run"
                )
            if r.get("failed"):
                notes.append(f"`{p}` {item}: {r['failed']} connections failed")
            if r.get("errors"):
                notes.append(f"`{p}` {item}: {r['errors']} errors: {r.get('error_kinds')}")
            c0, srv = r.get("cpu0_busy_pct"), r.get("server_cpu_pct")
            if isinstance(c0, (int, float)) and isinstance(srv, (int, float)) and c0 - srv > 15:
                notes.append(
                    f"`{p}` {item}: core 0 was {c0:.0f}% busy while the server used "
                    f"{srv:.0f}%: other processes ran on the server's core"
                )
            c1, gen = r.get("cpu1_busy_pct"), r.get("gen_cpu_pct")
            if isinstance(c1, (int, float)) and isinstance(gen, (int, float)) and c1 - gen > 25:
                notes.append(
                    f"`{p}` {item}: core 1 was {c1:.0f}% busy while the generators used "
                    f"{gen:.0f}%: other processes ran on the generators' core"
                )
            if r.get("gen_saturated") or (
                isinstance(r.get("gen_cpu_pct"), (int, float)) and r["gen_cpu_pct"] > 90
            ):
                notes.append(
                    f"{GEN_MARK} `{p}` {item}: generators used {r['gen_cpu_pct']:.0f}% of "
                    "core 1 – its rates may be bound by the load generator"
                )
    if errors or notes:
        lines.append("## Errors and notes")
        lines.append("")
        for p, item, err in errors:
            lines.append(f"- `{p}` {item}: **error** {err}")
        for n in notes:
            lines.append(f"- {n}")
        lines.append("")

    repeated = [
        (p, item, r)
        for p in peers
        for item, r in data["results"].get(p, {}).items()
        if isinstance(r, dict) and r.get("rounds")
    ]
    if repeated:
        lines.append("## Repeated measurements")
        lines.append("")
        lines.append(
            "Each round's figure (deliveries per server-CPU-second for fan-out, cycles/s for "
            "churn, round trips/s for DM); the tables above report the median round."
        )
        lines.append("")
        for p, item, r in repeated:
            figures = ", ".join(fmt(x) for x in r["rounds"])
            lines.append(f"- `{p}` {item}: {figures}")
        lines.append("")

    sweep_rows = [(p, data["results"].get(p, {}).get("chat_sweep")) for p in peers]
    sweep_rows = [(p, r) for p, r in sweep_rows if isinstance(r, dict) and r.get("steps")]
    if sweep_rows:
        lines.append("## Chat sweep steps")
        lines.append("")
        for p, r in sweep_rows:
            parts = []
            for st in r["steps"]:
                lost = "" if st["lost"] == 0 else f" ({st['lost']:,} lost)"
                mark = "✓" if st["ok"] else "✗"
                gen = f" {GEN_MARK}" if st.get("gen_saturated") else ""
                parts.append(
                    f"{st['offered_msgs_per_s']:,} → p99 {fmt(st['p99_ms'])} ms{lost} {mark}{gen}"
                )
            steps = ", ".join(parts)
            lines.append(f"- `{p}`: {steps}")
        lines.append("")

    if charts:
        lines.append("## Charts")
        lines.append("")
        for c in charts:
            lines.append(f"![{c}]({c})")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------- README part

README_BEGIN = "<!-- benchmarks:begin (written by python -m benchmarks --readme) -->"
README_END = "<!-- benchmarks:end -->"


def readme_section(data: dict[str, Any]) -> str:
    """The README's benchmark table and targets, from this run."""
    meta = data["meta"]
    peers = meta["peer_order"]
    s = meta["settings"]
    m = meta["machine"]
    commit = meta["versions"].get("trioroom_commit") or "?"

    def cell(p: str, item: str, key: str) -> str:
        x = value(data, p, item, key)
        flag = key not in CPU_KEYS and x is not None and gen_saturated(data, p, item)
        return fmt(x) + (f" {GEN_MARK}" if flag else "")

    rows: list[tuple[str, list[str]]] = []
    for n in s["fanout_sizes"]:
        it = f"fanout_{n}"
        rows.append(
            (
                f"**fan-out to {n:,}, deliveries per server-CPU-second**",
                [cell(p, it, "deliveries_per_server_cpu_s") for p in peers],
            )
        )
        rows.append(
            (f"fan-out to {n:,}, deliveries/s", [cell(p, it, "deliveries_per_s") for p in peers])
        )
    rate = s["chat_conns"] * 1000 / s["chat_interval_ms"]
    rows.append(
        (
            f"chat {s['chat_conns']:,} conns / rooms of {s['chat_room_size']} at "
            f"{rate:,.0f} msg/s: p99 ms, lost",
            [f"{cell(p, 'chat', 'latency_p99_ms')}, {cell(p, 'chat', 'lost')}" for p in peers],
        )
    )
    if s.get("chat_sweep"):
        rows.append(
            (
                f"chat: highest msg/s with p99 < {s['chat_sweep_p99_ms']:g} ms",
                [cell(p, "chat_sweep", "max_msgs_per_s") for p in peers],
            )
        )
    rows.append(
        ("churn, connect+join+close per s", [cell(p, "churn", "cycles_per_s") for p in peers])
    )
    rows.append(
        (
            f"idle memory per connection ({s['idle_conns']:,}), KiB",
            [cell(p, "idle", "kib_per_conn") for p in peers],
        )
    )
    for k in s["dm_pairs"]:
        it = f"dm_{k}"
        rows.append(
            (
                f"DM {k} pair{'s' if k > 1 else ''}: round trips/s, RTT p50 / p99 ms",
                [
                    f"{cell(p, it, 'round_trips_per_s')}, {cell(p, it, 'rtt_p50_ms')} / "
                    f"{cell(p, it, 'rtt_p99_ms')}"
                    for p in peers
                ],
            )
        )
    lines = [
        README_BEGIN,
        f"Latest {meta['mode']} run (`{meta['command'].strip()}`), trioroom at commit "
        f"{commit}, on {m['cpu_model']} ({m['cores']} cores; {m['pinning']}):",
        "",
        "| metric | " + " | ".join(meta["peers"][p]["label"] for p in peers) + " |",
        "|---|" + "---:|" * len(peers),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    lines += ["", "Targets of issue 15, from the same run:", ""]
    lines += targets_table(data)
    lines += ["", GEN_NOTE, README_END]
    return "\n".join(lines)


def splice_readme(readme: Path, section: str) -> bool:
    """Replace the README's part between the markers; False if it has none."""
    text = readme.read_text()
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return False
    readme.write_text(text[:a] + section + text[b + len(README_END) :])
    return True


# --------------------------------------------------------------- charts


def charts(data: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    peers = data["meta"]["peer_order"]
    s = data["meta"]["settings"]
    made: list[str] = []
    colors = {
        p: c
        for p, c in zip(peers, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3, strict=False)
    }

    def num(v: Any) -> float:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan

    # 1. fan-out: deliveries per server-CPU-second (the headline) and deliveries/s
    sizes = s["fanout_sizes"]
    if any(value(data, p, f"fanout_{n}", "deliveries_per_s") for p in peers for n in sizes):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        width = 0.8 / max(1, len(peers))
        panels = [
            ("deliveries_per_server_cpu_s", "deliveries per server-CPU-second (thousands)"),
            ("deliveries_per_s", "deliveries/s (thousands)"),
        ]
        for ax, (key, ylabel) in zip(axes, panels, strict=True):
            for i, p in enumerate(peers):
                ys = [num(value(data, p, f"fanout_{n}", key)) / 1000 for n in sizes]
                xs = [k + i * width for k in range(len(sizes))]
                bars = ax.bar(xs, ys, width, label=p, color=colors[p])
                if key in CPU_KEYS:
                    continue
                # Hatched: the generators used > 90 % of their core (generator-bound).
                for b, n in zip(bars, sizes, strict=True):
                    if gen_saturated(data, p, f"fanout_{n}"):
                        b.set_hatch("//")
                        b.set_edgecolor("black")
            ax.set_xticks([k + width * (len(peers) - 1) / 2 for k in range(len(sizes))])
            ax.set_xticklabels([f"room of {n}" for n in sizes])
            ax.set_ylabel(ylabel)
        axes[0].set_title("Server CPU efficiency (higher is better)", fontsize=10)
        axes[1].set_title("Deliveries/s (hatched: generator > 90 % of its core)", fontsize=10)
        axes[0].legend(fontsize=8)
        fig.suptitle("Fan-out: one sender, a room of N members")
        fig.tight_layout()
        fig.savefig(out / "fanout.png", dpi=110)
        plt.close(fig)
        made.append("fanout.png")

    # 2. latency percentiles per workload
    panels = [(f"fanout_{n}", "latency", f"fan-out {n}") for n in sizes]
    panels += [
        ("chat", "latency", "chat"),
        *[(f"dm_{k}", "rtt", f"DM RTT, {k} pair(s)") for k in s["dm_pairs"]],
    ]
    panels = [pn for pn in panels if any(value(data, p, pn[0], f"{pn[1]}_p50_ms") for p in peers)]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 4.2), squeeze=False)
        for ax, (item, prefix, title) in zip(axes[0], panels, strict=False):
            for i, p in enumerate(peers):
                p50 = num(value(data, p, item, f"{prefix}_p50_ms"))
                p99 = num(value(data, p, item, f"{prefix}_p99_ms"))
                ax.bar(i - 0.2, p50, 0.4, color=colors[p], alpha=0.55)
                ax.bar(i + 0.2, p99, 0.4, color=colors[p])
            ax.set_yscale("log")
            lows = [num(value(data, p, item, f"{prefix}_p50_ms")) for p in peers]
            lows = [x for x in lows if x == x and x > 0]
            if lows:
                ax.set_ylim(bottom=min(lows) / 3)
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _pos: f"{y:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xticks(range(len(peers)))
            ax.set_xticklabels(peers, rotation=45, ha="right", fontsize=8)
            ax.set_title(title, fontsize=10)
            ax.set_ylabel("ms (light: p50, dark: p99)", fontsize=8)
        fig.suptitle("Latency (lower is better)")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        made.append("latency.png")

    # 3. chat latency CDF
    hists = {p: data["results"].get(p, {}).get("chat", {}).get("_hist") for p in peers}
    if any(hists.values()):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for p in peers:
            h = hists[p]
            if not h:
                continue
            pts = Hist.merge([h]).cdf_points()
            ax.plot([x for x, _ in pts], [y for _, y in pts], label=p, color=colors[p])
        ax.set_xscale("log")
        ax.set_xlabel("delivery latency (ms)")
        ax.set_ylabel("fraction of deliveries")
        ax.axvline(50, color="grey", lw=0.8, ls="--")
        ax.set_title(
            f"Chat latency CDF: {s['chat_conns']} connections, rooms of {s['chat_room_size']}, "
            f"every {s['chat_interval_ms']:g} ms"
        )
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "chat_cdf.png", dpi=110)
        plt.close(fig)
        made.append("chat_cdf.png")

    # 4. churn and idle
    items = [
        ("churn", "cycles_per_s", "churn cycles/s (higher is better)", REF_WS),
        ("idle", "kib_per_conn", "idle RSS KiB/connection (lower is better)", REF_BARE),
        ("idle", "setup_s", f"{s['idle_conns']:,} connections setup s (lower is better)", None),
    ]
    items = [it for it in items if any(value(data, p, it[0], it[1]) for p in peers)]
    if items:
        fig, axes = plt.subplots(1, len(items), figsize=(4.2 * len(items), 4.2), squeeze=False)
        for ax, (item, key, title, ref) in zip(axes[0], items, strict=False):
            ys = [num(value(data, p, item, key)) for p in peers]
            ax.bar(range(len(peers)), ys, color=[colors[p] for p in peers])
            target = num(value(data, ref, item, key)) if ref else math.nan
            if target == target:
                ax.axhline(target, color="grey", lw=0.8, ls="--")
            ax.set_xticks(range(len(peers)))
            ax.set_xticklabels(peers, rotation=45, ha="right", fontsize=8)
            ax.set_title(title, fontsize=10)
        fig.suptitle(
            "Connection churn and idle memory (dashed: trioroom's target, the reference peer)"
        )
        fig.tight_layout()
        fig.savefig(out / "churn_idle.png", dpi=110)
        plt.close(fig)
        made.append("churn_idle.png")
    return made


def write(data: dict[str, Any], out: Path, with_charts: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = charts(data, out) if with_charts else []
    data["targets"] = targets(data)
    md = markdown(data, made)
    (out / "latest.md").write_text(md + "\n")
    (out / "readme_table.md").write_text(readme_section(data) + "\n")
    slim = json.loads(json.dumps(data))
    # Keep the chat histograms (the CDF chart); drop the others from latest.json.
    for res in slim["results"].values():
        for item, r in res.items():
            if isinstance(r, dict) and item != "chat":
                r.pop("_hist", None)
    (out / "latest.json").write_text(json.dumps(slim, indent=1) + "\n")
    return [
        out / "latest.md",
        out / "latest.json",
        out / "readme_table.md",
        *[out / c for c in made],
    ]
