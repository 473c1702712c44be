"""The acceptor process: owns the listening sockets and hands each accepted
connection to the least-loaded worker.

A connection is sent as an fd over that worker's ``SOCK_SEQPACKET`` socketpair
with ``socket.send_fds`` (data: ``"<ip> <port>"``, plus ``" tls"`` from the TLS
listener and ``" ws"`` from the WebSocket one: the worker does the handshakes),
and the acceptor's own copy
is closed at once. Workers report closed connections on the same socketpair
(``b"C<ip>"``), which keeps the per-worker load and the per-IP counts right.
When every worker's socketpair is full (a connection storm), the acceptor holds
the connection it has and stops accepting until a worker catches up: the
kernel's listen backlog absorbs the burst, and nobody is refused for it.
Over the per-IP or total limit, or connecting faster than the per-IP rate (a
token bucket per address, per /64 for IPv6), the client gets an ``ERROR`` line
and is closed; addresses in ``per_ip_exempt`` skip the per-IP checks, and so do
trusted WebSocket proxies (``websocket_proxies``) on the WebSocket listener.
The supervisor sends replacement socketpair ends for respawned workers over a
control socket (``b"W<index>"`` with the fd).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
import selectors
import signal
import socket
import sys
import time
from collections import Counter
from typing import Any

from server.ops import config as config_mod
from server.ops.config import Config, in_networks
from server.ops.logs import setup_logging
from server.process.lifeline import die_with_parent
from server.protocol import Message

log = logging.getLogger(__name__)

FD_RESERVE = 256


class Acceptor:
    def __init__(self, config: Config, listeners: list[socket.socket], workers: dict[int, socket.socket],
                 control: socket.socket, counters: Any = None, tls_listeners: list[socket.socket] | None = None,
                 ws_listeners: list[tuple[socket.socket, bool]] | None = None) -> None:
        self.config = config
        # shared with the supervisor (server/metrics.py ACCEPTOR_SLOTS): accepted,
        # refused (server full), refused (per IP), refused (no worker took it)
        self.counters = counters if counters is not None else [0, 0, 0, 0]
        self.listeners = listeners
        self.workers: dict[int, socket.socket] = {}
        self.load: Counter[int] = Counter()
        self.worker_ips: dict[int, Counter[str]] = {}
        self.per_ip: Counter[str] = Counter()
        self.total = 0
        self.control = control
        self.exempt = config.networks("per_ip_exempt")
        self.proxies = config.networks("websocket_proxies")
        # Workers share our open-file limit; keep room for their own files
        # (manager connections, database, selectors, pipes).
        self.per_worker = max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_RESERVE)
        self.sel = selectors.DefaultSelector()
        self.listening = [(lsock, "listen") for lsock in listeners]
        self.listening += [(lsock, "listen-tls") for lsock in tls_listeners or ()]
        self.listening += [(lsock, "listen-wss" if tls else "listen-ws") for lsock, tls in ws_listeners or ()]
        for lsock, tag in self.listening:
            lsock.setblocking(False)
            self.sel.register(lsock, selectors.EVENT_READ, tag)
        # a connection no worker could take yet (every hand-off socket full)
        self.held: tuple[socket.socket, str, int, bytes] | None = None
        # connection rate: address key -> (tokens, when)
        self.rates: dict[str, tuple[float, float]] = {}
        self.rates_pruned = time.monotonic()
        self.sel.register(control, selectors.EVENT_READ, "control")
        for index, sock in workers.items():
            self.add_worker(index, sock)
        self.running = True

    def add_worker(self, index: int, sock: socket.socket) -> None:
        old = self.workers.get(index)
        if old is not None:
            self.remove_worker(index)
        sock.setblocking(False)
        self.workers[index] = sock
        self.load[index] = 0
        self.worker_ips[index] = Counter()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.held is not None else 0)
        self.sel.register(sock, events, ("worker", index))

    def remove_worker(self, index: int) -> None:
        sock = self.workers.pop(index, None)
        if sock is None:
            return
        self.sel.unregister(sock)
        sock.close()
        for ip, n in self.worker_ips.pop(index, Counter()).items():
            self._release(ip, n)
        self.total -= self.load.pop(index, 0)

    def _release(self, ip: str, n: int = 1) -> None:
        self.per_ip[ip] -= n
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]

    def is_exempt(self, ip: str) -> bool:
        return in_networks(ip, self.exempt)

    def serve(self) -> None:
        while self.running:
            for key, mask in self.sel.select(1.0):
                tag = key.data
                if tag == "listen":
                    self.accept(key.fileobj)  # type: ignore[arg-type]
                elif tag == "listen-tls":
                    self.accept(key.fileobj, tls=True)  # type: ignore[arg-type]
                elif tag in ("listen-ws", "listen-wss"):
                    self.accept(key.fileobj, tls=tag == "listen-wss", ws=True)  # type: ignore[arg-type]
                elif tag == "control":
                    self.on_control()
                else:
                    if mask & selectors.EVENT_READ:
                        self.on_worker(tag[1])
                    if mask & selectors.EVENT_WRITE:
                        self.flush_held()

    def accept(self, lsock: socket.socket, tls: bool = False, ws: bool = False) -> None:
        for _ in range(256):
            try:
                conn, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: keep serving
                log.warning("accept failed: %s", exc)
                return
            ip, port = addr[0], addr[1]
            keep: socket.socket | None = conn
            try:
                if not self.hand_over(conn, ip, port, tls, ws):
                    self.hold(conn, ip, port, tls, ws)
                    keep = None
            finally:
                if keep is not None:
                    keep.close()  # our copy: a leaked one keeps the connection half-open
            if self.held is not None:
                return

    def hold(self, conn: socket.socket, ip: str, port: int, tls: bool, ws: bool = False) -> None:
        """Every worker is busy: keep ``conn``, stop accepting, and wait for a
        hand-off socket to become writable (backpressure, not refusal)."""
        self.held = (conn, ip, port, self.handoff_data(ip, port, tls, ws))
        for lsock, _ in self.listening:
            try:
                self.sel.unregister(lsock)
            except (KeyError, ValueError):
                pass
        for index, sock in self.workers.items():
            self.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ("worker", index))

    def flush_held(self) -> None:
        if self.held is None:
            return
        conn, ip, port, data = self.held
        sent = self.dispatch(conn, ip, data)
        if sent is False:
            return
        if sent is None:
            self.counters[3] += 1
            log.warning("refused %s:%d: no worker took the connection", ip, port)
            self.refuse(conn, "Server is busy, try again later")
        conn.close()
        self.held = None
        for index, sock in self.workers.items():
            self.sel.modify(sock, selectors.EVENT_READ, ("worker", index))
        for lsock, tag in self.listening:
            if lsock.fileno() >= 0:
                self.sel.register(lsock, selectors.EVENT_READ, tag)

    def refuse(self, conn: socket.socket, why: str) -> None:
        try:
            conn.send(Message("ERROR", (f"Closing Link: {why}",)).to_bytes(), socket.MSG_DONTWAIT)
        except OSError:
            pass

    def rate_ok(self, ip: str) -> bool:
        """Charge one connection to the address's token bucket (``conn_burst``
        at once, then ``conn_rate`` per second); False when it is empty."""
        cfg = self.config
        if cfg.conn_rate <= 0 or cfg.conn_burst <= 0:
            return True
        key = ip
        if ":" in ip:  # one IPv6 user usually holds a whole /64
            try:
                key = str(ipaddress.ip_network(f"{ip}/64", strict=False))
            except ValueError:
                pass
        now = time.monotonic()
        burst = float(cfg.conn_burst)
        tokens, at = self.rates.get(key, (burst, now))
        tokens = min(burst, tokens + (now - at) * cfg.conn_rate)
        ok = tokens >= 1.0
        self.rates[key] = (tokens - 1.0 if ok else tokens, now)
        if len(self.rates) > 1024 and now - self.rates_pruned > 1.0:
            # Forget addresses whose bucket is full again: the table stays small.
            self.rates_pruned = now
            self.rates = {k: (t, a) for k, (t, a) in self.rates.items()
                          if t + (now - a) * cfg.conn_rate < burst}
        return ok

    def hand_over(self, conn: socket.socket, ip: str, port: int, tls: bool = False, ws: bool = False) -> bool:
        """Admit (or refuse) and hand over; False when every worker is busy."""
        cfg = self.config
        if self.total >= cfg.max_connections:
            self.counters[1] += 1
            log.info("refused %s:%d: server full (%d connections)", ip, port, self.total)
            self.refuse(conn, "Server is full")
            return True
        # A trusted WebSocket proxy carries many users; whose they are shows
        # only in its headers, so its own per-IP limits stand in for ours.
        exempt = self.is_exempt(ip) or (ws and in_networks(ip, self.proxies))
        if cfg.max_per_ip and self.per_ip[ip] >= cfg.max_per_ip and not exempt:
            self.counters[2] += 1
            log.info("refused %s:%d: too many connections from this address", ip, port)
            self.refuse(conn, f"Too many connections from your IP address ({cfg.max_per_ip})")
            return True
        if not exempt and not self.rate_ok(ip):
            self.counters[2] += 1
            log.info("refused %s:%d: connecting too fast", ip, port)
            self.refuse(conn, "Connecting too fast from your IP address; try again later")
            return True
        sent = self.dispatch(conn, ip, self.handoff_data(ip, port, tls, ws))
        if sent is None and self.workers and all(self.load[w] >= self.per_worker for w in self.workers):
            self.counters[1] += 1
            log.warning("refused %s:%d: every worker is at its open-file limit", ip, port)
            self.refuse(conn, "Server is full")
            return True
        if sent is None:
            self.counters[3] += 1
            log.warning("refused %s:%d: no worker took the connection", ip, port)
            self.refuse(conn, "Server is busy, try again later")
        return sent is not False

    @staticmethod
    def handoff_data(ip: str, port: int, tls: bool, ws: bool = False) -> bytes:
        return f"{ip} {port}{' tls' if tls else ''}{' ws' if ws else ''}".encode()

    def dispatch(self, conn: socket.socket, ip: str, data: bytes) -> bool | None:
        """Send ``conn`` to the least-loaded worker that takes it: True if one
        did, False if every worker's socket is full, None if no worker is left."""
        dead = []
        blocked = False
        for index in sorted(self.workers, key=self.load.__getitem__):
            if self.load[index] >= self.per_worker:
                continue  # one more would pass the worker's open-file limit
            try:
                socket.send_fds(self.workers[index], [data], [conn.fileno()])
            except (BlockingIOError, InterruptedError):
                blocked = True
                continue  # that worker is not keeping up: try the next one
            except OSError:
                dead.append(index)
                continue
            self.counters[0] += 1
            self.load[index] += 1
            self.worker_ips[index][ip] += 1
            self.per_ip[ip] += 1
            self.total += 1
            sent: bool | None = True
            break
        else:
            sent = False if blocked else None
        for index in dead:
            log.warning("worker %d is gone", index)
            self.remove_worker(index)
        return sent

    def on_worker(self, index: int) -> None:
        sock = self.workers.get(index)
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(512)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                log.info("worker %d disconnected", index)
                self.remove_worker(index)
                return
            if data[:1] == b"C":
                ip = data[1:].decode()
                if self.worker_ips[index][ip] > 0:
                    self.worker_ips[index][ip] -= 1
                    if not self.worker_ips[index][ip]:
                        del self.worker_ips[index][ip]
                    self._release(ip)
                    self.load[index] -= 1
                    self.total -= 1

    def on_control(self) -> None:
        try:
            data, fds, _flags, _ = socket.recv_fds(self.control, 64, 4)
        except BlockingIOError:
            return
        if not data:
            self.running = False
            return
        if data[:1] == b"W" and fds:
            index = int(data[1:])
            sock = socket.socket(fileno=fds[0])
            os.set_inheritable(fds[0], False)
            self.add_worker(index, sock)
            log.info("worker %d attached", index)


def run_acceptor(config: Config, listeners: list[socket.socket], workers: dict[int, socket.socket],
                 control: socket.socket, close_fds: list[int], ready: Any, counters: Any = None,
                 tls_listeners: list[socket.socket] | None = None,
                 ws_listeners: list[tuple[socket.socket, bool]] | None = None) -> None:
    """Process entry point."""
    die_with_parent()
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    setup_logging(config, "acceptor")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    acceptor = Acceptor(config, listeners, workers, control, counters, tls_listeners, ws_listeners)

    def stop(*_: Any) -> None:
        acceptor.running = False
        for lsock in [*listeners, *(tls_listeners or ()), *(s for s, _ in ws_listeners or ())]:
            try:
                acceptor.sel.unregister(lsock)
            except (KeyError, ValueError):
                pass
            lsock.close()

    def reload(*_: Any) -> None:
        # The limits (max_connections, max_per_ip, per_ip_exempt, conn_*) follow
        # the file; the listening sockets stay as they are.
        try:
            new = config_mod.load(sys.argv[1:])
        except (SystemExit, OSError, ValueError) as exc:
            log.error("acceptor: configuration not reloaded: %s", exc)
            return
        acceptor.config = new
        acceptor.exempt = new.networks("per_ip_exempt")
        acceptor.proxies = new.networks("websocket_proxies")
        log.info("acceptor: configuration reloaded")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, reload)
    ready.set()
    try:
        acceptor.serve()
    finally:
        logging.shutdown()
    os._exit(0)
