"""``STATS <letter>`` for IRC operators: what each process costs, how many are
on, how fast messages flow. Others get ``481 ERR_NOPRIVILEGES``.

Letters (docs/operations.md):

* ``p``: every process (supervisor, acceptor, manager, each worker): pid, CPU %,
  RSS, threads, open fds, client connections, uptime; then the total;
* ``s``: the system: load averages, memory, CPUs;
* ``c``: counters: connections, registrations, messages in, deliveries out,
  disconnects by reason, refusals, bus batches and inbox depth, worker restarts;
* ``u``: server uptime (``242 RPL_STATSUPTIME``).

Figures come from the supervisor's latest report, which it sends down each
worker's snapshot socketpair after every sample (``metrics_interval``, 1 s by
default): no proxy call, no file, no waiting. Lines are ``249`` (RPL_STATSDEBUG,
the numeric servers use for free-form STATS text), ended by ``219``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from server.irc.commands import command
from server.protocol import Message, RemoteProtocolError
from server.protocol import numerics as N

if TYPE_CHECKING:
    from server.irc.client import Client

RPL_STATSDEBUG = "249"
LETTERS = "pscu"


def _uptime(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 86400} days {s % 86400 // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}MiB"


def stats_lines(letter: str, report: dict[str, Any] | None, now: float | None = None) -> list[tuple[str, ...]]:
    """The replies for one letter (without the final 219)."""
    now = time.time() if now is None else now
    if letter == "u":
        started = report["started"] if report else now
        return [(N.RPL_STATSUPTIME, f"Server Up {_uptime(now - started)}")]
    if report is None:
        return [(RPL_STATSDEBUG, letter, "no resource report yet; try again in a second")]
    out: list[tuple[str, ...]] = []
    if letter == "p":
        out.append((RPL_STATSDEBUG, "p", "process pid cpu rss threads fds conns uptime"))
        for name, u in report["usage"].items():
            out.append((RPL_STATSDEBUG, "p", f"{name} {u['pid']} {u['cpu']:.1f}% {_mib(u['rss'])} {u['threads']} "
                                              f"{u['fds']} {u.get('conns', 0)} {_uptime(now - u['started'])}"))
        t = report["total"]
        out.append((RPL_STATSDEBUG, "p", f"total - {t['cpu']:.1f}% {_mib(t['rss'])} {t['threads']} {t['fds']} "
                                          f"{t['conns']} {_uptime(now - report['started'])}"))
    elif letter == "s":
        s = report["system"]
        if s:
            out.append((RPL_STATSDEBUG, "s", f"load {s['load1']:.2f} {s['load5']:.2f} {s['load15']:.2f} "
                                              f"cpus {s['cpus']}"))
            out.append((RPL_STATSDEBUG, "s", f"memory {s['mem_percent']:.0f}% used, {_mib(s['mem_available'])} "
                                              f"available of {_mib(s['mem_total'])}"))
    elif letter == "c":
        c, bus, acc = report["counters"], report["bus"], report["acceptor"]

        def join(d: dict[str, Any]) -> str:
            return " ".join(f"{k}={v}" for k, v in d.items()) or "-"

        out += [
            (RPL_STATSDEBUG, "c", f"connections {report['connections']} users {bus.get('users', '?')} "
                                  f"channels {bus.get('channels', '?')} registrations {bus.get('registrations', '?')}"),
            (RPL_STATSDEBUG, "c", f"accepted {acc['accepted']} refused full={acc['refused_full']} "
                                  f"per_ip={acc['refused_per_ip']} busy={acc['refused_busy']}"),
            (RPL_STATSDEBUG, "c", f"disconnects {join({k: v for k, v in c['disconnects'].items() if v})}"),
            (RPL_STATSDEBUG, "c", f"messages in {join(c['messages_in'])}"),
            (RPL_STATSDEBUG, "c", f"deliveries {join(c['deliveries'])}"),
            (RPL_STATSDEBUG, "c", f"bus batches {bus.get('batches', '?')} items {bus.get('published', '?')} "
                                  f"inbox depth {join({f'worker-{w}': d for w, d in bus.get('depth', {}).items()})}"),
            (RPL_STATSDEBUG, "c", f"worker restarts {join({f'worker-{w}': n for w, n in report['restarts'].items()})}"),
        ]
    return out


@command("STATS", 1)
def stats(s: Client, msg: Message) -> None:
    """STATS p|s|c|u
    Server statistics (operators only): p processes, s system, c connections, u uptime."""
    if "o" not in s.modes:
        raise RemoteProtocolError(N.ERR_NOPRIVILEGES, text="Permission Denied- You're not an IRC operator")
    letter = msg.params[0][:1]
    replies = stats_lines(letter, s.worker.report) if letter in LETTERS else []
    s.numerics([*replies, (N.RPL_ENDOFSTATS, letter or "*", "End of /STATS report")])
