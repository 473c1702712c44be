"""One client connection, served by its own thread (:func:`handle_client`).

The thread reads, decodes (``server.protocol.Decoder``), applies flood control
and dispatches each message through the command table in
:mod:`server.irc.commands`. It never touches a Manager proxy: registry operations
go through the worker's publisher as requests whose results come back through
the subscriber, after the events they caused.

**Replies in command order.** Every command a client sends is one :class:`Unit`
of output. A unit is *open* while its handler runs and *pending* while an item
it published (a message, a request) has not come back from the bus; every such
item has a token, and the bus sends exactly one completion for it
(:mod:`server.bus.records`). Units are written in command order: only the
oldest unit (the *head*) writes as it goes; a later one keeps its lines until
every unit before it is closed. So a PONG never overtakes the 401 or the echo
of the PRIVMSG before it, and a bot's "send X, PING, wait for PONG" sees every
reply to X. A labeled command (IRCv3 labeled-response) keeps all its lines,
those of its handler and those the bus brings back (the echo, the JOIN line, an
error), and writes them when it closes: nothing (``ACK``), one line with the
label, or a ``labeled-response`` batch. Other people's traffic is not part of
any unit and interleaves freely. ``order_lock`` guards the units; a unit's
completion is handled by the subscriber under it, and whoever pops the head
writes what follows at once, so no reply can slip ahead of an older one.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from server.bus.records import Multiline, Request, Send
from server.irc import dispatch, flush_nick
from server.irc.commands import batch_ref
from server.irc.multiline import MultilineBatch
from server.ops.tls import TLSState
from server.process.sendq import Output
from server.process.websocket import WebSocketState
from server.protocol import (
    MAX_CLIENT_TAGS,
    Decoder,
    Message,
    RemoteProtocolError,
    as_middle,
    error_reply,
    escape_tag_value,
)
from server.state.shared import NO_NAMES

if TYPE_CHECKING:
    from server.process.worker import Worker

log = logging.getLogger(__name__)


class ConnectionGone(Exception):
    """The session is closing; stop handling its input."""


RECV_SIZE = 511  # bytes of the first recv() of some input: one line, the usual read
# (511: with its terminating NUL a bytearray of it is 512 bytes, the largest block
# the interpreter's small-object allocator serves; one byte more goes to malloc.)
MORE_SIZE = 4096  # bytes of the non-blocking recv() that follows a full one (a burst, tags)

# A client thread waits for input by peeking at one byte, into this one byte that
# every thread shares and nobody reads; only then does it take a receive buffer
# from the pool. A buffer per client, held while it waits, was 568 bytes of
# resident memory per connection; the pool holds about as many as threads read
# at once. (recv() instead would hold a new RECV_SIZE bytes object while blocked.)
_PEEK = bytearray(1)
_BUFFERS: list[bytearray] = []
_BUFFERS_KEPT = 64


class Pending:
    """A registry request waiting for its result from the subscriber.

    A lock held from the start is the one-shot signal: the waiter's
    ``acquire`` returns once the subscriber releases it. Cheaper than an
    ``Event`` (whose wait and set each go through a ``Condition`` in Python),
    and every client thread waits on a few of these per connection."""

    __slots__ = ("done", "owner", "result", "unit")

    def __init__(self, owner: Session | None = None, unit: Unit | None = None) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.result: tuple[str, Any] = ("timeout", None)
        self.owner = owner
        self.unit = unit  # the command whose output waits for this result, if any

    def resolve(self, status: str, value: Any) -> None:
        self.result = (status, value)
        self.done.release()  # once: the subscriber pops the token before resolving it

    def wait(self, timeout: float) -> bool:
        return self.done.acquire(timeout=timeout)


class Unit:
    """The output of one command: written in command order (module docstring)."""

    __slots__ = ("label", "lines", "open", "pending")

    def __init__(self, label: str | None) -> None:
        self.label = label
        self.lines: list[bytes] = []  # held until the unit may write
        self.pending = 0  # items published and not yet completed by the bus
        self.open = True  # the handler is still running


def add_tag(line: bytes, tag: bytes) -> bytes:
    """``line`` with one more message tag (``b"key=escaped-value"``) in front."""
    if line.startswith(b"@"):
        return b"@" + tag + b";" + line[1:]
    return b"@" + tag + b" " + line


def batch_tagged(item: Message | RemoteProtocolError) -> bool:
    """Whether a client's line carries a ``batch`` tag (a line of a client batch)."""
    return isinstance(item, Message) and "batch" in item.tags


def has_batch_tag(line: bytes) -> bool:
    if not line.startswith(b"@"):
        return False
    return any(t.startswith(b"batch=") for t in line[1:line.find(b" ")].split(b";"))


class Session:
    """A client: its socket, its output, and what the server knows of it.

    Slotted: a plain instance of a class with more than 30 attributes gets a
    dictionary of its own, 1.5 KiB of every connection's resident memory."""

    __slots__ = ("account", "away", "batchbuf", "cap_negotiating", "cap_version", "caps", "closing",
                 "config", "created", "decoder", "echo", "flood_exempt", "forgotten", "host", "ip", "last_active",
                 "modes", "monitoring", "multiline", "multiline_dropped", "nick", "nick_claimed", "nick_pending",
                 "nick_tokens", "nick_tokens_at", "order_lock", "out", "password", "peer_ip", "ping_sent", "port",
                 "protect_deadline", "realname", "registered", "sasl", "sasl_buf", "sid", "signon", "sock",
                 "tagmode", "throttled_since", "tls", "tokens", "tokens_at", "unit", "unit_thread", "units", "user",
                 "worker")

    def __init__(self, worker: Worker, sock: socket.socket, sid: int, ip: str, port: int,
                 tls_context: ssl.SSLContext | None = None, websocket: WebSocketState | None = None) -> None:
        self.worker = worker
        self.config = worker.config
        self.sock = sock
        self.sid = sid
        self.ip = ip  # the real address: for bans, operators and logs, never shown to other users
        self.peer_ip = ip  # the socket's peer (a trusted WebSocket proxy's, else the same): the acceptor's count
        self.port = port
        self.host = worker.cloak(ip)  # what everyone sees
        self.out = Output(sock, self.config.sendq, worker.writer, self._sendq_exceeded,
                          TLSState(tls_context) if tls_context is not None else None, websocket)
        self.decoder = Decoder(max_tags=MAX_CLIENT_TAGS)  # what a client may send
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
        self.caps = NO_NAMES
        # delivery flags, derived from caps (read by the subscriber on the hot path)
        self.tagmode = 0  # 0: no tags, 1: server-time only, 2: all tags, 3: account (and time) only
        self.echo = False
        self.away: str | None = None
        self.monitoring: tuple[str, ...] = ()  # the MONITOR list the registry holds (for a new manager)
        self.modes = NO_NAMES
        # liveness
        now = time.monotonic()
        self.created = now
        self.last_active = now
        self.signon = time.time()
        self.ping_sent: float | None = None
        self.closing: str | None = None
        self.forgotten = False  # the registry already dropped us (QUIT)
        # flood control (token bucket)
        self.flood_exempt = worker.is_flood_exempt(ip)
        self.tokens: float = self.config.flood_burst  # (an int until the first line: a shared small int)
        self.tokens_at = now
        self.throttled_since: float | None = None
        # nick change rate (a token bucket too)
        self.nick_tokens: float = self.config.nick_change_burst
        self.nick_tokens_at = now
        # owned by the subscriber thread: output gathered during one bus batch
        # (None between batches: an empty list would be 56 bytes per client)
        self.batchbuf: list[bytes] | None = None
        # accounts and labeled responses
        self.account: str | None = None
        self.protect_deadline: float | None = None
        self.sasl: str | None = None
        self.sasl_buf = ""
        self.tls = tls_context is not None
        # replies in command order (see the module docstring)
        self.order_lock = threading.Lock()
        self.units: list[Unit] = []  # (a list: rarely more than two, and a deque's first block is 0.6 KiB per client)
        self.unit: Unit | None = None  # the command the client thread runs now
        self.unit_thread = 0  # ... and that thread's ident
        # a draft/multiline batch the client is sending (server/irc/multiline.py)
        self.multiline: MultilineBatch | None = None
        self.multiline_dropped: str | None = None  # the ref of the last batch refused: its lines are ignored

    # -- identity -----------------------------------------------------------
    @property
    def prefix(self) -> str:
        return f"{self.nick}!{self.user}@{self.host}"

    def caps_changed(self) -> None:
        caps = self.caps
        self.tagmode = (2 if "message-tags" in caps else 3 if "account-tag" in caps
                        else 1 if "server-time" in caps else 0)
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
        self.send(error_reply(exc, self.config.server_name, self.nick))

    def emit(self, msgs: list[Message]) -> None:
        """Replies from this client's own thread, in command order: written at
        once when the running command is the head and unlabeled, else held."""
        u = self.current_unit()
        if u is None:
            self.out.write(b"".join(m.to_bytes() for m in msgs))
            return
        lines = [m.to_bytes() for m in msgs]
        with self.order_lock:
            if u.label is None and self.units[0] is u:
                self.out.write(b"".join(lines))
            else:
                u.lines.extend(lines)

    # -- units: replies in command order --------------------------------------
    def current_unit(self) -> Unit | None:
        """The command the calling thread runs for this client, if any."""
        u = self.unit
        if u is not None and threading.get_ident() == self.unit_thread:
            return u
        return None

    def begin_unit(self, label: str | None) -> Unit:
        u = Unit(label)
        with self.order_lock:
            self.units.append(u)
        self.unit, self.unit_thread = u, threading.get_ident()
        return u

    def relabel(self, label: str | None) -> str | None:
        """Give the running command's unit another label (None: none); returns the
        old one. A multiline batch moves its opener's label to its closing line."""
        u = self.current_unit()
        if u is None:
            return None
        with self.order_lock:
            old, u.label = u.label, label
        return old

    def end_unit(self) -> None:
        """The handler returned: the unit closes once its items complete."""
        u = self.current_unit()
        if u is None:
            return
        self.unit = None
        with self.order_lock:
            u.open = False
            out = self._release()
            if out:
                self.out.write(out)

    def complete(self, u: Unit, lines: list[bytes]) -> None:
        """Subscriber thread: the bus completed one of ``u``'s items; ``lines``
        came back for it (an echo, an error). Writes whatever may go now: the
        session's gathered batch output first, so nothing reorders."""
        with self.order_lock:
            u.pending -= 1
            if lines and (u.label is not None or self.units[0] is not u):
                u.lines.extend(lines)
                lines = []
            out = self._release()
            if lines or out:
                gathered, self.batchbuf = self.batchbuf, None
                self.out.write(b"".join(gathered or ()) + b"".join(lines) + out)

    def hold(self, u: Unit, line: bytes) -> bool:
        """Subscriber thread: an event line ``u``'s request caused for this
        client. True when the unit keeps it (labeled, or not the head yet)."""
        with self.order_lock:
            if u.label is not None or (self.units and self.units[0] is not u):
                u.lines.append(line)
                return True
        return False

    def _release(self) -> bytes:
        """Pop every closed unit at the head; their output, in order (order_lock held)."""
        units = self.units
        out: list[bytes] = []
        while units:
            head = units[0]
            if head.open or head.pending:
                break
            del units[0]
            if head.label is not None:
                out.append(self._labeled(head.label, head.lines))
            elif head.lines:
                out.append(b"".join(head.lines))
        return b"".join(out)

    def _labeled(self, label: str, lines: list[bytes]) -> bytes:
        """IRCv3 labeled-response: ACK, the one reply with the label, or a batch."""
        src = self.config.server_name
        tag = b"label=" + escape_tag_value(label).encode()
        if not lines:
            return Message("ACK", (), src, {"label": label}).to_bytes()
        if len(lines) == 1:
            return add_tag(lines[0], tag)
        if "batch" not in self.caps:
            return b"".join(lines)
        ref = batch_ref("L")
        inner = b"batch=" + ref.encode()
        # an item may hold several lines (a multiline message's batch): each is tagged on its own
        split = [part + b"\r\n" for item in lines for part in item.split(b"\r\n") if part]
        return b"".join([Message("BATCH", ("+" + ref, "labeled-response"), src, {"label": label}).to_bytes(),
                         *[line if has_batch_tag(line) else add_tag(line, inner) for line in split],
                         Message("BATCH", ("-" + ref,), src).to_bytes()])

    def _sendq_exceeded(self) -> None:
        self.close("SendQ exceeded")

    # -- the bus (through the publisher) ---------------------------------------
    def _count(self) -> Unit | None:
        """The running command, charged with one more item to wait for."""
        u = self.current_unit()
        if u is not None:
            with self.order_lock:
                u.pending += 1
        return u

    def request(self, op: str, *args: Any, timeout: float = 15.0) -> Any:
        """Run a registry operation in the bus order; return its result or raise
        its RemoteProtocolError."""
        worker = self.worker
        token = worker.new_token()
        pending = Pending(self, self._count())
        worker.pending[token] = pending
        worker.publish(Request(self.sid, token, op, args))
        if not pending.wait(timeout):
            worker.pending.pop(token, None)
            raise ConnectionGone("the registry did not answer")
        status, value = pending.result
        if status == "ok":
            return value
        if status == "err":
            numeric, params, text = value
            raise RemoteProtocolError(numeric, *params, text=text)
        raise ConnectionGone("gone")

    def notify(self, op: str, *args: Any) -> None:
        """A registry operation whose result nobody waits for (the running
        command's later replies still wait for it)."""
        u = self._count()
        if u is None:
            self.worker.publish(Request(self.sid, 0, op, args))
            return
        token = self.worker.new_token()
        self.worker.pending[token] = Pending(self, u)
        self.worker.publish(Request(self.sid, token, op, args))

    def send_message(self, target: str, is_channel: bool, kind: str, tags_full: bytes, tags_time: bytes,
                     body: bytes, msgid: str, now: float, multi: Multiline | None = None) -> None:
        """Publish a PRIVMSG/NOTICE/TAGMSG; its completion (echo, error) closes it."""
        worker = self.worker
        u = self._count()
        token = 0
        if u is not None:
            token = worker.new_token()
            worker.sending[token] = u
        worker.publish(Send(self.sid, target, is_channel, kind, tags_full, tags_time, body, msgid, now, token, multi))

    # -- lifecycle ----------------------------------------------------------
    def close(self, reason: str) -> None:
        """Ask the session to end: ``ERROR`` to the client, then the socket's
        reading side is shut so the client thread wakes and cleans up (it closes
        the socket once the registry has forgotten the client). Safe from any thread."""
        if self.closing is not None:
            return
        self.closing = reason
        self.end_unit()  # from the client's own thread (QUIT): its replies go before the ERROR
        self.out.last_words(Message("ERROR", (f"Closing Link: {self.host} ({reason})",)).to_bytes())
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def is_closing(self) -> bool:
        """Whether the session is ending (a command may have closed it)."""
        return self.closing is not None

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

    def websocket_handshake(self) -> list[Message | RemoteProtocolError]:
        """Answer the WebSocket opening handshake within ``tls_handshake_timeout``
        or raise :class:`ConnectionGone`; then take the client's address from a
        trusted proxy's header, if any. Returns what arrived with the handshake."""
        ws = self.out.ws
        assert ws is not None
        deadline = time.monotonic() + self.config.tls_handshake_timeout
        items: list[Message | RemoteProtocolError] = []
        try:
            while not ws.open:
                if ws.done:
                    raise ConnectionGone(ws.reason)
                if self.closing is not None:
                    raise ConnectionGone(self.closing)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
                data = self.receive()
                if not data:
                    raise ConnectionGone("Connection closed during the WebSocket handshake")
                items = self.decode(data)
            self.sock.settimeout(None)
        except TimeoutError:
            raise ConnectionGone("WebSocket handshake timed out") from None
        except OSError as exc:
            raise ConnectionGone(f"Read error: {exc.strerror or exc}") from None
        if ws.client_ip != self.ip:
            log.info("client %s:%d is %s (from the proxy's header)", self.ip, self.port, ws.client_ip)
            self.ip = ws.client_ip
            self.host = self.worker.cloak(self.ip)
            self.flood_exempt = self.worker.is_flood_exempt(self.ip)
        if ws.secure:
            self.tls = True  # a secure connection (TLS ended at the trusted proxy): WHOIS 671, SASL PLAIN
        return items

    def decode(self, data: bytes) -> list[Message | RemoteProtocolError]:
        """The messages in what :meth:`receive` returned: through the WebSocket
        layer first (one line per message) for a WebSocket client."""
        if self.out.ws is None:
            return self.decoder.feed(data)
        items: list[Message | RemoteProtocolError] = []
        for line in self.out.ws_receive(data):
            if isinstance(line, RemoteProtocolError):
                items.append(line)
            else:
                items += self.decoder.feed(line + b"\r\n")
        return items

    def _recv(self) -> bytes:
        sock = self.sock
        if not sock.recv_into(_PEEK, 1, socket.MSG_PEEK):
            return b""  # the end of the stream
        try:
            buf = _BUFFERS.pop()
        except IndexError:
            buf = bytearray(RECV_SIZE)
        n = sock.recv_into(buf)  # at once: only this thread reads this socket
        data = bytes(buf[:n])
        if len(_BUFFERS) < _BUFFERS_KEPT:
            _BUFFERS.append(buf)
        if n == RECV_SIZE and sock.gettimeout() is None:
            # More may be waiting (a burst): take it now, without blocking. (Only
            # without a timeout: with one, Python would poll for the timeout first.)
            try:
                data += sock.recv(MORE_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                pass
        return data

    def receive(self) -> bytes:
        """The next input from the client (plaintext); ``b""`` at the end.
        Raises OSError (or ConnectionGone for a broken TLS stream)."""
        if self.out.tls is None:
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

    def in_batch(self, item: Message | RemoteProtocolError) -> bool:
        """Whether ``item`` is a line of the multiline batch open now. Such lines
        are not charged one by one: the batch's BATCH lines are, and its size is
        bounded by ``multiline_max_lines`` and ``multiline_max_bytes``."""
        b = self.multiline
        return b is not None and isinstance(item, Message) and item.tags.get("batch") == b.ref

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
    ws = session.out.ws
    items: Sequence[Message | RemoteProtocolError] = ()  # (a tuple: an empty list is 56 bytes per client)
    item: Message | RemoteProtocolError | None = None
    data = b""
    try:
        if ws is None:  # a WebSocket client is announced once its real address is known
            worker.publish(Request(session.sid, 0, "connect",
                                   (session.sid, worker.index, session.ip, session.host, session.tls)))
        if session.out.tls is not None:
            session.tls_handshake()
        if ws is not None:
            items = session.websocket_handshake()  # and what came with it
            worker.publish(Request(session.sid, 0, "connect",
                                   (session.sid, worker.index, session.ip, session.host, session.tls)))
        while session.closing is None:
            if not items:
                if worker.outq.qsize() > worker.config.bus_batch:
                    worker.wait_for_publisher()  # backpressure: read no more while the bus is behind
                try:
                    data = session.receive()
                except OSError as exc:
                    reason = f"Read error: {exc.strerror or exc}"
                    break
                if not data:
                    break
                items = session.decode(data)
            session.last_active = time.monotonic()
            session.ping_sent = None
            flood = not session.flood_exempt
            # Input that makes no message (empty lines, the discarded tail of an
            # oversized one) is charged by size: one line per 4 KiB.
            for _ in range(len(data) // 4096 - len(items) if flood else 0):
                delay = session.throttle(1)
                if delay:
                    time.sleep(delay)
            # lines tagged for a client batch are left out of the backlog that decides
            # "Excess Flood", and those of the open batch are not charged (Session.in_batch)
            left = sum(1 for item in items if not batch_tagged(item)) if flood else 0
            for item in items:
                if flood:
                    if not session.in_batch(item):  # every item, rejected lines too: each costs a reply
                        delay = session.throttle(max(left, 1))
                        if delay:
                            time.sleep(delay)
                    if not batch_tagged(item):
                        left -= 1
                dispatch(session, item)
                if session.is_closing():
                    break
            # nothing of the last input stays referenced while the thread waits for more
            items, item, data = (), None, b""
            if ws is not None and ws.done:  # a close frame, or a broken WebSocket
                raise ConnectionGone(ws.reason)
            if session.nick_pending is not None and not session.is_closing():
                session.begin_unit(None)  # the pending NICK's replies are a command's
                try:
                    flush_nick(session)  # before this thread waits for more input
                finally:
                    session.end_unit()
    except ConnectionGone as exc:
        reason = str(exc)
        session.close(reason)
    except Exception:
        log.exception("client %s: unexpected error", session.ip)
        reason = "Internal error"
        session.close(reason)
    finally:
        worker.end_session(session, session.closing or reason)
