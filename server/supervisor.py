"""The supervisor: starts the manager, the workers and the acceptor, then loops
over small verbs (gunicorn's arbiter is the model): handle signals, reap and
respawn workers, murder hung ones, report resources.

Signal handlers only enqueue; the loop acts. SIGTERM/SIGINT stop the server
(every client gets ``ERROR :Server shutting down``), SIGHUP reloads the
configuration in every process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from . import config as config_mod
from .acceptor import run_acceptor
from .config import Config
from .logs import setup_logging
from .manager import ChatManager, start_manager
from .resources import process_usage, raise_fd_limit, summary
from .worker import BOOT_ERROR, run_worker

log = logging.getLogger("server.supervisor")

EXIT_BOOT_ERROR = 3
EXIT_LISTEN_ERROR = 2


@dataclass
class WorkerSlot:
    index: int
    process: Any
    heartbeat: Any
    started: float
    restarts: int = 0


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
        self.last_report = time.monotonic()

    # -- start ----------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        raise_fd_limit()
        try:
            lsock = socket.create_server((cfg.host, cfg.port), backlog=4096, reuse_port=False)
        except OSError as exc:
            print(f"chatroom-server: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}", file=sys.stderr)
            raise SystemExit(EXIT_LISTEN_ERROR) from None
        lsock.set_inheritable(False)
        self.listeners = [lsock]
        self.port = lsock.getsockname()[1]
        self.manager = start_manager(cfg.bus_settings(), self.ctx)
        self.bus = self.manager.get_bus()  # type: ignore[attr-defined]
        pairs = {i: socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for i in range(cfg.workers)}
        self.control, acc_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        acceptor_ends = {i: a for i, (a, _) in pairs.items()}
        keep_out_of_workers = [s.fileno() for s in
                               (*self.listeners, self.control, acc_control, *acceptor_ends.values())]
        for i, (_, w_end) in pairs.items():
            others = [p[1].fileno() for j, p in pairs.items() if j != i]
            self.spawn_worker(i, w_end, keep_out_of_workers + others)
        for _, w_end in pairs.values():
            w_end.close()
        ready = self.ctx.Event()
        self.acceptor = self.ctx.Process(
            target=run_acceptor, name="chatroom-acceptor",
            args=(cfg, self.listeners, acceptor_ends, acc_control, [self.control.fileno()], ready))
        self.acceptor.start()
        for a_end in acceptor_ends.values():
            a_end.close()
        acc_control.close()
        for lsock in self.listeners:
            lsock.close()  # the acceptor has them now
        ready.wait(10)
        self.wait_for_workers()
        if self.stopping:
            return
        log.info("listening on %s:%d with %d workers (pid %d)", cfg.host, self.port, cfg.workers, os.getpid())

    def spawn_worker(self, index: int, w_end: socket.socket, close_fds: list[int]) -> None:
        heartbeat = self.ctx.Value("d", 0.0, lock=False)
        address = self.manager.address  # type: ignore[union-attr]
        authkey = bytes(multiprocessing.current_process().authkey)
        proc = self.ctx.Process(
            target=run_worker, name=f"chatroom-worker-{index}",
            args=(index, self.config, self.argv, address, authkey, w_end, heartbeat, close_fds))
        proc.start()
        old = self.slots.get(index)
        self.slots[index] = WorkerSlot(index, proc, heartbeat, time.monotonic(), old.restarts + 1 if old else 0)

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
        close = [a_end.fileno()]
        if self.control is not None:
            close.append(self.control.fileno())
        self.spawn_worker(index, w_end, close)
        w_end.close()
        try:
            socket.send_fds(self.control, [f"W{index}".encode()], [a_end.fileno()])  # type: ignore[arg-type]
        except OSError as exc:
            log.error("cannot hand worker %d to the acceptor: %s", index, exc)
        a_end.close()

    # -- the loop -------------------------------------------------------------
    def run(self) -> int:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self.enqueue_signal)
        sel = selectors.DefaultSelector()
        sel.register(rfd, selectors.EVENT_READ)
        self.start()
        while not self.stopping:
            sel.select(1.0)
            try:
                os.read(rfd, 4096)
            except BlockingIOError:
                pass
            self.handle_signals()
            if self.stopping:
                break
            self.reap_workers()
            self.check_processes()
            self.murder_workers()
            self.report()
        self.halt()
        return self.exit_code

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
            self.config = config_mod.load(self.argv)
        except (SystemExit, OSError, ValueError) as exc:
            log.error("configuration not reloaded: %s", exc)
            return
        setup_logging(self.config, "supervisor")
        for slot in self.slots.values():
            if slot.process.is_alive():
                os.kill(slot.process.pid, signal.SIGHUP)
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
            dropped = self.bus.drop_worker(index, "Connection closed")
            log.error("worker %d (pid %s) died with exit code %s; %d clients dropped; respawning",
                      index, proc.pid, proc.exitcode, dropped)
            self.respawn(index)

    def check_processes(self) -> None:
        if self.acceptor is not None and not self.acceptor.is_alive():
            print("chatroom-server: the acceptor process died; stopping", file=sys.stderr)
            self.exit_code = 1
            self.stopping = True
        manager_proc = getattr(self.manager, "_process", None)
        if manager_proc is not None and not manager_proc.is_alive():
            print("chatroom-server: the manager process died; stopping", file=sys.stderr)
            self.exit_code = 1
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

    def report(self) -> None:
        interval = self.config.report_interval
        if not interval or time.monotonic() - self.last_report < interval:
            return
        self.last_report = time.monotonic()
        try:
            clients = self.bus.query("lusers")["users"]
        except Exception:
            clients = -1
        log.info("resources: %s", summary(process_usage(self.pids()), clients))

    # -- stop -----------------------------------------------------------------
    def halt(self) -> None:
        deadline = time.monotonic() + 4.0
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
        if self.manager is not None:
            try:
                self.manager.shutdown()
            except Exception:
                pass
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = config_mod.load(argv)
    setup_logging(config, "supervisor")
    return Supervisor(config, argv).run()
