"""One client connection, served by its own thread (:func:`handle_client`).

The thread reads, decodes (``server.protocol.Decoder``), applies flood control
and dispatches each message through the command table in
:mod:`server.irc.commands`. It never touches a Manager proxy: registry operations
go through the worker's publisher as requests whose results come back through
the subscriber, after the events they caused.
"""

from __future__ import annotations

import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server.irc import dispatch, flush_nick
from server.ops.tls import TLSState
from server.process.sendq import Output
from server.protocol import Decoder, Message, RemoteProtocolError, as_middle

if TYPE_CHECKING:
    from server.process.worker import Worker

log = logging.getLogger(__name__)

_tokens = itertools.count(1)


class ConnectionGone(Exception):
    """The session is closing; stop handling its input."""


RECV_SIZE = 4096  # bytes per recv(); a longer line (tags) just takes a few


class Pending:
    """A registry request waiting for its result from the subscriber.

    A lock held from the start is the one-shot signal: the waiter's
    ``acquire`` returns once the subscriber releases it. Cheaper than an
    ``Event`` (whose wait and set each go through a ``Condition`` in Python),
    and every client thread waits on a few of these per connection."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.result: tuple[Any, ...] = ("timeout",)

    def resolve(self, result: tuple[Any, ...]) -> None:
        self.result = result
        self.done.release()  # once: the subscriber pops the token before resolving it

    def wait(self, timeout: float) -> bool:
        return self.done.acquire(timeout=timeout)


class Session:
    """A client: its socket, its output, and what the server knows of it."""

    def __init__(self, worker: Worker, sock: socket.socket, sid: int, ip: str, port: int,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.worker = worker
        self.config = worker.config
        self.sock = sock
        self.sid = sid
        self.ip = ip  # the real address: for bans, operators and logs, never shown to other users
        self.port = port
        self.host = worker.cloak(ip)  # what everyone sees
        self.out = Output(sock, self.config.sendq, worker.writer, self._sendq_exceeded,
                          TLSState(tls_context) if tls_context is not None else None)
        self.decoder = Decoder()
        # registration
        self.nick = "*"
        self.user = ""
        self.realname = ""
        self.password: str | None = None
        self.nick_claimed = False
        self.nick_pending: str | None = None  # NICK before registration, not claimed yet
        self.registered = False
        self.cap_negotiating = False
        self.cap_version = 0
        self.caps: set[str] = set()
        # delivery flags, derived from caps (read by the subscriber on the hot path)
        self.tagmode = 0  # 0: no tags, 1: server-time only, 2: all tags
        self.echo = False
        self.away: str | None = None
        self.modes: set[str] = set()
        # liveness
        now = time.monotonic()
        self.created = now
        self.last_active = now
        self.signon = time.time()
        self.ping_sent: float | None = None
        self.closing: str | None = None
        self.forgotten = False  # the registry already dropped us (QUIT)
        # One receive buffer for the client's life: recv(n) would allocate n bytes
        # per call and shrink them, which fragments the heap of a busy worker.
        self._rview = memoryview(bytearray(RECV_SIZE))
        # flood control (token bucket)
        self.flood_exempt = worker.is_flood_exempt(ip)
        self.tokens = float(self.config.flood_burst)
        self.tokens_at = now
        self.throttled_since: float | None = None
        # nick change rate (a token bucket too)
        self.nick_tokens = float(self.config.nick_change_burst)
        self.nick_tokens_at = now
        # owned by the subscriber thread: output gathered during one bus batch
        self.batchbuf: list[bytes] = []
        # accounts and labeled responses
        self.account: str | None = None
        self.protect_deadline: float | None = None
        self.sasl: str | None = None
        self.sasl_buf = ""
        self.tls = tls_context is not None
        self.label_buf: list[Message] | None = None

    # -- identity -----------------------------------------------------------
    @property
    def prefix(self) -> str:
        return f"{self.nick}!{self.user}@{self.host}"

    def caps_changed(self) -> None:
        self.tagmode = 2 if "message-tags" in self.caps else 1 if "server-time" in self.caps else 0
        self.echo = "echo-message" in self.caps

    # -- output -------------------------------------------------------------
    def send(self, msg: Message) -> None:
        self.emit([msg])

    def send_raw(self, data: bytes) -> None:
        self.out.write(data)

    def numeric(self, numeric: str, *params: str) -> None:
        """Send a numeric reply: ``:server NNN nick params...``. Parameters but
        the last (the text) may echo a client's trailing one: made valid middles."""
        self.numerics([(numeric, *params)])

    def numerics(self, replies: list[tuple[str, ...]]) -> None:
        """Several numerics in one write."""
        src, nick = self.config.server_name, as_middle(self.nick)
        self.emit([Message(r[0], (nick, *map(as_middle, r[1:-1]), *r[-1:]), src) for r in replies])

    def error(self, exc: RemoteProtocolError) -> None:
        self.send(exc.reply(self.config.server_name, self.nick))

    def emit(self, msgs: list[Message]) -> None:
        """Replies from this client's own thread: gathered while a labeled
        command runs (IRCv3 labeled-response), else written at once."""
        if self.label_buf is not None:
            self.label_buf.extend(msgs)
        else:
            self.out.write(b"".join(m.to_bytes() for m in msgs))

    def labeled(self, label: str, run: Callable[[], None]) -> None:
        """Run a command whose direct replies carry ``label``."""
        self.label_buf = []
        try:
            run()
        finally:
            msgs, self.label_buf = self.label_buf, None
            src = self.config.server_name
            if not msgs:
                self.emit([Message("ACK", (), src, {"label": label})])
            elif len(msgs) == 1:
                msgs[0].tags["label"] = label
                self.emit(msgs)
            elif "batch" in self.caps:
                ref = f"L{next(_tokens):x}"
                for m in msgs:
                    m.tags["batch"] = ref
                self.emit([Message("BATCH", ("+" + ref, "labeled-response"), src, {"label": label}), *msgs,
                           Message("BATCH", ("-" + ref,), src)])
            else:
                self.emit(msgs)

    def _sendq_exceeded(self) -> None:
        self.close("SendQ exceeded")

    # -- registry requests (through the publisher) ---------------------------
    def request(self, op: str, *args: Any, timeout: float = 15.0) -> Any:
        """Run a registry operation in the bus order; return its result or raise
        its RemoteProtocolError."""
        token = next(_tokens)
        pending = Pending()
        self.worker.pending[token] = pending
        self.worker.publish(("r", self.sid, token, op, args))
        if not pending.wait(timeout):
            self.worker.pending.pop(token, None)
            raise ConnectionGone("the registry did not answer")
        result = pending.result
        if result[0] == "ok":
            return result[1]
        if result[0] == "err":
            raise RemoteProtocolError(result[1], *result[2], text=result[3])
        raise ConnectionGone("gone")

    def notify(self, op: str, *args: Any) -> None:
        """A registry operation whose result nobody waits for."""
        self.worker.publish(("r", self.sid, 0, op, args))

    # -- lifecycle ----------------------------------------------------------
    def close(self, reason: str) -> None:
        """Ask the session to end: ``ERROR`` to the client, then the socket's
        reading side is shut so the client thread wakes and cleans up (it closes
        the socket once the registry has forgotten the client). Safe from any thread."""
        if self.closing is not None:
            return
        self.closing = reason
        self.out.last_words(Message("ERROR", (f"Closing Link: {self.host} ({reason})",)).to_bytes())
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def nick_change_wait(self) -> int:
        """Charge one nick change; 0 if allowed now, else the seconds to wait."""
        cfg = self.config
        if cfg.nick_change_burst <= 0 or cfg.nick_change_interval <= 0:
            return 0
        now = time.monotonic()
        self.nick_tokens = min(float(cfg.nick_change_burst),
                               self.nick_tokens + (now - self.nick_tokens_at) / cfg.nick_change_interval)
        self.nick_tokens_at = now
        if self.nick_tokens >= 1.0:
            self.nick_tokens -= 1.0
            return 0
        return max(1, int((1.0 - self.nick_tokens) * cfg.nick_change_interval + 0.999))

    # -- input ----------------------------------------------------------------
    def tls_handshake(self) -> None:
        """Complete the TLS handshake within ``tls_handshake_timeout`` or raise
        :class:`ConnectionGone`."""
        deadline = time.monotonic() + self.config.tls_handshake_timeout
        data = b""
        try:
            while not self.out.tls_handshake(data):
                if self.closing is not None:
                    raise ConnectionGone(self.closing)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)  # poll() inside: fine past FD_SETSIZE, unlike select()
                data = self._recv()
                if not data:
                    raise ConnectionGone("Connection closed during the TLS handshake")
            self.sock.settimeout(None)
        except ssl.SSLError as exc:
            raise ConnectionGone(f"TLS handshake failed: {exc.reason or exc}") from None
        except TimeoutError:
            raise ConnectionGone("TLS handshake timed out") from None
        except OSError as exc:
            raise ConnectionGone(f"Read error: {exc.strerror or exc}") from None

    def _recv(self) -> bytes:
        n = self.sock.recv_into(self._rview)
        return bytes(self._rview[:n])

    def receive(self) -> bytes:
        """The next input from the client (plaintext); ``b""`` at the end.
        Raises OSError (or ConnectionGone for a broken TLS stream)."""
        if not self.tls:
            return self._recv()
        data: bytes | None = None  # first, records that came in with the handshake
        while True:
            try:
                plain, closed = self.out.tls_decrypt(data)
            except ssl.SSLError as exc:
                raise ConnectionGone(f"TLS error: {exc.reason or exc}") from None
            if plain or closed or data == b"":
                return plain
            data = self._recv()

    def throttle(self, backlog: int) -> float:
        """Charge one line to the token bucket; return how long to hold it back.

        A burst passes at once, then lines flow at the steady rate. A client that
        stays throttled for ``flood_max_delay`` seconds, or has more lines waiting
        than that many seconds would drain, is cut off with "Excess Flood"."""
        cfg = self.config
        now = time.monotonic()
        self.tokens = min(float(cfg.flood_burst), self.tokens + (now - self.tokens_at) * cfg.flood_rate)
        self.tokens_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.throttled_since = None
            return 0.0
        if self.throttled_since is None:
            self.throttled_since = now
        if now - self.throttled_since > cfg.flood_max_delay or backlog / cfg.flood_rate > cfg.flood_max_delay:
            raise ConnectionGone("Excess Flood")
        delay = (1.0 - self.tokens) / cfg.flood_rate
        self.tokens = 0.0
        self.tokens_at = now + delay
        return delay


def handle_client(session: Session) -> None:
    """The client's thread: read, parse, act; clean up however it ends."""
    worker = session.worker
    reason = "Connection closed"
    try:
        worker.publish(("r", session.sid, 0, "connect",
                        (session.sid, worker.index, session.ip, session.host, session.tls)))
        if session.tls:
            session.tls_handshake()
        while session.closing is None:
            try:
                data = session.receive()
            except OSError as exc:
                reason = f"Read error: {exc.strerror or exc}"
                break
            if not data:
                break
            session.last_active = time.monotonic()
            session.ping_sent = None
            items = session.decoder.feed(data)
            flood = not session.flood_exempt
            # Input that makes no message (empty lines, the discarded tail of an
            # oversized one) is charged by size: one line per 4 KiB.
            for _ in range(len(data) // 4096 - len(items) if flood else 0):
                delay = session.throttle(1)
                if delay:
                    time.sleep(delay)
            for i, item in enumerate(items):
                if flood:  # every item, rejected lines too: each one costs a reply
                    delay = session.throttle(len(items) - i)
                    if delay:
                        time.sleep(delay)
                if isinstance(item, RemoteProtocolError):
                    session.error(item)
                    continue
                dispatch(session, item)
                if session.closing is not None:
                    break
            if session.nick_pending is not None and session.closing is None:
                flush_nick(session)  # before this thread waits for more input
    except ConnectionGone as exc:
        reason = str(exc)
        session.close(reason)
    except Exception:
        log.exception("client %s: unexpected error", session.ip)
        reason = "Internal error"
        session.close(reason)
    finally:
        worker.end_session(session, session.closing or reason)
