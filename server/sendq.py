"""The output path: a bounded queue per client and one writer thread per worker.

``Output.write()`` is called by any thread (the subscriber delivering the bus,
the client's own thread replying, the timer sending PING). It tries one
non-blocking ``send``; what does not fit waits in the client's SendQ and is
left to the :class:`Writer`, which watches writability with ``selectors``. A
client whose SendQ passes its limit is told ``ERROR :SendQ exceeded`` and cut
off: a reader that stalls never delays anyone else.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_DONTWAIT = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)


class Output:
    """One client's socket output with its SendQ."""

    __slots__ = ("closed", "limit", "lock", "on_overflow", "pending", "pending_len", "sent_bytes", "sock", "writer")

    def __init__(self, sock: socket.socket, limit: int, writer: Writer, on_overflow: Callable[[], None]) -> None:
        self.sock = sock
        self.limit = limit
        self.lock = threading.Lock()
        self.pending: list[bytes] = []
        self.pending_len = 0
        self.closed = False
        self.writer = writer
        self.on_overflow = on_overflow
        self.sent_bytes = 0

    def write(self, data: bytes) -> None:
        """Queue ``data`` and send what the socket takes now, without blocking."""
        overflow = False
        with self.lock:
            if self.closed:
                return
            if self.pending:
                self.pending.append(data)
                self.pending_len += len(data)
                overflow = self.pending_len > self.limit
            else:
                try:
                    n = self.sock.send(data, _DONTWAIT)
                except BlockingIOError:
                    n = 0
                except OSError:
                    return  # the client's thread sees the broken socket and cleans up
                self.sent_bytes += n
                if n < len(data):
                    rest = data[n:]
                    self.pending.append(rest)
                    self.pending_len = len(rest)
                    overflow = self.pending_len > self.limit
                    if not overflow:
                        self.writer.watch(self)
        if overflow:
            self.on_overflow()

    def drain(self) -> None:
        """Send what is pending (called by the writer when the socket is writable).

        When nothing is left the writer stops watching, decided under our lock so
        that a concurrent ``write()`` cannot leave bytes with nobody watching."""
        with self.lock:
            if not self._drain():
                self.writer.forget(self)

    def _drain(self) -> bool:
        """True while bytes remain."""
        if self.closed or not self.pending:
            return False
        data = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
        try:
            n = self.sock.send(data, _DONTWAIT)
        except BlockingIOError:
            n = 0
        except OSError:
            self.pending.clear()
            self.pending_len = 0
            return False
        self.sent_bytes += n
        rest = data[n:]
        self.pending = [rest] if rest else []
        self.pending_len = len(rest)
        return bool(rest)

    def close(self) -> None:
        """Stop output for good (the client is leaving)."""
        with self.lock:
            self.closed = True
            self.pending.clear()
            self.pending_len = 0
        self.writer.forget(self)

    def last_words(self, data: bytes) -> None:
        """Best effort: one last line (ERROR ...) ahead of whatever is queued."""
        with self.lock:
            if self.closed:
                return
            try:
                self.sock.send(data, _DONTWAIT)
            except OSError:
                pass


class Writer(threading.Thread):
    """Flushes SendQs of clients whose socket was full, as it becomes writable."""

    def __init__(self) -> None:
        super().__init__(name="writer", daemon=True)
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.running = True

    def watch(self, out: Output) -> None:
        with self.lock:
            try:
                self.selector.register(out.sock, selectors.EVENT_WRITE, out)
            except (KeyError, ValueError, OSError):
                return  # already watched, or closed meanwhile

    def forget(self, out: Output) -> None:
        with self.lock:
            try:
                key = self.selector.get_key(out.sock)
            except (KeyError, ValueError):
                return
            if key.data is out:
                try:
                    self.selector.unregister(out.sock)
                except (KeyError, ValueError, OSError):
                    pass

    def stop(self) -> None:
        self.running = False
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def run(self) -> None:
        while self.running:
            events = self.selector.select(1.0)
            for key, _ in events:
                out = key.data
                if out is None:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                try:
                    out.drain()
                except Exception:  # never let one client kill the writer
                    log.exception("writer: drain failed")
                    self.forget(out)
