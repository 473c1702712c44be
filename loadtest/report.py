"""Markdown tables from the JSON lines of ``chatroom-bench`` runs:
``chatroom-bench report FILE.jsonl`` (used for docs/benchmarks.md).

One table per scenario, one row per server, the ratio to ngIRCd where it was
measured in the same file; then every step of every run.
"""

from __future__ import annotations

import json
import sys
from typing import Any

ORDER = ["chatroom-w1", "chatroom-w2", "chatroom-w4", "ngircd"]


def load(path: str) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip().startswith("{")]


def latest(results: list[dict[str, Any]], scenario: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["scenario"] == scenario:
            out[r["server"]] = r  # the last run of each server wins
    return dict(sorted(out.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99))


def ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "-"
    return f"{value / base:.2f}x"


def vs_ngircd(name: str, value: float | None, base: float | None) -> str:
    """The "vs ngIRCd" cell: ngIRCd's own row is the 1.00x baseline."""
    return "1.00x" if name == "ngircd" else ratio(value, base)


def best_step(r: dict[str, Any], key: str, value: float) -> dict[str, Any] | None:
    for s in r.get("steps", []):
        if s.get(key) == value:
            step: dict[str, Any] = s
            return step
    return None


def cpu(step: dict[str, Any] | None) -> str:
    if not step:
        return "-"
    procs = step.get("server_cpu_procs_pct") or []
    top = f" (busiest {procs[0]:.0f}%)" if len(procs) > 1 else ""
    return f"{step.get('server_cpu_pct', '-')}%{top} / {step.get('gen_cpu_pct', '-')}%"


def traffic(results: list[dict[str, Any]], scenario: str) -> list[str]:
    runs = latest(results, scenario)
    base = runs.get("ngircd", {}).get("saturation_deliveries_per_s")
    lines = ["| server | saturation deliveries/s | at msgs/s | p99 ms | server CPU / generator CPU | "
             "most delivered (any p99) | vs ngIRCd |", "|---|---:|---:|---:|---|---:|---:|"]
    for name, r in runs.items():
        sat = r.get("saturation_deliveries_per_s", 0)
        step = best_step(r, "deliveries_per_s", sat) if sat else None
        top = max((s["deliveries_per_s"] for s in r.get("steps", []) if s["lost"] == 0), default=0)
        top_step = best_step(r, "deliveries_per_s", top)
        top_txt = f"{top:,} (p99 {top_step['p99_ms']} ms)" if top_step else "-"
        lines.append(f"| {name} | {sat:,} | {r.get('saturation_rate_msgs', 0):,.0f} | "
                     f"{r.get('saturation_p99_ms', '-')} | {cpu(step)} | {top_txt} | "
                     f"{vs_ngircd(name, sat, base)} |")
    return lines


def churn(results: list[dict[str, Any]]) -> list[str]:
    runs = latest(results, "churn")
    base = runs.get("ngircd", {}).get("saturation_cycles_per_s")
    lines = ["| server | cycles/s (no errors, p99 < 500 ms) | cycle p50 / p99 ms | server CPU / generator CPU | "
             "first failing step | vs ngIRCd |", "|---|---:|---|---|---|---:|"]
    for name, r in runs.items():
        sat = r["saturation_cycles_per_s"]
        step = next((s for s in r["steps"] if s["cycles_per_s"] == sat), None)
        bad = next((s for s in r["steps"] if s["cycles_per_s"] > sat or s["rate"] > (step or {}).get("rate", 0)),
                   None)
        bad_txt = (f"{bad['rate']:.0f}/s: {bad['cycles_per_s']} done/s, {bad['errors']} errors, "
                   f"{bad['skipped']} skipped, p99 {bad['cycle']['p99_ms']} ms") if bad else "none"
        lat = f"{step['cycle']['p50_ms']} / {step['cycle']['p99_ms']}" if step else "-"
        lines.append(f"| {name} | {sat:,} | {lat} | {cpu(step)} | {bad_txt} | "
                     f"{vs_ngircd(name, sat, base)} |")
    return lines


def connections(results: list[dict[str, Any]]) -> list[str]:
    runs = latest(results, "connections")
    base = runs.get("ngircd", {}).get("held")
    lines = ["| server | held / tried | hold s | register p50 / p99 ms | server RSS MiB | RSS per conn KiB | "
             "ramp CPU server / gen | failures | vs ngIRCd |", "|---|---:|---:|---|---:|---:|---|---|---:|"]
    for name, r in runs.items():
        fails = ", ".join(f"{k}: {v}" for k, v in r["failures"].items()) or "none"
        u = r["ramp_usage"]
        lines.append(f"| {name} | {r['held']:,} / {r['clients']:,} | {r['hold_s']:.0f} | "
                     f"{r['register']['p50_ms']} / {r['register']['p99_ms']} | {r.get('server_rss_mib', '-')} | "
                     f"{r.get('rss_per_conn_kib', '-')} | {u.get('server_cpu_pct', '-')}% / {u['gen_cpu_pct']}% | "
                     f"{fails} | {vs_ngircd(name, r['held'], base)} |")
    return lines


def steps(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        if r["scenario"] in ("fanout", "rooms"):
            out += [f"`{r['server']}` {r['scenario']} ({r['date']}, load before {r['machine'].get('loadavg_1m')}):",
                    "", "| msgs/s | deliveries/s | p50 | p95 | p99 ms | lost | server CPU (per process) | gen CPU |",
                    "|---:|---:|---:|---:|---:|---:|---|---:|"]
            for s in r["steps"]:
                out.append(f"| {s['rate_msgs']:.0f} | {s['deliveries_per_s']:,} | {s['p50_ms']} | {s['p95_ms']} | "
                           f"{s['p99_ms']} | {s['lost']} | {s.get('server_cpu_pct', '-')}% "
                           f"{s.get('server_cpu_procs_pct', '')} | {s['gen_cpu_pct']}% |")
            out.append("")
        elif r["scenario"] == "churn":
            out += [f"`{r['server']}` churn ({r['date']}, load before {r['machine'].get('loadavg_1m')}):", "",
                    "| rate/s | done/s | errors | skipped | p50 | p99 ms | server CPU | gen CPU |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for s in r["steps"]:
                out.append(f"| {s['rate']:.0f} | {s['cycles_per_s']} | {s['errors']} | {s['skipped']} | "
                           f"{s['cycle']['p50_ms']} | {s['cycle']['p99_ms']} | {s.get('server_cpu_pct', '-')}% | "
                           f"{s['gen_cpu_pct']}% |")
            out.append("")
    return out


def render(results: list[dict[str, Any]]) -> str:
    out = ["### Fan-out (C=1000 in one channel, S=10 senders)", "", *traffic(results, "fanout"), "",
           "### Rooms (1000 clients, 100 channels of 10, everyone talking)", "", *traffic(results, "rooms"), "",
           "### Churn (connect, register, join, speak, quit)", "", *churn(results), "",
           "### Connections held", "", *connections(results), "",
           "### Every step", "", *steps(results)]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: chatroom-bench report RESULTS.jsonl", file=sys.stderr)
        return 2
    print(render(load(argv[0])))
    return 0
