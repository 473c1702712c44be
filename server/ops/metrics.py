"""Metrics: plain counters in each worker, aggregated and served by the supervisor.

Why aggregation in the supervisor and not prometheus_client's multiprocess
mode: workers are respawned, and the multiprocess mode keeps one mmap file per
pid in a directory that must be wiped at start and fixed up with
``mark_process_dead`` whenever a process dies; gauges need a per-metric
``multiprocess_mode`` and dead workers' files pile up. Here each process keeps
plain integers (no locks, no files on the hot path) and ships a snapshot once a
second; the supervisor keeps the last snapshot of every worker and folds a dead
worker's last figures into "retired" totals, so counters stay monotonic across
respawns (what a killed worker counted in its last second is lost).

Channels (none touches a client's path):

* worker -> supervisor: a pickled :func:`worker_snapshot` once a second from the
  worker's timer thread, over a per-worker ``AF_UNIX``/``SOCK_SEQPACKET``
  socketpair the supervisor creates (non-blocking; a full socket drops one);
* supervisor -> worker: the latest resource report (for ``STATS``) down the same
  socketpair, read by the same timer thread into ``Worker.report``;
* acceptor -> supervisor: a shared ``multiprocessing.Array`` of counters
  (:data:`ACCEPTOR_SLOTS`), written by the acceptor's one thread;
* manager -> supervisor: ``bus.stats()``, called by the supervisor's sampler
  thread (inbox depth, users, channels, registrations, batches).

The supervisor serves ``/metrics`` (Prometheus text, through a custom
collector on a private ``CollectorRegistry``) and ``/healthz`` from one small
``http.server`` thread. docs/operations.md lists every metric.
"""

from __future__ import annotations

import bisect
import http.server
import json
import logging
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
MESSAGE_KINDS = {"P": "privmsg", "N": "notice", "T": "tagmsg"}
DISCONNECT_REASONS = ("quit", "closed", "sendq", "ping_timeout", "flood", "registration_timeout", "killed",
                      "shutdown", "error", "other")
ACCEPTOR_SLOTS = ("accepted", "refused_full", "refused_per_ip", "refused_busy")
# A worker whose heartbeat is older than this is reported as not responding.
HEARTBEAT_STALE = 3.0


# -- in the worker ----------------------------------------------------------------
class Histogram:
    """Bucket counts, a sum and nothing else: written by one thread only."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> tuple[list[int], float]:
        return list(self.counts), self.sum


class WorkerStats:
    """A worker's counters. Each field has one writer thread, noted below, so
    plain ``+=`` is exact; the timer thread only reads them."""

    def __init__(self) -> None:
        self.messages_in = dict.fromkeys(MESSAGE_KINDS, 0)  # publisher
        self.batch_size = Histogram(BATCH_BUCKETS)  # publisher
        self.latency = Histogram(LATENCY_BUCKETS)  # subscriber
        self.disconnects = dict.fromkeys(DISCONNECT_REASONS, 0)  # client threads, under the lock
        self.lock = threading.Lock()

    def count_disconnect(self, reason: str) -> None:
        key = disconnect_reason(reason)
        with self.lock:
            self.disconnects[key] += 1


def disconnect_reason(reason: str) -> str:
    """The metric label for a session's closing reason."""
    if reason.startswith("Quit"):
        return "quit"
    if reason == "Connection closed" or reason.startswith(("Read error", "WebSocket closed")):
        return "closed"
    if reason == "SendQ exceeded":
        return "sendq"
    if reason.startswith("Ping timeout"):
        return "ping_timeout"
    if reason == "Excess Flood":
        return "flood"
    if reason == "Registration timed out":
        return "registration_timeout"
    if reason.startswith(("Killed", "K-Lined", "K-lined", "Banned")):
        return "killed"
    if reason == "Server shutting down":
        return "shutdown"
    if reason == "Internal error":
        return "error"
    return "other"


def exchange(sock: socket.socket | None, snapshot: dict[str, Any], index: int) -> dict[str, Any] | None:
    """A worker's timer thread, once a second: ship its snapshot up; return the
    latest report the supervisor sent down, if any came."""
    if sock is None:
        return None
    try:
        sock.send(pickle.dumps(snapshot), socket.MSG_DONTWAIT)
    except OSError:
        pass  # full (the supervisor is busy) or gone: the next one will do
    report = None
    while True:
        try:
            data = sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except OSError:
            return report
        if not data:
            return report
        try:
            report = pickle.loads(data)
        except Exception:
            log.warning("worker %d: unreadable report from the supervisor", index)


# -- in the supervisor --------------------------------------------------------------
def _add_hist(into: tuple[list[int], float] | None, h: tuple[list[int], float]) -> tuple[list[int], float]:
    if into is None:
        return list(h[0]), h[1]
    return [a + b for a, b in zip(into[0], h[0], strict=True)], into[1] + h[1]


def _add_counts(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


class Aggregator:
    """What the supervisor knows: the last snapshot of each worker, the totals of
    dead workers, the last resource sample and the health. Written by the
    supervisor's threads, read by the HTTP thread; every method takes the lock
    only to compute."""

    COUNTERS = ("messages_in", "deliveries", "disconnects")
    HISTOGRAMS = ("batch_size", "latency")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.time()
        self.workers: dict[int, dict[str, Any]] = {}
        self.retired: dict[str, Any] = {k: {} for k in self.COUNTERS}
        self.restarts: dict[int, int] = {}
        self.acceptor = dict.fromkeys(ACCEPTOR_SLOTS, 0)
        self.usage: dict[str, dict[str, Any]] = {}
        self.system: dict[str, Any] = {}
        self.bus: dict[str, Any] = {}
        self.bus_time = 0.0
        self.problems: list[str] = ["starting"]

    def update_worker(self, snap: dict[str, Any]) -> None:
        with self.lock:
            self.workers[snap["index"]] = snap

    def retire_worker(self, index: int) -> None:
        """A worker died: keep what it counted, forget its gauges."""
        with self.lock:
            snap = self.workers.pop(index, None)
            self.restarts[index] = self.restarts.get(index, 0) + 1
            if snap is None:
                return
            for k in self.COUNTERS:
                _add_counts(self.retired[k], snap[k])
            for k in self.HISTOGRAMS:
                self.retired[k] = _add_hist(self.retired.get(k), snap[k])

    def set_sample(self, usage: dict[str, dict[str, Any]], system: dict[str, Any],
                   bus: dict[str, Any] | None, acceptor: list[int]) -> None:
        with self.lock:
            self.usage = usage
            self.system = system
            if bus is not None:
                self.bus = bus
                self.bus_time = time.time()
            self.acceptor = dict(zip(ACCEPTOR_SLOTS, acceptor, strict=True))

    def set_health(self, problems: list[str]) -> None:
        with self.lock:
            self.problems = problems

    def view(self) -> dict[str, Any]:
        """A consistent copy of everything, with counters summed over live and
        retired workers."""
        with self.lock:
            totals: dict[str, Any] = {k: dict(self.retired[k]) for k in self.COUNTERS}
            hists: dict[str, Any] = {k: self.retired.get(k) for k in self.HISTOGRAMS}
            for snap in self.workers.values():
                for k in self.COUNTERS:
                    _add_counts(totals[k], snap[k])
                for k in self.HISTOGRAMS:
                    hists[k] = _add_hist(hists[k], snap[k])
            usage = {name: dict(row) for name, row in self.usage.items()}
            sessions = {i: s["sessions"] for i, s in self.workers.items()}
            for i, n in sessions.items():
                if f"worker-{i}" in usage:
                    usage[f"worker-{i}"]["conns"] = n
            return {
                "time": time.time(),
                "started": self.started,
                "connections": sum(sessions.values()),
                "worker_connections": sessions,
                "idle_threads": sum(s.get("idle_threads", 0) for s in self.workers.values()),
                "counters": totals,
                "histograms": hists,
                "restarts": dict(self.restarts),
                "acceptor": dict(self.acceptor),
                "usage": usage,
                "total": total_usage(usage),
                "system": dict(self.system),
                "bus": dict(self.bus),
                "problems": list(self.problems),
            }


def total_usage(usage: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {key: sum(row.get(key, 0) for row in usage.values()) for key in ("cpu", "rss", "threads", "fds", "conns")}


def report_for_workers(view: dict[str, Any]) -> dict[str, Any]:
    """The part of the view ``STATS`` needs (sent down to every worker)."""
    keys = ("time", "started", "connections", "counters", "restarts", "acceptor", "usage", "total", "system")
    out = {k: view[k] for k in keys}
    out["bus"] = {k: v for k, v in view["bus"].items() if k != "depth"}
    out["bus"]["depth"] = dict(view["bus"].get("depth", {}))
    return out


# -- Prometheus ---------------------------------------------------------------------
class Collector:
    """A prometheus_client custom collector over :meth:`Aggregator.view`."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        v = self.aggregator.view()
        bus = v["bus"]

        def gauge(name: str, doc: str, value: float | None = None, labels: list[str] | None = None,
                  rows: list[tuple[list[str], float]] | None = None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, value=value, labels=labels)
            for lv, val in rows or ():
                g.add_metric(lv, val)
            return g

        def counter(name: str, doc: str, value: float | None = None, labels: list[str] | None = None,
                    rows: list[tuple[list[str], float]] | None = None) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, value=value, labels=labels)
            for lv, val in rows or ():
                c.add_metric(lv, val)
            return c

        def histogram(name: str, doc: str, bounds: tuple[float, ...], h: tuple[list[int], float] | None) -> Any:
            counts, total = h if h is not None else ([0] * (len(bounds) + 1), 0.0)
            buckets, acc = [], 0
            for bound, n in zip((*[repr(float(b)) for b in bounds], "+Inf"), counts, strict=True):
                acc += n
                buckets.append((bound, acc))
            return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)

        yield gauge("chatroom_up", "1 while the server answers", 1)
        yield gauge("chatroom_healthy", "1 when every worker, the acceptor and the manager are up",
                    0 if v["problems"] else 1)
        yield gauge("chatroom_start_time_seconds", "When the supervisor started (Unix time)", v["started"])
        # connections
        yield gauge("chatroom_connections", "Client connections held by the workers", v["connections"])
        yield gauge("chatroom_worker_connections", "Client connections held by each worker", labels=["worker"],
                    rows=[([str(i)], n) for i, n in sorted(v["worker_connections"].items())])
        yield gauge("chatroom_idle_client_threads",
                    "Client threads whose client left, waiting thread_keep seconds for the next one",
                    v["idle_threads"])
        yield gauge("chatroom_users", "Registered users (the registry's count)", bus.get("users", 0))
        yield gauge("chatroom_channels", "Channels that exist", bus.get("channels", 0))
        acc = v["acceptor"]
        yield counter("chatroom_connections_accepted", "Connections accepted and handed to a worker",
                      acc["accepted"])
        yield counter("chatroom_connections_refused", "Connections refused by the acceptor, by limit",
                      labels=["reason"], rows=[(["server_full"], acc["refused_full"]),
                                               (["per_ip"], acc["refused_per_ip"]),
                                               (["busy"], acc["refused_busy"])])
        yield counter("chatroom_disconnects", "Connections ended, by reason", labels=["reason"],
                      rows=[([r], v["counters"]["disconnects"].get(r, 0)) for r in DISCONNECT_REASONS])
        yield counter("chatroom_registrations", "Clients that completed registration", bus.get("registrations", 0))
        # messages
        yield counter("chatroom_messages_in", "PRIVMSG/NOTICE/TAGMSG lines clients sent, by kind", labels=["kind"],
                      rows=[([k], v["counters"]["messages_in"].get(k, 0)) for k in MESSAGE_KINDS.values()])
        yield counter("chatroom_deliveries", "Lines delivered to clients from the bus, by kind", labels=["kind"],
                      rows=[([k], v["counters"]["deliveries"].get(k, 0)) for k in ("message", "event")])
        # bus
        yield counter("chatroom_bus_batches", "publish() calls the bus served", bus.get("batches", 0))
        yield counter("chatroom_bus_items", "Items published on the bus", bus.get("published", 0))
        yield histogram("chatroom_bus_batch_size", "Items per published batch (worker side)", BATCH_BUCKETS,
                        v["histograms"]["batch_size"])
        yield histogram("chatroom_bus_latency_seconds", "From a batch's publish() in a worker to its delivery",
                        LATENCY_BUCKETS, v["histograms"]["latency"])
        yield gauge("chatroom_bus_inbox_depth", "Items waiting in each worker's bus inbox", labels=["worker"],
                    rows=[([str(w)], d) for w, d in sorted(bus.get("depth", {}).items())])
        if "node_index" in bus:  # cluster mode (docs/cluster.md)
            yield gauge("chatroom_cluster_up", "1 while this node reaches Redis", int(bus["cluster_available"]))
            yield gauge("chatroom_cluster_redis_rtt_seconds", "The latest Redis round trip (an append or a heartbeat)",
                        bus["cluster_rtt"])
            yield counter("chatroom_cluster_cross_node_deliveries",
                          "Deliveries to this node's workers of lines published on other nodes",
                          bus["cluster_cross_node"])
            yield gauge("chatroom_cluster_pending_publishes",
                        "Batches this node appended to the log and has not applied yet", bus["cluster_pending"])
            yield counter("chatroom_cluster_log_entries", "Log entries this node applied", bus["cluster_applied"])
            yield gauge("chatroom_cluster_nodes", "Nodes the log says are up", bus["cluster_nodes"])
            yield counter("chatroom_cluster_outages", "Times this node lost Redis", bus["cluster_outages"])
            yield counter("chatroom_cluster_lost_logs", "Times the log was lost and rebuilt", bus["cluster_epochs"])
        yield counter("chatroom_worker_restarts", "Times each worker was respawned", labels=["worker"],
                      rows=[([str(i)], n) for i, n in sorted(v["restarts"].items())])
        # resources
        usage = v["usage"]
        for key, name, doc in (
                ("cpu", "chatroom_process_cpu_percent", "CPU % of each process since the last sample"),
                ("rss", "chatroom_process_resident_memory_bytes", "Resident memory of each process"),
                ("threads", "chatroom_process_threads", "Threads of each process"),
                ("fds", "chatroom_process_open_fds", "Open file descriptors of each process"),
                ("conns", "chatroom_process_connections", "Client connections each process holds")):
            yield gauge(name, doc, labels=["process"], rows=[([n], row.get(key, 0)) for n, row in usage.items()])
        total = v["total"]
        yield gauge("chatroom_server_cpu_percent", "CPU % of all server processes", total["cpu"])
        yield gauge("chatroom_server_resident_memory_bytes", "Resident memory of all server processes", total["rss"])
        yield gauge("chatroom_server_threads", "Threads of all server processes", total["threads"])
        yield gauge("chatroom_server_open_fds", "Open file descriptors of all server processes", total["fds"])
        sys_ = v["system"]
        if sys_:
            yield gauge("chatroom_system_load_average", "System load average", labels=["period"],
                        rows=[(["1m"], sys_["load1"]), (["5m"], sys_["load5"]), (["15m"], sys_["load15"])])
            yield gauge("chatroom_system_memory_total_bytes", "Physical memory", sys_["mem_total"])
            yield gauge("chatroom_system_memory_available_bytes", "Memory available", sys_["mem_available"])
            yield gauge("chatroom_system_memory_used_percent", "Memory in use, percent", sys_["mem_percent"])


class _Handler(http.server.BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/healthz":
            problems = self.server.aggregator.view()["problems"]
            body = json.dumps({"status": "fail" if problems else "ok", "problems": problems}) + "\n"
            self._send(503 if problems else 200, "application/json", body.encode())
        else:
            self._send(404, "text/plain", b"not found: try /metrics or /healthz\n")

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


class MetricsServer(http.server.ThreadingHTTPServer):
    """``/metrics`` and ``/healthz`` for one :class:`Aggregator`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], aggregator: Aggregator) -> None:
        from prometheus_client import CollectorRegistry

        self.aggregator = aggregator
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(aggregator))
        super().__init__(address, _Handler)

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="metrics-http", daemon=True).start()
