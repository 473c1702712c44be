"""The output path: a bounded queue per client and one writer thread per worker.

``Output.write()`` is called by any thread (the subscriber delivering the bus,
the client's own thread replying, the timer sending PING). It tries one
non-blocking ``send``; what does not fit waits in the client's SendQ and is
left to the :class:`Writer`, which watches writability with ``selectors``. A
client whose SendQ passes its limit is told ``ERROR :SendQ exceeded`` and cut
off: a reader that stalls never delays anyone else.

A TLS client's ``Output`` also owns its :class:`~server.ops.tls.TLSState`: plaintext
is encrypted under the output lock (which serializes every use of the OpenSSL
object, reads included) and the records take the same path as plain bytes.
Until the handshake completes, plaintext is held back (still counted against
the SendQ).

A WebSocket client's ``Output`` owns its
:class:`~server.process.websocket.WebSocketState` the same way: lines become
frames under the output lock (then TLS records, for ``wss``), and output is
held until the WebSocket handshake has been answered.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.ops.tls import TLSState
    from server.process.websocket import WebSocketState
    from server.protocol import RemoteProtocolError

log = logging.getLogger(__name__)

_DONTWAIT = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)


DRAIN_CHUNK = 256 * 1024


class Output:
    """One client's socket output with its SendQ."""

    __slots__ = ("closed", "held", "held_len", "limit", "lock", "on_overflow", "pending", "pending_len", "sent_bytes",
                 "sock", "tls", "watched", "writer", "ws")

    def __init__(self, sock: socket.socket, limit: int, writer: Writer, on_overflow: Callable[[], None],
                 tls: TLSState | None = None, ws: WebSocketState | None = None) -> None:
        self.sock = sock
        self.limit = limit
        self.lock = threading.Lock()
        self.pending: list[bytes] | None = None  # (a list only while bytes wait: 56 bytes per client)
        self.pending_len = 0
        self.closed = False
        self.writer = writer
        self.on_overflow = on_overflow
        self.sent_bytes = 0
        self.tls = tls
        self.ws = ws
        # TLS, WebSocket: plaintext written before the handshake completed
        self.held: list[bytes] | None = [] if tls is not None or ws is not None else None
        self.held_len = 0
        self.watched = False  # registered with the writer (changed under the writer's lock)

    def write(self, data: bytes) -> None:
        """Queue ``data`` and send what the socket takes now, without blocking."""
        with self.lock:
            if self.closed:
                return
            tls, ws = self.tls, self.ws
            if tls is None and ws is None:
                overflow = self._queue(data)
            elif (tls is not None and not tls.done) or (ws is not None and not ws.open):
                assert self.held is not None
                self.held.append(data)
                self.held_len += len(data)
                overflow = self.held_len > self.limit
            else:
                try:
                    overflow = self._queue(self._wire(data))
                except ssl.SSLError:
                    return  # a broken TLS session: the client's thread sees it and cleans up
        if overflow:
            self.on_overflow()

    def _wire(self, data: bytes) -> bytes:
        """IRC bytes as they go on the wire: WebSocket frames, TLS records (lock held)."""
        if self.ws is not None:
            data = self.ws.frames(data)
        if self.tls is not None:
            data = self.tls.encrypt(data)
        return data

    def _release_held(self) -> bool:
        """Send what was held back for a handshake (lock held); True if over the SendQ."""
        if not self.held:  # (None: no handshake to wait for)
            return False
        plain = b"".join(self.held)
        self.held.clear()
        self.held_len = 0
        return self._queue(self._wire(plain))

    def _queue(self, data: bytes) -> bool:
        """Send or queue bytes for the wire (lock held); True if over the SendQ."""
        if not data:
            return False
        if self.pending:
            self.pending.append(data)
            self.pending_len += len(data)
            return self.pending_len > self.limit
        try:
            n = self.sock.send(data, _DONTWAIT)
        except BlockingIOError:
            n = 0
        except OSError:
            return False  # the client's thread sees the broken socket and cleans up
        self.sent_bytes += n
        if n < len(data):
            rest = data[n:]
            self.pending = [rest]
            self.pending_len = len(rest)
            if self.pending_len > self.limit:
                return True
            self.writer.watch(self)
        return False

    # -- TLS, for the client's thread ---------------------------------------------
    def tls_handshake(self, data: bytes) -> bool:
        """Feed handshake bytes from the client; True once the handshake is done
        (then what was held back goes out). Raises :class:`ssl.SSLError`."""
        assert self.tls is not None
        with self.lock:
            if self.closed:
                return False
            try:
                done, out = self.tls.handshake(data)
            except ssl.SSLError:
                self._queue(self.tls.failure_alert())  # the alert that tells the client why
                raise
            overflow = self._queue(out)
            if done and (self.ws is None or self.ws.open):
                overflow = self._release_held() or overflow
        if overflow:
            self.on_overflow()
        return done

    def tls_decrypt(self, data: bytes | None) -> tuple[bytes, bool]:
        """Feed ciphertext (``b""``: the socket hit EOF; None: only what is already
        buffered); return (plaintext, peer closed). Raises :class:`ssl.SSLError`
        on a corrupt stream."""
        assert self.tls is not None
        with self.lock:
            if self.closed:
                return b"", True
            plain, out, closed = self.tls.decrypt(data)
            overflow = self._queue(out)
        if overflow:
            self.on_overflow()
        return plain, closed

    # -- WebSocket, for the client's thread ----------------------------------------
    def ws_receive(self, data: bytes) -> list[bytes | RemoteProtocolError]:
        """Feed bytes from the client (after TLS; ``b""``: EOF); return the IRC
        lines (or refusals) that arrived. What the WebSocket layer answers
        (handshake response, pongs, close) goes out first; once the handshake
        is answered, what was held back follows."""
        ws = self.ws
        assert ws is not None
        with self.lock:
            if self.closed:
                return []
            lines, out = ws.receive(data)
            try:
                overflow = self._queue(self.tls.encrypt(out) if self.tls is not None and out else out)
                if ws.open:
                    overflow = self._release_held() or overflow
            except ssl.SSLError:
                return lines
        if overflow:
            self.on_overflow()
        return lines

    def drain(self) -> None:
        """Send what is pending (called by the writer when the socket is writable).

        When nothing is left the writer stops watching, decided under our lock so
        that a concurrent ``write()`` cannot leave bytes with nobody watching."""
        with self.lock:
            if not self._drain():
                self.writer.forget(self)

    def _drain(self) -> bool:
        """True while bytes remain."""
        pending = self.pending
        if self.closed or not pending:
            return False
        # One send of at most about DRAIN_CHUNK: a long SendQ is not copied
        # whole each time the socket takes a little more.
        k, size = 1, len(pending[0])
        while k < len(pending) and size < DRAIN_CHUNK:
            size += len(pending[k])
            k += 1
        data = b"".join(pending[:k]) if k > 1 else pending[0]
        try:
            n = self.sock.send(data, _DONTWAIT)
        except BlockingIOError:
            n = 0
        except OSError:
            self.pending = None
            self.pending_len = 0
            return False
        self.sent_bytes += n
        rest = data[n:]
        self.pending = [rest, *pending[k:]] if rest else (pending[k:] or None)
        self.pending_len -= n
        return bool(self.pending)

    def close(self) -> None:
        """Stop output for good (the client is leaving)."""
        with self.lock:
            self.closed = True
            self.pending = None
            self.pending_len = 0
        self.writer.forget(self)

    def last_words(self, data: bytes) -> None:
        """Best effort: one last line (ERROR ...) ahead of whatever is queued."""
        with self.lock:
            if self.closed:
                return
            if self.ws is not None:
                ws = self.ws
                if ws.open:  # the line, then a close frame, behind what is queued
                    frames = ws.frames(data) + ws.close("")
                    try:
                        self._queue(self.tls.encrypt(frames) if self.tls is not None else frames)
                    except ssl.SSLError:
                        pass
                return
            if self.tls is not None:
                # Records must stay in sequence: queue behind what is pending.
                if self.tls.done:
                    try:
                        self._queue(self.tls.encrypt(data))
                    except ssl.SSLError:
                        pass
                return
            if self.pending:
                return  # a line is half sent: an ERROR now would land inside it
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
            if out.watched:
                return
            try:
                self.selector.register(out.sock, selectors.EVENT_WRITE, out)
            except (KeyError, ValueError, OSError):
                return  # closed meanwhile
            out.watched = True

    def forget(self, out: Output) -> None:
        # Every client's end comes here. The flag spares the common case (never
        # watched) a selector lookup, whose KeyError message would repr() the
        # socket: two more system calls per session.
        with self.lock:
            if not out.watched:
                return
            out.watched = False
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
