"""Resource use of every server process, through psutil."""

from __future__ import annotations

import resource
from typing import Any

import psutil


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def process_usage(procs: dict[str, int]) -> dict[str, dict[str, Any]]:
    """CPU %, RSS, threads and fds of each named pid (CPU % since the last call
    for the same pid, as psutil does)."""
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
                    "fds": p.num_fds(),
                }
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            _CACHE.pop(pid, None)
    return out


_CACHE: dict[int, psutil.Process] = {}


def _cached(pid: int) -> psutil.Process:
    p = _CACHE.get(pid)
    if p is None:
        p = _CACHE[pid] = psutil.Process(pid)
        p.cpu_percent(None)
    return p


def summary(usage: dict[str, dict[str, Any]], clients: int) -> str:
    cpu = sum(u["cpu"] for u in usage.values())
    rss = sum(u["rss"] for u in usage.values())
    threads = sum(u["threads"] for u in usage.values())
    load1, _, _ = psutil.getloadavg()
    mem = psutil.virtual_memory()
    parts = " ".join(f"{n}={u['cpu']:.0f}%/{u['rss'] >> 20}MiB" for n, u in usage.items())
    return (f"{clients} clients; cpu {cpu:.0f}% rss {rss >> 20} MiB threads {threads}; "
            f"load {load1:.2f} mem {mem.percent:.0f}%; {parts}")
