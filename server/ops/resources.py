"""Resource use of every server process, through psutil.

The supervisor's sampler thread calls :func:`process_usage` and
:func:`system_usage` every ``metrics_interval`` seconds; the log line
(:func:`summary`), ``STATS`` and ``/metrics`` all show that one sample.
Connections held are counted by the server itself (each worker's sessions), not
by psutil: ``net_connections()`` parses the system-wide socket table, far too
slow with tens of thousands of sockets.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import sys
from typing import Any

import psutil

# The cyclic GC's first threshold: allocations (less deallocations) between two
# collections of the youngest generation (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000

M_ARENA_MAX = -8  # glibc's malloc.h

DEFAULT_SWITCH_INTERVAL = 0.005  # CPython's sys.getswitchinterval() at start


def tune_gc() -> None:
    """Make the cyclic GC cheap for a long-running server process: what exists
    at start-up (modules, configuration, tables) is frozen out of every
    collection, and the youngest generation is collected every
    ``GC_YOUNG_THRESHOLD`` allocations instead of 700. The bus's records are
    tuples, and at CPython's default nearly every batch outlived a collection
    of its generation, to be traversed again in the older ones: in a worker
    under overload the GC took 12 % of the process's time (perf). Few of
    those objects form cycles, so the larger threshold costs little memory."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def set_switch_interval(seconds: float) -> None:
    """``sys.setswitchinterval(seconds)`` (Python's 5 ms if ``seconds`` <= 0).

    A thread waiting for the GIL sleeps at most this long before it asks the
    holder to let go, and wakes up each time. A worker under load has hundreds
    of client threads with input waiting for the GIL: at 5 ms their wake-ups
    alone kept both cores busy in the kernel (43,000 voluntary context switches
    a second in one worker) and deliveries fell to a twentieth of the offered
    rate. The interval only bounds how long a thread that never blocks keeps
    the GIL; every read, wait or blocking send hands it over at once."""
    sys.setswitchinterval(seconds if seconds > 0 else DEFAULT_SWITCH_INTERVAL)


def one_malloc_arena() -> bool:
    """Let glibc's ``malloc`` use one arena for all of this process's threads
    (``mallopt(M_ARENA_MAX, 1)``); False where that is not glibc.

    Nearly every allocation is made holding the GIL, so per-thread arenas (glibc makes
    up to eight per core) buy a worker no concurrency; each keeps its own free
    chunks and unused top, about 0.3 KiB per connection of a worker with
    thousands of client threads. Call it before the threads start."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, 1))


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def thread_capacity() -> tuple[int, str]:
    """How many threads this machine lets the server run, and what bounds it.

    Every client is a thread, and on Linux every thread takes an id from
    ``kernel.pid_max`` and counts against ``kernel.threads-max`` and the
    per-user process limit (``RLIMIT_NPROC``, raised here to its hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    limits = []
    for name in ("pid_max", "threads-max"):
        try:
            with open(f"/proc/sys/kernel/{name}") as fh:
                limits.append((int(fh.read()), f"kernel.{name}"))
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY:
        limits.append((soft, "ulimit -u (RLIMIT_NPROC)"))
    return min(limits) if limits else (1 << 31, "nothing")


def process_usage(procs: dict[str, int]) -> dict[str, dict[str, Any]]:
    """CPU %, RSS, threads, fds and start time of each named pid (CPU % since
    the last call for the same pid, as psutil does; 0 on the first call)."""
    out: dict[str, dict[str, Any]] = {}
    for name, pid in procs.items():
        try:
            p = _cached(pid)
            with p.oneshot():
                out[name] = {
                    "pid": pid,
                    "cpu": p.cpu_percent(None),
                    "rss": p.memory_info().rss,
                    "threads": p.num_threads(),
                    "fds": fd_count(p),
                    "conns": 0,
                    "started": p.create_time(),
                }
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            _CACHE.pop(pid, None)
    for pid in set(_CACHE) - set(procs.values()):
        del _CACHE[pid]  # respawned workers: forget the dead
    return out


_CACHE: dict[int, psutil.Process] = {}


def fd_count(p: psutil.Process) -> int:
    """Open files of ``p``: the size Linux (6.2 on) gives ``/proc/PID/fd``, which
    costs nothing; else psutil's listing of that directory, one entry per file
    (a worker holding 12,500 clients: 12,500 entries a sample)."""
    try:
        n = os.stat(f"/proc/{p.pid}/fd").st_size
    except OSError:
        n = 0
    return n if n > 0 else p.num_fds()


def _cached(pid: int) -> psutil.Process:
    p = _CACHE.get(pid)
    if p is None:
        p = _CACHE[pid] = psutil.Process(pid)
        p.cpu_percent(None)
    return p


def system_usage() -> dict[str, Any]:
    load1, load5, load15 = psutil.getloadavg()
    mem = psutil.virtual_memory()
    return {"load1": load1, "load5": load5, "load15": load15, "cpus": psutil.cpu_count() or 1,
            "mem_total": mem.total, "mem_available": mem.available, "mem_percent": mem.percent}


def _rate(now: dict[str, Any], before: dict[str, Any] | None, *path: str) -> float:
    if before is None:
        return 0.0
    dt = float(now["time"] - before["time"])
    if dt <= 0:
        return 0.0

    def total(v: dict[str, Any]) -> float:
        d: Any = v
        for p in path:
            d = d.get(p, {})
        return float(sum(d.values()) if isinstance(d, dict) else d)

    return (total(now) - total(before)) / dt


def summary(view: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """The one-line resource report (see docs/operations.md)."""
    usage, total, sys_ = view["usage"], view["total"], view["system"]
    bus = view["bus"]
    msgs = _rate(view, before, "counters", "messages_in")
    outs = _rate(view, before, "counters", "deliveries")
    parts = " ".join(f"{n}={u['cpu']:.0f}%/{u['rss'] >> 20}MiB/{u['threads']}t/{u['fds']}fd/{u.get('conns', 0)}c"
                     for n, u in usage.items())
    depth = max(bus.get("depth", {}).values(), default=0)
    load = f"load {sys_['load1']:.2f} mem {sys_['mem_percent']:.0f}%" if sys_ else "load ? mem ?"
    return (f"{view['connections']} connections, {bus.get('users', '?')} users, {bus.get('channels', '?')} channels; "
            f"msgs in {msgs:.1f}/s, deliveries {outs:.1f}/s, inbox depth {depth}; "
            f"cpu {total['cpu']:.0f}% rss {total['rss'] >> 20} MiB threads {total['threads']} fds {total['fds']}; "
            f"{load}; {parts}")
