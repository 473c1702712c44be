"""The ``cluster`` scenario of ``chatroom-bench``: Redis and N nodes of ours.

:class:`ClusterTarget` starts ``redis-server`` (no persistence) on a free
loopback port and ``--nodes`` servers (``--workers`` each) joined to it; the
generator's swarm ``w`` connects to node ``w % nodes``, so with two generator
processes and two nodes half the clients are on each node and every room of
the rooms phase has members on both. Then :func:`run_cluster`:

1. the rooms phase (``run_rooms``: everyone talks in small rooms, stepped rates),
   or with ``--senders N`` the fan-out phase (``run_fanout``: everyone in one
   channel, the first N clients, all on node A, talk);
2. a latency phase: only node A's clients (swarm 0) send, at ``--cross-rate``;
   swarm 1's probes (on node B) see only lines that crossed the cluster
   (``cross_*``), swarm 0's only lines that stayed on node A (``local_*``).

``--nodes 1`` runs the same phases against one server without Redis (then
both halves are on the same node: the baseline).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from typing import Any

import psutil

from .target import Chatroom, Target, free_port, wait_listening


class ClusterTarget(Target):
    """redis-server plus ``nodes`` Chatroom servers sharing it."""

    def __init__(self, nodes: int, workers: int, extra: list[str], root: str | None = None) -> None:
        self.nodes: list[Chatroom] = []
        self.redis: subprocess.Popen[bytes] | None = None
        rport = free_port()
        node_extra = list(extra)
        if nodes > 1:
            exe = shutil.which("redis-server") or "/usr/bin/redis-server"
            self.redis_dir = tempfile.mkdtemp(prefix="chatroom-bench-redis-")
            self.redis = subprocess.Popen([exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no", "--dir", self.redis_dir],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
            if not wait_listening("127.0.0.1", rport, self.redis, 15):
                raise RuntimeError("redis-server did not start")
            node_extra += ["--cluster-url", f"redis://127.0.0.1:{rport}/0"]
        try:
            for i in range(nodes):
                names = ["--node-name", f"bench{i}"] if nodes > 1 else []
                self.nodes.append(Chatroom(workers, extra=[*node_extra, *names], root=root))
        except BaseException:
            self.stop()
            raise
        first = self.nodes[0]
        super().__init__(first.host, first.port)
        self.ports = [n.port for n in self.nodes]
        self.root = first.root
        self.workers = workers
        self.name = f"chatroom-{nodes}x-w{workers}" + ("-redis" if nodes > 1 else "")

    def processes(self) -> list[psutil.Process]:
        out = [p for n in self.nodes for p in n.processes()]
        if self.redis is not None:
            try:
                out.append(psutil.Process(self.redis.pid))
            except psutil.Error:
                pass
        return out

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        if self.redis is not None and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait(5)
        if getattr(self, "redis_dir", None):
            shutil.rmtree(self.redis_dir, ignore_errors=True)


def run_cluster(args: argparse.Namespace, target: Target, gen: Any) -> dict[str, Any]:
    from .bench import blocks, ms_stats, run_fanout, run_rooms

    # --senders N: fan-out (everyone in one channel, the first N clients, all on node A, talk)
    out = run_fanout(args, target, gen) if args.senders else run_rooms(args, target, gen)
    if "error" in out:
        return out
    p = len(gen.pipes)
    on_a = list(range(args.senders)) if args.senders else list(blocks(args.clients, p)[0])
    start = time.monotonic() + 0.3
    cmds = [("measure", args.probes, on_a if w == 0 else [],
             [(start, args.duration, args.cross_rate if w == 0 else 0.0)], 1.5, "") for w in range(p)]
    replies = gen.call(cmds, args.duration + 60)
    steps = [r[1][0] for r in replies]
    nodes = len(getattr(target, "ports", [0]))
    local = [x / 1e9 for w, s in enumerate(steps) if w % nodes == 0 for x in s["samples"]]
    cross = [x / 1e9 for w, s in enumerate(steps) if w % nodes != 0 or (nodes == 1 and w > 0) for x in s["samples"]]
    if nodes == 1:
        local = [x / 1e9 for x in steps[0]["samples"]]
    out["latency_phase"] = {
        "rate_msgs": args.cross_rate, "sent": steps[0]["sent"],
        **{f"local_{k}": v for k, v in ms_stats(local).items()},
        **{f"cross_{k}": v for k, v in ms_stats(cross).items()},
        "local_samples": len(local), "cross_samples": len(cross),
    }
    return out
