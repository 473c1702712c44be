"""Benchmark scenarios: ``chatroom-bench SCENARIO`` or ``python -m loadtest.bench SCENARIO``.

Scenarios (each prints a short table, then one JSON line, and is bounded in time):

* ``connections``: open N clients at a bounded ramp, all registered and
  answering PING, hold them; held count, time to register, RSS per connection.
* ``fanout``: C clients in one channel, S senders at stepped aggregate rates;
  deliveries/s, p50/p95/p99 latency, losses, saturation (the highest rate with
  p99 < 100 ms and no loss).
* ``rooms``: N clients over K small channels, everyone talking, stepped rates.
* ``churn``: connect, register, join, speak, quit at stepped rates.
* ``cluster``: Redis and ``--nodes`` nodes (``--workers`` each), clients spread
  over the nodes: the rooms phase, then the cross-node latency
  (loadtest/cluster.py).

The server is ours (``--workers N``: started as a subprocess), ngIRCd
(``--ngircd``: started with a temporary config) or anything already running
(``--target host:port``, with ``--pid`` to report its CPU and RSS).
``suite`` runs a list of scenarios against several servers and appends the
JSON lines to a file; ``report`` turns such a file into the markdown tables of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .cluster import ClusterTarget, run_cluster
from .swarm import raise_fd_limit, swarm_main
from .target import Chatroom, NgIRCd, Target, Usage, free_port, rss, source_version

# ---------------------------------------------------------------------------------------------
# generator processes


class Generator:
    """P swarm processes; client i lives in swarm i % P."""

    def __init__(self, target: Target, procs: int, sources: list[str]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        for wid in range(procs):
            parent, child = ctx.Pipe()
            ports = getattr(target, "ports", None) or [target.port]  # a cluster: swarm w on node w % nodes
            p = ctx.Process(target=swarm_main, args=(child, wid, target.host, ports[wid % len(ports)], sources),
                            daemon=True)
            p.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid]

    def call(self, per_swarm: list[tuple[Any, ...]], timeout: float) -> list[tuple[Any, ...]]:
        for pipe, cmd in zip(self.pipes, per_swarm, strict=True):
            pipe.send(cmd)
        out = []
        deadline = time.monotonic() + timeout
        for pipe in self.pipes:
            if not pipe.poll(max(deadline - time.monotonic(), 0.1)):
                raise TimeoutError(f"a generator did not answer {per_swarm[0][0]!r} in {timeout:.0f}s")
            out.append(pipe.recv())
        return out

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("quit",))
            except OSError:
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(2)


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def indices(n: int, parts: int, wid: int) -> list[int]:
    return list(range(wid, n, parts))


# ---------------------------------------------------------------------------------------------
# statistics


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def ms_stats(values_s: list[float]) -> dict[str, float | None]:
    v = sorted(values_s)
    return {f"p{int(q * 100)}_ms": (None if (x := percentile(v, q)) is None else round(x * 1000, 2))
            for q in (0.5, 0.95, 0.99)}


def merge_failures(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


# ---------------------------------------------------------------------------------------------
# phases shared by the scenarios


def connect_all(gen: Generator, n: int, ramp: float, prefix: str,
                timeout: float) -> tuple[int, list[float], dict[str, Any]]:
    p = len(gen.pipes)
    cmds = []
    for wid, count in enumerate(split(n, p)):
        # Swarm wid numbers its clients wid, wid+P, ...: give it a contiguous block
        # instead, and let client numbers be global through ``first``.
        cmds.append(("connect", sum(split(n, p)[:wid]), count, max(ramp / p, 1.0), prefix, timeout))
    budget = n / max(ramp, 1) + timeout + 30
    replies = gen.call(cmds, budget)
    ok = sum(r[1] for r in replies)
    times = [t for r in replies for t in r[3]]
    return ok, times, merge_failures([r[2] for r in replies])


def blocks(n: int, p: int) -> list[range]:
    sizes = split(n, p)
    out, start = [], 0
    for size in sizes:
        out.append(range(start, start + size))
        start += size
    return out


def join_all(gen: Generator, n: int, channel_of: Any, timeout: float = 120.0) -> tuple[int, int]:
    p = len(gen.pipes)
    cmds = [("join", {i: [channel_of(i)] for i in block}, timeout) for block in blocks(n, p)]
    replies = gen.call(cmds, timeout + 30)
    return sum(r[1] for r in replies), sum(r[2] for r in replies)


def measure_step(gen: Generator, target: Target, clients: int, senders: list[int], rate: float, duration: float,
                 fanout: dict[str, int], probes: int, gap: float = 1.5) -> dict[str, Any]:
    """One step at ``rate`` messages/s in total; returns deliveries, latency, losses."""
    p = len(gen.pipes)
    wanted = set(senders)
    mine = [[i for i in block if i in wanted] for block in blocks(clients, p)]
    total = sum(len(m) for m in mine) or 1
    start = time.monotonic() + 0.3
    cmds = [("measure", probes, mine[w], [(start, duration, rate * len(mine[w]) / total)], gap, "")
            for w in range(p)]
    usage = Usage(target, gen.pids)
    usage.start()
    replies = gen.call(cmds, duration + gap + 60)
    res = usage.stop()
    steps = [r[1][0] for r in replies]
    sent = sum(s["sent"] for s in steps)
    received = sum(s["received"] for s in steps)
    per_msg = next(iter(fanout.values())) if len(set(fanout.values())) == 1 else sum(fanout.values()) / len(fanout)
    expected = round(sent * per_msg)
    samples = [x / 1e9 for s in steps for x in s["samples"]]
    out = {"rate_msgs": rate, "sent": sent, "expected": expected, "received": received,
           "lost": max(expected - received, 0), "deliveries_per_s": round(received / duration),
           "samples": len(samples), **ms_stats(samples), **res,
           "alive": sum(s["alive"] for s in steps)}
    fails = merge_failures([s["failures"] for s in steps])
    if fails:
        out["failures"] = fails
    return out


def ok_step(step: dict[str, Any]) -> bool:
    return step["lost"] == 0 and step["p99_ms"] is not None and step["p99_ms"] < 100.0


def rates_from(args: argparse.Namespace) -> list[float]:
    if args.rates:
        return [float(x) for x in args.rates.split(",")]
    return [args.start * args.factor ** i for i in range(args.max_steps)]


# ---------------------------------------------------------------------------------------------
# scenarios


def run_connections(args: argparse.Namespace, target: Target, gen: Generator) -> dict[str, Any]:
    base = rss(target.processes())
    usage = Usage(target, gen.pids)
    usage.start()
    t0 = time.monotonic()
    ok, times, _ = connect_all(gen, args.clients, args.ramp, args.prefix, args.register_timeout)
    ramp_s = time.monotonic() - t0
    ramp_usage = usage.stop()
    hold_end = time.monotonic() + args.hold
    usage.start()
    while time.monotonic() < hold_end:
        time.sleep(min(2.0, max(hold_end - time.monotonic(), 0)))
    replies = gen.call([("status",)] * len(gen.pipes), 60)
    hold_usage = usage.stop()
    held = sum(r[1] for r in replies)
    # Each swarm's failure counts are cumulative: the status replies hold them all.
    fails = merge_failures([r[3] for r in replies])
    total = rss(target.processes())
    out = {"clients": args.clients, "registered": ok, "held": held, "hold_s": args.hold,
           "ramp_per_s": args.ramp, "ramp_s": round(ramp_s, 1), "register": ms_stats(times),
           "failures": fails, "ramp_usage": ramp_usage, "hold_usage": hold_usage}
    if target.processes():
        out["server_rss_mib"] = round(total / 2**20, 1)
        out["rss_per_conn_kib"] = round((total - base) / held / 1024, 2) if held else None
    return out


def stepped(args: argparse.Namespace, target: Target, gen: Generator, senders: list[int],
            fanout: dict[str, int], probes: int) -> list[dict[str, Any]]:
    steps = []
    for rate in rates_from(args):
        step = measure_step(gen, target, args.clients, senders, rate, args.duration, fanout, probes)
        steps.append(step)
        print(f"  step {rate:>9.0f} msg/s: {step['deliveries_per_s']:>9} deliveries/s p99 {step['p99_ms']} ms "
              f"lost {step['lost']} server {step.get('server_cpu_pct', '-')}% gen {step['gen_cpu_pct']}%",
              file=sys.stderr, flush=True)
        if step["alive"] == 0 or (step["p99_ms"] or 0) > args.stop_p99 or step["lost"] > 0.05 * step["expected"]:
            break
    return steps


def passing_prefix(steps: list[dict[str, Any]], ok: Any) -> list[dict[str, Any]]:
    """The steps before the first failing one: on a shared machine a later step
    may pass by luck after an earlier one failed; that is not saturation."""
    out = []
    for s in steps:
        if not ok(s):
            break
        out.append(s)
    return out


def summarise_steps(steps: list[dict[str, Any]]) -> dict[str, Any]:
    good = passing_prefix(steps, ok_step)
    best = good[-1] if good else None
    return {"saturation_deliveries_per_s": best["deliveries_per_s"] if best else 0,
            "saturation_rate_msgs": best["rate_msgs"] if best else 0,
            "saturation_p99_ms": best["p99_ms"] if best else None, "steps": steps}


def run_fanout(args: argparse.Namespace, target: Target, gen: Generator) -> dict[str, Any]:
    chan = "#fanout"
    ok, _times, fails = connect_all(gen, args.clients, args.ramp, args.prefix, args.register_timeout)
    joined, _wanted = join_all(gen, args.clients, lambda i: chan)
    senders = list(range(args.senders))
    out = {"clients": args.clients, "senders": args.senders, "registered": ok, "joined": joined,
           "connect_failures": fails}
    if joined < args.clients:
        out["error"] = f"only {joined} of {args.clients} joined"
        return out
    steps = stepped(args, target, gen, senders, {chan: args.clients - 1}, args.probes)
    out.update(summarise_steps(steps))
    return out


def run_rooms(args: argparse.Namespace, target: Target, gen: Generator) -> dict[str, Any]:
    k = args.channels
    size = args.clients // k

    def channel_of(i: int) -> str:
        return f"#room{i % k}"

    ok, _times, fails = connect_all(gen, args.clients, args.ramp, args.prefix, args.register_timeout)
    joined, _wanted = join_all(gen, args.clients, channel_of)
    out = {"clients": args.clients, "channels": k, "room_size": size, "registered": ok, "joined": joined,
           "connect_failures": fails}
    if joined < args.clients or args.clients % k:
        out["error"] = f"only {joined} of {args.clients} joined" if joined < args.clients else "clients % channels"
        return out
    steps = stepped(args, target, gen, list(range(args.clients)), {channel_of(i): size - 1 for i in range(k)},
                    args.probes)
    out.update(summarise_steps(steps))
    return out


def run_churn(args: argparse.Namespace, target: Target, gen: Generator) -> dict[str, Any]:
    p = len(gen.pipes)
    steps = []
    for n, rate in enumerate(rates_from(args)):
        start = time.monotonic() + 0.3
        usage = Usage(target, gen.pids)
        usage.start()
        cmds = [("churn", start, args.duration, rate / p, f"{args.prefix}{n}w{w}n", args.channels, 10.0,
                 args.max_inflight) for w in range(p)]
        replies = gen.call(cmds, args.duration + 60)
        res = usage.stop()
        rs = [r[1] for r in replies]
        done = sum(r["done"] for r in rs)
        errors = merge_failures([r["errors"] for r in rs])
        step = {"rate": rate, "started": sum(r["started"] for r in rs), "done": done,
                "cycles_per_s": round(done / args.duration, 1), "errors": sum(errors.values()),
                "error_kinds": errors, "skipped": sum(r["skipped"] for r in rs),
                "cycle": ms_stats([t for r in rs for t in r["cycle_times"]]), **res}
        steps.append(step)
        print(f"  step {rate:>7.0f}/s: {step['cycles_per_s']:>8} cycles/s errors {step['errors']} "
              f"skipped {step['skipped']} cycle p99 {step['cycle']['p99_ms']} ms "
              f"server {res.get('server_cpu_pct', '-')}% gen {res['gen_cpu_pct']}%", file=sys.stderr, flush=True)
        if step["errors"] > 0.05 * max(step["started"], 1) or step["skipped"] > 0.05 * rate * args.duration:
            break
    return {"saturation_cycles_per_s": churn_saturation(steps), "steps": steps}


def churn_ok(s: dict[str, Any]) -> bool:
    return (s["errors"] == 0 and s["skipped"] == 0 and s["done"] >= 0.98 * s["started"]
            and (s["cycle"]["p99_ms"] or 0) < 500)


def churn_saturation(steps: list[dict[str, Any]]) -> float:
    good = passing_prefix(steps, churn_ok)
    return good[-1]["cycles_per_s"] if good else 0


PER_SOURCE = 10_000  # generator connections per loopback source address (see main)

SCENARIOS = {"connections": run_connections, "fanout": run_fanout, "rooms": run_rooms, "churn": run_churn,
             "cluster": run_cluster}

# ---------------------------------------------------------------------------------------------
# output


def table(result: dict[str, Any]) -> str:
    sc = result["scenario"]
    head = f"{sc} against {result['server']}"
    lines = [head, "-" * len(head)]
    if sc == "connections":
        r = result
        lines.append(f"held {r['held']} of {r['clients']} (registered {r['registered']}) after {r['hold_s']} s; "
                     f"register p50/p99 {r['register']['p50_ms']}/{r['register']['p99_ms']} ms; "
                     f"ramp {r['ramp_s']} s")
        lines.append(f"server RSS {r.get('server_rss_mib', '-')} MiB, {r.get('rss_per_conn_kib', '-')} KiB/conn; "
                     f"failures {r['failures'] or 'none'}")
        lines.append(f"cpu during ramp: server {r['ramp_usage'].get('server_cpu_pct', '-')}% "
                     f"generator {r['ramp_usage']['gen_cpu_pct']}%")
    elif sc in ("fanout", "rooms", "cluster"):
        if "error" in result:
            lines.append("error: " + result["error"])
        lines.append(f"{'msgs/s':>8} {'deliv/s':>9} {'p50ms':>7} {'p95ms':>7} {'p99ms':>8} {'lost':>7} "
                     f"{'srv%':>5} {'gen%':>5} {'srvMiB':>7}")
        for s in result.get("steps", []):
            lines.append(f"{s['rate_msgs']:>8.0f} {s['deliveries_per_s']:>9} {s['p50_ms']!s:>7} {s['p95_ms']!s:>7} "
                         f"{s['p99_ms']!s:>8} {s['lost']:>7} {s.get('server_cpu_pct', '-')!s:>5} "
                         f"{s['gen_cpu_pct']:>5} {s.get('server_rss_mib', '-')!s:>7}")
        lines.append(f"saturation: {result.get('saturation_deliveries_per_s', 0)} deliveries/s "
                     "(last step before the first with p99 >= 100 ms or a loss)")
        if (lat := result.get("latency_phase")) is not None:
            lines.append(f"latency at {lat['rate_msgs']:.0f} msg/s from node A: same node p50/p99 "
                         f"{lat['local_p50_ms']}/{lat['local_p99_ms']} ms, other node p50/p99 "
                         f"{lat['cross_p50_ms']}/{lat['cross_p99_ms']} ms")
    elif sc == "churn":
        lines.append(f"{'rate':>7} {'cycles/s':>9} {'errors':>7} {'p50ms':>7} {'p99ms':>8} {'srv%':>5} {'gen%':>5}")
        for s in result["steps"]:
            lines.append(f"{s['rate']:>7.0f} {s['cycles_per_s']:>9} {s['errors']:>7} {s['cycle']['p50_ms']!s:>7} "
                         f"{s['cycle']['p99_ms']!s:>8} {s.get('server_cpu_pct', '-')!s:>5} {s['gen_cpu_pct']:>5}")
        lines.append(f"saturation: {result['saturation_cycles_per_s']} cycles/s (no errors, cycle p99 < 500 ms)")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import psutil
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_1m": round(psutil.getloadavg()[0], 2)}


# ---------------------------------------------------------------------------------------------
# command line


@contextmanager
def open_target(args: argparse.Namespace) -> Iterator[Target]:
    if args.target:
        hostport = args.target.removeprefix("irc://").rstrip("/")
        host, _, port = hostport.rpartition(":")
        target = Target(host or "127.0.0.1", int(port), args.pid)
    elif args.ngircd:
        target = NgIRCd(free_port(), ping=int(args.ping_interval))
    else:
        extra = ["--log-level", "WARNING", "--set", f"ping_interval={args.ping_interval}"]
        for item in args.server_set:
            extra += ["--set", item]
        if args.scenario == "cluster":
            target = ClusterTarget(args.nodes, args.workers, extra, root=args.server_root)
        else:
            target = Chatroom(args.workers, extra=extra, root=args.server_root)
    try:
        yield target
    finally:
        target.stop()


DEFAULTS: dict[str, dict[str, Any]] = {
    "connections": {"clients": 1000, "ramp": 500.0},
    "fanout": {"clients": 1000, "senders": 10, "start": 100.0, "factor": 1.5},
    "rooms": {"clients": 1000, "channels": 100, "start": 2000.0, "factor": 1.5},
    "churn": {"start": 100.0, "factor": 1.5, "channels": 50, "clients": 0},
    "cluster": {"clients": 1000, "channels": 100, "start": 2000.0, "factor": 1.5},
}


def add_common(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group()
    who.add_argument("--target", help="load a running server at HOST:PORT (or irc://HOST:PORT)")
    who.add_argument("--ngircd", action="store_true", help="start ngircd (Debian package) on a free port")
    who.add_argument("--workers", type=int, default=None, help="start our server with N workers (default 2)")
    p.add_argument("--pid", type=int, help="with --target: the server's pid, to report its CPU and RSS")
    p.add_argument("--server-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra --set for our server")
    p.add_argument("--server-root", help="run our server from this checkout (default: this one)")
    p.add_argument("--ping-interval", type=float, default=30.0, help="server PING interval (ours and ngircd)")
    p.add_argument("--procs", type=int, default=0, help="generator processes (default: cores, more past 15k)")
    p.add_argument("--sources", type=int, default=0,
                   help="loopback source addresses 127.0.0.2.. (default: one per 10k clients)")
    p.add_argument("--clients", type=int, help="clients")
    p.add_argument("--ramp", type=float, default=500.0, help="new connections per second")
    p.add_argument("--register-timeout", type=float, default=30.0)
    p.add_argument("--prefix", default=None, help="nick prefix (default: random)")
    p.add_argument("--out", help="also append the JSON line to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatroom-bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name in SCENARIOS:
        p = sub.add_parser(name)
        add_common(p)
        if name == "connections":
            p.add_argument("--hold", type=float, default=10.0, help="seconds to hold them")
        else:
            p.add_argument("--rates", help="comma-separated aggregate rates (messages or cycles per second)")
            p.add_argument("--start", type=float, help="first rate when --rates is not given")
            p.add_argument("--factor", type=float, help="rate multiplier between steps")
            p.add_argument("--max-steps", type=int, default=8)
            p.add_argument("--duration", type=float, default=5.0, help="seconds per step")
            p.add_argument("--stop-p99", type=float, default=1000.0, help="stop stepping past this p99 (ms)")
        if name == "fanout":
            p.add_argument("--senders", type=int)
        if name == "cluster":
            p.add_argument("--senders", type=int, default=0, help="fan-out: one channel, N senders (0: rooms)")
        if name in ("rooms", "churn", "cluster"):
            p.add_argument("--channels", type=int)
        if name == "cluster":
            p.add_argument("--nodes", type=int, default=2, help="nodes sharing one Redis (1: one server, no Redis)")
            p.add_argument("--cross-rate", type=float, default=500.0,
                           help="messages/s from node A's clients in the latency phase")
        if name in ("fanout", "rooms", "cluster"):
            p.add_argument("--probes", type=int, default=20, help="latency probes per generator process")
        if name == "churn":
            p.add_argument("--max-inflight", type=int, default=2000)
        p.set_defaults(**DEFAULTS[name])
    return parser


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    raise_fd_limit()
    if args.workers is None and not args.target and not args.ngircd:
        args.workers = 2
    clients = args.clients or 0
    procs = args.procs or max(os.cpu_count() or 1, math.ceil(clients / 15000))
    if args.scenario == "cluster" and not args.procs:
        procs = max(2, args.nodes)  # swarm w on node w % nodes: one swarm per node
    # At most 10k connections per source address: connect() looks for a free
    # ephemeral port in the even half of the range first (about 14k ports), and
    # past that half scans all of it on every call; at 20k per address the last
    # third of a ramp slowed to a crawl in the generator's kernel, and clients
    # timed out registering while the server sat idle.
    nsources = args.sources or max(1, math.ceil(clients / PER_SOURCE))
    sources = [f"127.0.0.{2 + i}" for i in range(nsources)]
    args.prefix = args.prefix or ("b" + secrets.token_hex(2))
    t0 = time.time()
    mach = machine()  # the load average before we start
    with open_target(args) as target:
        gen = Generator(target, procs, sources)
        try:
            body = SCENARIOS[args.scenario](args, target, gen)
        finally:
            gen.close()
    result = {"scenario": args.scenario, "server": target.name, "workers": getattr(target, "workers", None),
              "server_version": source_version(target.root) if isinstance(target, (Chatroom, ClusterTarget)) else None,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "wall_s": round(time.time() - t0, 1),
              "generator_procs": procs, "sources": sources, **body, "machine": mach,
              "argv": list(argv)}
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        from .report import main as report_main
        return report_main(argv[1:])
    args = build_parser().parse_args(argv)
    result = run(args, argv)
    print(table(result), flush=True)
    line = json.dumps(result, separators=(",", ":"))
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(line + "\n")
    bad = result.get("error")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
