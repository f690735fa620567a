# ruff: noqa: RUF001  (the report uses multiplication signs and dashes on purpose)
"""latest.md (tables + targets), latest.json and the PNG charts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .stats import Hist

REF_BARE = "bare_trio"
REF_WS = "websockets"
SUBJECT = "trioroom"


def rows_for(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(item, key, label) rows of the main table, in order."""
    settings = data["meta"]["settings"]
    rows: list[tuple[str, str, str]] = []
    for size in settings["fanout_sizes"]:
        it = f"fanout_{size}"
        rows += [
            (it, "deliveries_per_s", f"fan-out {size}: deliveries/s"),
            (it, "messages_per_s", f"fan-out {size}: messages/s sent"),
            (it, "latency_p50_ms", f"fan-out {size}: latency p50 (ms)"),
            (it, "latency_p99_ms", f"fan-out {size}: latency p99 (ms)"),
            (it, "server_cpu_pct", f"fan-out {size}: server CPU (% of a core)"),
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
        (
            "chat_sweep",
            "max_msgs_per_s",
            f"chat: max offered msgs/s with p99 < {settings['chat_sweep_p99_ms']:g} ms",
        ),
        ("churn", "cycles_per_s", "churn: connect+join+close cycles/s"),
        ("churn", "cycle_p99_ms", "churn: cycle time p99 (ms)"),
        ("churn", "errors", "churn: failed cycles"),
        ("churn", "server_cpu_pct", "churn: server CPU (% of a core)"),
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


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on this run."""
    settings = data["meta"]["settings"]
    out: list[dict[str, Any]] = []

    def add(name: str, shown: str, ok: bool | None) -> None:
        out.append({"target": name, "value": shown, "met": ok})

    def v(peer: str, item: str, key: str) -> Any:
        x = value(data, peer, item, key)
        return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None

    for size in settings["fanout_sizes"]:
        it = f"fanout_{size}"
        r = ratio(v(SUBJECT, it, "deliveries_per_s"), v(REF_BARE, it, "deliveries_per_s"))
        add(
            f"fan-out {size} deliveries/s ≥ 0.8× bare trio",
            fmt_ratio(r),
            None if r is None else r >= 0.8,
        )
        r = ratio(v(SUBJECT, it, "deliveries_per_s"), v(REF_WS, it, "deliveries_per_s"))
        add(
            f"fan-out {size} deliveries/s ≥ 3× websockets",
            fmt_ratio(r),
            None if r is None else r >= 3,
        )
    r = ratio(v(SUBJECT, "chat", "latency_p99_ms"), v(REF_BARE, "chat", "latency_p99_ms"))
    add("chat p99 ≤ 1.2× bare trio's", fmt_ratio(r), None if r is None else r <= 1.2)
    lost = v(SUBJECT, "chat", "lost")
    add("chat: no lost messages", fmt(lost), None if lost is None else lost == 0)
    kib = v(SUBJECT, "idle", "kib_per_conn")
    add(
        f"idle memory ≤ 16 KiB/connection ({settings['idle_conns']:,} conns)",
        fmt(kib),
        None if kib is None else kib <= 16,
    )
    setup = v(SUBJECT, "idle", "setup_s")
    add(
        f"{settings['idle_conns']:,} connections set up in < 10 s",
        fmt(setup),
        None if setup is None else setup < 10,
    )
    churn = v(SUBJECT, "churn", "cycles_per_s")
    add("churn ≥ 1,500 cycles/s", fmt(churn), None if churn is None else churn >= 1500)
    return out


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
        f"payload {s['payload_size']} B; fan-out window {s['fanout_window']} messages in flight; "
        f"chat {s['chat_conns']} connections in rooms of {s['chat_room_size']}, one message "
        f"every {s['chat_interval_ms']:g} ms each; churn {s['churn_concurrency']} concurrent "
        f"workers; idle {s['idle_conns']:,} connections; DM pairs {s['dm_pairs']}; "
        f"wsrooms load client: {s['client']}. A fresh server for every workload."
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

    t = targets(data)
    lines.append("## Targets (trioroom)")
    lines.append("")
    lines.append("| target | this run | met? |")
    lines.append("|---|---:|:---:|")
    for row in t:
        met = {True: "✅ yes", False: "❌ no", None: "n/a"}[row["met"]]
        lines.append(f"| {row['target']} | {row['value']} | {met} |")
    lines.append("")

    lines.append("## Results")
    lines.append("")
    has_bare = REF_BARE in peers and SUBJECT in peers
    has_ws = REF_WS in peers and SUBJECT in peers
    head = ["metric", *[f"`{p}`" for p in peers]]
    if has_bare:
        head.append("trioroom / bare")
    if has_ws:
        head.append("trioroom / websockets")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---|" + "---:|" * (len(head) - 1))
    for item, key, label in rows_for(data):
        if item == "chat_sweep" and not s.get("chat_sweep"):
            continue
        vals = [value(data, p, item, key) for p in peers]
        if all(v is None for v in vals):
            continue
        cells = [label, *[fmt(v) for v in vals]]
        if has_bare:
            cells.append(
                fmt_ratio(ratio(value(data, SUBJECT, item, key), value(data, REF_BARE, item, key)))
            )
        if has_ws:
            cells.append(
                fmt_ratio(ratio(value(data, SUBJECT, item, key), value(data, REF_WS, item, key)))
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Ratios are trioroom's value divided by the peer's: above 1 is better for "
        "deliveries/s, cycles/s and round trips/s, below 1 is better for latencies, "
        "memory and setup time."
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
            if isinstance(r.get("gen_cpu_pct"), (int, float)) and r["gen_cpu_pct"] > 90:
                notes.append(
                    f"`{p}` {item}: generators used {r['gen_cpu_pct']:.0f}% of core 1 – "
                    "this number may be bound by the load generator"
                )
    if errors or notes:
        lines.append("## Errors and notes")
        lines.append("")
        for p, item, err in errors:
            lines.append(f"- `{p}` {item}: **error** {err}")
        for n in notes:
            lines.append(f"- {n}")
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
                parts.append(
                    f"{st['offered_msgs_per_s']:,} → p99 {fmt(st['p99_ms'])} ms{lost} {mark}"
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

    # 1. fan-out throughput
    sizes = s["fanout_sizes"]
    if any(value(data, p, f"fanout_{n}", "deliveries_per_s") for p in peers for n in sizes):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        width = 0.8 / max(1, len(peers))
        for i, p in enumerate(peers):
            ys = [num(value(data, p, f"fanout_{n}", "deliveries_per_s")) / 1000 for n in sizes]
            xs = [k + i * width for k in range(len(sizes))]
            ax.bar(xs, ys, width, label=p, color=colors[p])
        ax.set_xticks([k + width * (len(peers) - 1) / 2 for k in range(len(sizes))])
        ax.set_xticklabels([f"room of {n}" for n in sizes])
        ax.set_ylabel("deliveries/s (thousands)")
        ax.set_title("Fan-out: one sender, deliveries per second (higher is better)")
        ax.legend()
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
        ("churn", "cycles_per_s", "churn cycles/s (higher is better)", 1500),
        ("idle", "kib_per_conn", "idle RSS KiB/connection (lower is better)", 16),
        ("idle", "setup_s", f"{s['idle_conns']:,} connections setup s (lower is better)", 10),
    ]
    items = [it for it in items if any(value(data, p, it[0], it[1]) for p in peers)]
    if items:
        fig, axes = plt.subplots(1, len(items), figsize=(4.2 * len(items), 4.2), squeeze=False)
        for ax, (item, key, title, target) in zip(axes[0], items, strict=False):
            ys = [num(value(data, p, item, key)) for p in peers]
            ax.bar(range(len(peers)), ys, color=[colors[p] for p in peers])
            ax.axhline(target, color="grey", lw=0.8, ls="--")
            ax.set_xticks(range(len(peers)))
            ax.set_xticklabels(peers, rotation=45, ha="right", fontsize=8)
            ax.set_title(title, fontsize=10)
        fig.suptitle("Connection churn and idle memory (dashed: trioroom target)")
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
    slim = json.loads(json.dumps(data))
    # Keep the chat histograms (the CDF chart); drop the others from latest.json.
    for res in slim["results"].values():
        for item, r in res.items():
            if isinstance(r, dict) and item != "chat":
                r.pop("_hist", None)
    (out / "latest.json").write_text(json.dumps(slim, indent=1) + "\n")
    return [out / "latest.md", out / "latest.json", *[out / c for c in made]]
