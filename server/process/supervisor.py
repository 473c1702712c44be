"""The supervisor: starts the manager, the workers and the acceptor, then loops
over small verbs (gunicorn's arbiter is the model): handle signals, reap and
respawn workers, murder hung ones, check health, report resources.

Observability (server/metrics.py): each worker ships a counter snapshot once a
second over its own socketpair, which this loop reads; a sampler thread takes
psutil figures and the bus's stats; ``/metrics`` and ``/healthz`` are served
from a small HTTP thread when ``metrics_port`` is set.

Signal handlers only enqueue; the loop acts. SIGTERM/SIGINT stop the server
(every client gets ``ERROR :Server shutting down``), SIGHUP reloads the
configuration in every process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import secrets
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.bus.local.manager import ChatManager, _init_bus, successor
from server.ops import config as config_mod
from server.ops.config import Config
from server.ops.logs import setup_logging
from server.ops.metrics import ACCEPTOR_SLOTS, HEARTBEAT_STALE, Aggregator, MetricsServer, report_for_workers
from server.ops.resources import process_usage, raise_fd_limit, summary, system_usage, thread_capacity, tune_gc
from server.ops.tls import TLSConfigError, context_from
from server.process.acceptor import run_acceptor
from server.process.lifeline import die_with_parent
from server.process.worker import BOOT_ERROR, run_worker

log = logging.getLogger("server.process.supervisor")

EXIT_BOOT_ERROR = 3
EXIT_LISTEN_ERROR = 2
EXIT_STORAGE_ERROR = 4  # also the manager's exit code when it cannot store (server/bus/local/bus.py)
MAX_RESTARTS_PER_MINUTE = 5
SAMPLER_SHARE = 0.02  # of one core, at most, for the resource sampler (Supervisor.sampler)


class ManagerBootError(Exception):
    """The manager process died before serving (its initializer failed)."""


def sd_notify(state: str) -> None:
    """Tell systemd (``Type=notify``) about our state over ``$NOTIFY_SOCKET``,
    with the standard library's socket; nothing when not run by systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


@dataclass
class WorkerSlot:
    index: int
    process: Any
    heartbeat: Any
    started: float
    restarts: int = 0
    stats: socket.socket | None = None  # our end of the worker's snapshot socketpair
    ready: bool = False  # its first snapshot arrived


class Supervisor:
    def __init__(self, config: Config, argv: list[str]) -> None:
        self.config = config
        self.argv = argv
        self.ctx = multiprocessing.get_context("fork")
        self.slots: dict[int, WorkerSlot] = {}
        self.signals: list[int] = []
        self.stopping = False
        self.exit_code = 0
        self.manager: ChatManager | None = None
        self.bus: Any = None
        self.acceptor: Any = None
        self.control: socket.socket | None = None
        self.listeners: list[socket.socket] = []
        self.tls_listeners: list[socket.socket] = []
        self.acceptor_ends: dict[int, socket.socket] = {}
        self.manager_deaths: list[float] = []
        self.acceptor_deaths: list[float] = []
        self.last_report = time.monotonic()
        self.sel = selectors.DefaultSelector()
        self.aggregator = Aggregator()
        self.acceptor_counters: Any = self.ctx.Array("q", len(ACCEPTOR_SLOTS), lock=False)
        self.metrics_server: MetricsServer | None = None
        self.current_pids: dict[str, int] = {}
        self.sample_seq = 0
        self.sent_seq = 0
        self.sampler_wake = threading.Event()
        self.problems: list[str] = ["starting"]
        self.last_view: dict[str, Any] | None = None

    # -- start ----------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        raise_fd_limit()
        threads, bound = thread_capacity()
        if threads < cfg.max_connections + 1000:
            log.warning("this machine runs at most about %d threads (%s), fewer than max_connections=%d "
                        "(a thread per client): raise it (e.g. sysctl -w kernel.pid_max=4194304) or lower "
                        "max_connections", threads, bound, cfg.max_connections)
        try:
            lsock = socket.create_server((cfg.host, cfg.port), backlog=4096, reuse_port=False)
        except OSError as exc:
            print(f"chatroom-server: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}", file=sys.stderr)
            raise SystemExit(EXIT_LISTEN_ERROR) from None
        lsock.set_inheritable(False)
        self.listeners = [lsock]
        self.port = lsock.getsockname()[1]
        if cfg.tls_cert:  # TLS is on when a certificate is configured (docs/security.md)
            try:
                context_from(cfg)
                tsock = socket.create_server((cfg.host, cfg.tls_port), backlog=4096, reuse_port=False)
            except TLSConfigError as exc:
                print(f"chatroom-server: {exc}", file=sys.stderr)
                raise SystemExit(EXIT_LISTEN_ERROR) from None
            except OSError as exc:
                print(f"chatroom-server: cannot listen on {cfg.host}:{cfg.tls_port}: {exc.strerror or exc}",
                      file=sys.stderr)
                raise SystemExit(EXIT_LISTEN_ERROR) from None
            tsock.set_inheritable(False)
            self.tls_listeners = [tsock]
            self.tls_port = tsock.getsockname()[1]
        self.ws_listeners: list[tuple[socket.socket, bool]] = []
        if cfg.websocket:  # IRC over WebSocket, for browsers (server/process/websocket.py)
            if cfg.websocket_tls and not cfg.tls_cert:
                print("chatroom-server: websocket_tls needs tls_cert (and tls_key)", file=sys.stderr)
                raise SystemExit(EXIT_LISTEN_ERROR)
            try:
                wsock = socket.create_server((cfg.host, cfg.websocket_port), backlog=4096, reuse_port=False)
            except OSError as exc:
                print(f"chatroom-server: cannot listen on {cfg.host}:{cfg.websocket_port}: {exc.strerror or exc}",
                      file=sys.stderr)
                raise SystemExit(EXIT_LISTEN_ERROR) from None
            wsock.set_inheritable(False)
            self.ws_listeners = [(wsock, cfg.websocket_tls)]
            self.ws_port = wsock.getsockname()[1]
        if cfg.metrics_port:
            try:
                self.metrics_server = MetricsServer((cfg.metrics_host, cfg.metrics_port), self.aggregator)
            except OSError as exc:
                print(f"chatroom-server: cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port}: "
                      f"{exc.strerror or exc}", file=sys.stderr)
                raise SystemExit(EXIT_LISTEN_ERROR) from None
        # Bus addresses in the abstract namespace (no file to clean up), one per
        # manager in a known sequence (manager.successor), so the workers find
        # a respawned manager without being told.
        self.bus_address = f"\0chatroom-bus-{os.getpid()}-{secrets.token_hex(4)}-0"
        self.db_path = Path(cfg.data_dir) / "chatroom.db"
        try:
            self.start_manager()
        except ManagerBootError as exc:
            print(f"chatroom-server: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_STORAGE_ERROR) from None
        self.db_id = self.db_identity()
        pairs = {i: socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for i in range(cfg.workers)}
        # The supervisor keeps the acceptor's ends (and the listening sockets):
        # a respawned acceptor inherits them, and no worker sees its hand-off
        # socket close when the acceptor dies.
        self.acceptor_ends = {i: a for i, (a, _) in pairs.items()}
        for i, (_, w_end) in pairs.items():
            others = [p[1].fileno() for j, p in pairs.items() if j != i]
            self.spawn_worker(i, w_end, self.private_fds() + others)
        for _, w_end in pairs.values():
            w_end.close()
        self.spawn_acceptor()
        self.wait_for_workers()
        if self.stopping:
            return
        self.current_pids = self.pids()
        threading.Thread(target=self.sampler, name="sampler", daemon=True).start()
        if self.metrics_server is not None:
            self.metrics_server.start()
            host, mport = self.metrics_server.server_address[:2]
            log.info("metrics on http://%s:%d/metrics and /healthz", host, mport)
        log.info("listening on %s:%d with %d workers (pid %d)", cfg.host, self.port, cfg.workers, os.getpid())
        if cfg.tls_cert:
            log.info("TLS on %s:%d (certificate %s)", cfg.host, self.tls_port, cfg.tls_cert)
        if cfg.websocket:
            log.info("WebSocket on %s:%d (%s)", cfg.host, self.ws_port, "wss" if cfg.websocket_tls else "ws")
        sd_notify(f"READY=1\nSTATUS=listening on {cfg.host}:{self.port}")

    def private_fds(self) -> list[int]:
        """What the supervisor holds that no worker or manager may keep: the
        listening sockets, the acceptor's ends and control socket, the metrics
        listener and the other workers' snapshot sockets."""
        fds = [s.fileno() for s in (*self.listeners, *self.tls_listeners, *(s for s, _ in self.ws_listeners),
                                    *self.acceptor_ends.values())]
        if self.control is not None:
            fds.append(self.control.fileno())
        return fds + self.metrics_fds() + self.stats_fds()

    def db_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the database file, None when it is missing."""
        try:
            st = os.stat(self.db_path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def start_manager(self) -> None:
        """Start a manager serving a fresh bus at :attr:`bus_address`."""
        cfg = self.config
        if self.manager is not None:
            self.bus_address = successor(self.bus_address)
        manager = ChatManager(address=self.bus_address, ctx=self.ctx)
        try:
            settings = cfg.bus_settings()
            settings["resume"] = self.manager is not None  # cluster mode: a new manager of a running node
            manager.start(initializer=_manager_init, initargs=(settings, cfg, self.private_fds()))
        except (EOFError, OSError) as exc:
            raise ManagerBootError(f"the manager could not start (data directory {cfg.data_dir}: "
                                   f"{str(exc) or 'see the log above'})") from None
        self.manager = manager
        self.manager_started = time.monotonic()
        self.bus = manager.get_bus()  # type: ignore[attr-defined]
        if cfg.cluster_url:  # the node index goes into every session id (Worker.new_sid)
            cfg.node_index = int(self.bus.stats().get("node_index", 0))
        log.info("manager ready (pid %d)", manager._process.pid)  # type: ignore[attr-defined]

    def spawn_acceptor(self) -> None:
        """Fork an acceptor on the supervisor's listening sockets and hand-off ends."""
        if self.control is not None:
            self.control.close()
        self.control, acc_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ready = self.ctx.Event()
        self.acceptor = self.ctx.Process(
            target=run_acceptor, name="chatroom-acceptor",
            args=(self.config, self.listeners, dict(self.acceptor_ends), acc_control,
                  [self.control.fileno(), *self.metrics_fds(), *self.stats_fds()], ready, self.acceptor_counters,
                  self.tls_listeners, self.ws_listeners))
        self.acceptor.start()
        self.acceptor_started = time.monotonic()
        acc_control.close()
        ready.wait(10)
        log.info("acceptor ready (pid %d)", self.acceptor.pid)

    def spawn_worker(self, index: int, w_end: socket.socket, close_fds: list[int]) -> None:
        heartbeat = self.ctx.Value("d", 0.0, lock=False)
        address = self.bus_address
        authkey = bytes(multiprocessing.current_process().authkey)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        close = [*close_fds, *self.stats_fds(), *self.metrics_fds(), ours.fileno()]
        proc = self.ctx.Process(
            target=run_worker, name=f"chatroom-worker-{index}",
            args=(index, self.config, self.argv, address, authkey, w_end, heartbeat, close, theirs))
        proc.start()
        theirs.close()
        ours.setblocking(False)
        old = self.slots.get(index)
        if old is not None and old.stats is not None:
            self.sel.unregister(old.stats)
            old.stats.close()
        self.sel.register(ours, selectors.EVENT_READ, index)
        self.slots[index] = WorkerSlot(index, proc, heartbeat, time.monotonic(), old.restarts + 1 if old else 0,
                                       ours)

    def stats_fds(self) -> list[int]:
        return [s.stats.fileno() for s in self.slots.values() if s.stats is not None]

    def metrics_fds(self) -> list[int]:
        return [self.metrics_server.fileno()] if self.metrics_server is not None else []

    def wait_for_workers(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.heartbeat.value > 0 for s in self.slots.values()):
                return
            self.reap_workers()
            if self.stopping:
                return
            time.sleep(0.02)
        log.warning("not every worker reported in within %.0f s", timeout)

    def respawn(self, index: int) -> None:
        a_end, w_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = self.acceptor_ends.pop(index, None)
        if old is not None:
            old.close()
        self.spawn_worker(index, w_end, [a_end.fileno(), *self.private_fds()])
        w_end.close()
        self.acceptor_ends[index] = a_end
        try:
            socket.send_fds(self.control, [f"W{index}".encode()], [a_end.fileno()])  # type: ignore[arg-type]
        except OSError as exc:  # the acceptor is down: its successor inherits a_end
            log.warning("cannot hand worker %d to the acceptor: %s", index, exc)

    # -- the loop -------------------------------------------------------------
    def run(self) -> int:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self.enqueue_signal)
        sel = self.sel
        sel.register(rfd, selectors.EVENT_READ)
        self.start()
        while not self.stopping:
            for key, _ in sel.select(1.0):
                if key.fileobj != rfd:
                    self.read_snapshots(key.data)
            try:
                os.read(rfd, 4096)
            except BlockingIOError:
                pass
            self.handle_signals()
            if self.stop_requested():
                break
            self.check_processes()
            if self.stop_requested():
                break
            self.reap_workers()
            self.murder_workers()
            self.check_health()
            self.send_reports()
            self.report()
        self.halt()
        return self.exit_code

    def stop_requested(self) -> bool:
        """Whether a step of the loop decided to stop (a method, so that type
        checkers do not assume the flag unchanged by the calls in between)."""
        return self.stopping

    def enqueue_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)

    def handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                log.info("stopping on %s", signal.Signals(sig).name)
                self.stopping = True
            elif sig == signal.SIGHUP:
                self.reload()

    def reload(self) -> None:
        try:
            config = config_mod.load(self.argv)
        except (SystemExit, OSError, ValueError) as exc:
            log.error("configuration not reloaded: %s", exc)
            return
        config.node_index = self.config.node_index  # (cluster mode: the node's index is not a setting)
        self.config = config
        setup_logging(self.config, "supervisor")
        for slot in self.slots.values():
            if slot.process.is_alive():
                os.kill(slot.process.pid, signal.SIGHUP)
        if self.acceptor is not None and self.acceptor.is_alive():
            os.kill(self.acceptor.pid, signal.SIGHUP)
        log.info("configuration reloaded")

    def reap_workers(self) -> None:
        for index, slot in list(self.slots.items()):
            proc = slot.process
            if proc.is_alive() or self.stopping:
                continue
            proc.join(0)
            booted = slot.heartbeat.value > 0
            if not booted and (proc.exitcode == BOOT_ERROR or slot.restarts > 0 or
                               time.monotonic() - slot.started < 5):
                print(f"chatroom-server: worker {index} failed to boot (exit code {proc.exitcode}); stopping",
                      file=sys.stderr)
                self.exit_code = EXIT_BOOT_ERROR
                self.stopping = True
                return
            try:
                dropped = self.bus.drop_worker(index, "Connection closed")
            except (EOFError, OSError):
                dropped = 0  # the manager is gone too: its successor never knew these clients
            self.aggregator.retire_worker(index)
            log.error("worker %d (pid %s) died with exit code %s; %d clients dropped; respawning",
                      index, proc.pid, proc.exitcode, dropped)
            self.respawn(index)

    def check_processes(self) -> None:
        """The manager first (the workers need it to restore), then the acceptor."""
        self.reap_manager()
        if not self.stopping:
            self.reap_acceptor()

    def reap_manager(self) -> None:
        """A dead manager is replaced at the same address; the workers reconnect
        and re-register their sessions (server/process/worker.py, recover). One
        that cannot store (disk full, data directory gone) stops the server."""
        proc = getattr(self.manager, "_process", None)
        if proc is None or proc.is_alive():
            return
        proc.join(0)
        code = proc.exitcode
        if code == EXIT_STORAGE_ERROR:
            self.give_up("the manager cannot write to the data directory (disk full? see the log above)")
            return
        if self.db_identity() != self.db_id:  # gone, or re-created empty by someone opening it
            self.give_up(f"the database {self.db_path} is gone (data directory removed?)")
            return
        now = time.monotonic()
        self.manager_deaths = [t for t in self.manager_deaths if now - t < 60] + [now]
        if len(self.manager_deaths) > MAX_RESTARTS_PER_MINUTE:
            self.give_up(f"the manager died {len(self.manager_deaths)} times within a minute")
            return
        log.error("manager (pid %s) died with exit code %s; starting a new one", proc.pid, code)
        started = time.monotonic()
        try:
            self.start_manager()
        except ManagerBootError as exc:
            self.give_up(str(exc))
            return
        log.info("manager replaced in %.3f s", time.monotonic() - started)

    def reap_acceptor(self) -> None:
        """A dead acceptor is respawned on the same listening sockets; clients
        already handed to workers never noticed it."""
        if self.acceptor is None or self.acceptor.is_alive():
            return
        self.acceptor.join(0)
        now = time.monotonic()
        self.acceptor_deaths = [t for t in self.acceptor_deaths if now - t < 60] + [now]
        if len(self.acceptor_deaths) > MAX_RESTARTS_PER_MINUTE:
            self.give_up(f"the acceptor died {len(self.acceptor_deaths)} times within a minute")
            return
        log.error("acceptor (pid %s) died with exit code %s; respawning", self.acceptor.pid, self.acceptor.exitcode)
        self.spawn_acceptor()

    def give_up(self, why: str) -> None:
        """Stop with a clear message and a non-zero exit code instead of looping."""
        print(f"chatroom-server: {why}; stopping", file=sys.stderr)
        log.critical("%s; stopping", why)
        self.exit_code = EXIT_STORAGE_ERROR if "manager" in why or "database" in why else 1
        self.stopping = True

    def murder_workers(self) -> None:
        """Kill a worker whose heartbeat stopped (hung); it is respawned when reaped."""
        now = time.time()
        for slot in self.slots.values():
            beat = slot.heartbeat.value
            if beat and now - beat > self.config.worker_timeout and slot.process.is_alive():
                log.error("worker %d missed its heartbeat for %.0f s; killing it", slot.index, now - beat)
                os.kill(slot.process.pid, signal.SIGKILL)

    def pids(self) -> dict[str, int]:
        pids = {"supervisor": os.getpid()}
        if self.acceptor is not None and self.acceptor.pid:
            pids["acceptor"] = self.acceptor.pid
        manager_proc = getattr(self.manager, "_process", None)
        if manager_proc is not None and manager_proc.pid:
            pids["manager"] = manager_proc.pid
        for index, slot in self.slots.items():
            if slot.process.pid:
                pids[f"worker-{index}"] = slot.process.pid
        return pids

    # -- observability ----------------------------------------------------------
    def read_snapshots(self, index: int) -> None:
        """Take every counter snapshot waiting on a worker's socket."""
        slot = self.slots.get(index)
        if slot is None or slot.stats is None:
            return
        while True:
            try:
                data = slot.stats.recv(1 << 16)
            except OSError:
                return
            if not data:  # the worker is gone; reap_workers will see it
                self.sel.unregister(slot.stats)
                slot.stats.close()
                slot.stats = None
                return
            try:
                snap = pickle.loads(data)
            except Exception:
                log.warning("worker %d sent an unreadable snapshot", index)
                continue
            self.aggregator.update_worker(snap)
            slot.ready = True

    def check_health(self) -> None:
        """What ``/healthz`` says; a change is logged."""
        problems = []
        if self.acceptor is None or not self.acceptor.is_alive():
            problems.append("acceptor down")
        manager_proc = getattr(self.manager, "_process", None)
        if manager_proc is None or not manager_proc.is_alive():
            problems.append("manager down")
        elif self.aggregator.bus_time and time.time() - self.aggregator.bus_time > max(5.0, 5 * self.interval()):
            problems.append("manager not answering")
        now = time.time()
        for index, slot in sorted(self.slots.items()):
            if not slot.process.is_alive():
                problems.append(f"worker {index} down")
            elif not slot.ready:
                problems.append(f"worker {index} starting")
            elif now - slot.heartbeat.value > HEARTBEAT_STALE:
                problems.append(f"worker {index} not responding")
        if problems != self.problems:
            if problems:
                log.warning("health: failing (%s)", ", ".join(problems))
            else:
                log.info("health: ok")
            self.problems = problems
            self.aggregator.set_health(problems)

    def interval(self) -> float:
        return max(0.1, self.config.metrics_interval)

    def sampler(self) -> None:
        """Thread: psutil figures and the bus's stats every ``metrics_interval``
        (off the loop, so a slow manager never holds it up), or less often when a
        sample is dear: reading ``/proc`` for a worker costs the kernel a walk over
        its threads, and at 100,000 connections a sample a second took a quarter of a
        core. The sampler keeps to ``SAMPLER_SHARE`` of the CPU time it spends."""
        while not self.stopping:
            cost = time.thread_time()
            try:
                usage = process_usage(dict(self.current_pids))
                system = system_usage()
            except Exception:
                log.exception("resource sample failed")
                usage, system = {}, {}
            cost = time.thread_time() - cost
            try:
                bus = self.bus.stats()
            except Exception:
                bus = None
            self.aggregator.set_sample(usage, system, bus, list(self.acceptor_counters))
            self.sample_seq += 1
            self.sampler_wake.wait(max(self.interval(), cost / SAMPLER_SHARE))

    def send_reports(self) -> None:
        """After each sample: the report ``STATS`` shows, down to every worker."""
        self.current_pids = self.pids()
        if self.sent_seq == self.sample_seq:
            return
        self.sent_seq = self.sample_seq
        data = pickle.dumps(report_for_workers(self.aggregator.view()))
        for slot in self.slots.values():
            if slot.stats is not None:
                try:
                    slot.stats.send(data, socket.MSG_DONTWAIT)
                except OSError:
                    pass

    def report(self) -> None:
        """The one-line resource summary in the log, every ``report_interval``."""
        interval = self.config.report_interval
        if not interval or time.monotonic() - self.last_report < interval or not self.sample_seq:
            return
        self.last_report = time.monotonic()
        view = self.aggregator.view()
        log.info("resources: %s", summary(view, self.last_view))
        self.last_view = view

    # -- stop -----------------------------------------------------------------
    def halt(self) -> None:
        sd_notify("STOPPING=1")
        deadline = time.monotonic() + 4.0
        self.sampler_wake.set()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        if self.acceptor is not None and self.acceptor.is_alive():
            self.acceptor.terminate()
        for slot in self.slots.values():
            if slot.process.is_alive():
                slot.process.terminate()
        for proc in [s.process for s in self.slots.values()] + ([self.acceptor] if self.acceptor else []):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)
        manager_proc = getattr(self.manager, "_process", None)
        if self.bus is not None and manager_proc is not None and manager_proc.is_alive():
            try:
                rows = self.bus.flush_history()
                log.info("history flushed (%d messages written since start)", rows)
            except Exception:
                log.exception("history could not be flushed")
        if self.manager is not None:
            try:
                self.manager.shutdown()
            except Exception:
                pass
        for lsock in (*self.listeners, *self.tls_listeners):
            lsock.close()
        log.info("stopped")


def _manager_init(settings: dict[str, Any], config: Config, close_fds: list[int]) -> None:
    """The manager process's initializer: drop the supervisor's metrics listener,
    its own logging, then the bus."""
    # fork copied the supervisor's handlers (which only enqueue): SIGTERM must end the manager
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    die_with_parent()
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    setup_logging(config, "manager")
    _init_bus(settings)
    tune_gc()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = config_mod.load(argv)
    setup_logging(config, "supervisor")
    return Supervisor(config, argv).run()
