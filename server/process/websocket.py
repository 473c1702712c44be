"""IRC over WebSocket (IRCv3 WebSocket spec): one connection's WebSocket layer.

A WebSocket client is an ordinary :class:`~server.process.session.Session`
(same decoder, limits, flood control and cloak). Only the bytes around it differ,
and that is all this module does, on the sans-I/O
:class:`websockets.server.ServerProtocol` (the library's framing, handshake
and control frames; none of its I/O). It fits the session's byte pump the way
TLS does (:mod:`server.ops.tls`): the client thread feeds what it reads in,
every writer turns its IRC bytes into frames, and the frames take the plain
output path (``MSG_DONTWAIT`` sends, the SendQ, the writer thread). The protocol
object is not thread-safe: every call on a :class:`WebSocketState` happens
under the owning ``Output``'s lock (:mod:`server.process.sendq`).

What the spec and RFC 6455 ask, and how it is kept here:

* subprotocols ``binary.ircv3.net`` and ``text.ircv3.net``, the client's order
  of preference deciding; without either the connection goes on in text
  frames (legacy clients);
* one IRC line per message, no CR or LF: a message holding a line break is
  refused as a whole with an error reply (never split into lines: that would
  let one message smuggle several commands past the framing), one trailing
  CRLF or LF is forgiven;
* a text message must be UTF-8, or the connection fails with close code 1007;
  a binary message goes to the IRC decoder as it is, which refuses bad UTF-8
  with its usual reply (the server is UTF8ONLY);
* outgoing lines are sent as frames of the negotiated type, without CRLF;
* the ``Origin`` header is checked against an allow-list (``*`` wildcards),
  refused with HTTP 403;
* behind a trusted reverse proxy the client's address comes from a header
  (``X-Forwarded-For`` by default), so bans, cloaks and logs see the real one,
  and ``X-Forwarded-Proto: https`` marks the connection secure (the proxy
  terminated TLS).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import Any

from websockets.exceptions import InvalidState
from websockets.frames import BINARY, CONT, TEXT, CloseCode, Frame
from websockets.http11 import Request
from websockets.protocol import CONNECTING, OPEN
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

from server.protocol import MAX_BODY, MAX_TAGS, MalformedMessage, RemoteProtocolError

log = logging.getLogger(__name__)
# The library logs every open and close at INFO; the session logs its own.
_protocol_log = logging.getLogger(__name__ + ".protocol")
_protocol_log.setLevel(logging.WARNING)

BINARY_PROTOCOL = Subprotocol("binary.ircv3.net")
TEXT_PROTOCOL = Subprotocol("text.ircv3.net")
SUBPROTOCOLS = (BINARY_PROTOCOL, TEXT_PROTOCOL)

# A message may hold the longest line the IRC decoder takes (tags + body), so
# that a line just over the IRC limits gets the decoder's 417 reply; a message
# past this fails the connection (close code 1009): nobody buffers more.
MAX_MESSAGE = MAX_TAGS + MAX_BODY + 2

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def origin_patterns(allowed: Sequence[str]) -> list[Origin | re.Pattern[str] | None] | None:
    """The ``Origin`` allow-list for :class:`ServerProtocol`: None (any origin)
    when the list is empty; else exact values and ``*`` wildcards, compared
    without regard to case (a missing Origin header is then refused)."""
    if not allowed:
        return None
    return [re.compile(fnmatch.translate(a), re.IGNORECASE) for a in allowed]


def select_subprotocol(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """The first subprotocol of the client's list that we speak (the spec: the
    client's preference decides); None goes on without one."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return None


def client_address(peer: str, headers: Any, trusted: Sequence[Network], header: str) -> str:
    """The address to treat the client as: ``peer``, unless ``peer`` is a
    trusted proxy that named the client in ``header``. The header is read from
    the right (each proxy appends the address it saw), skipping trusted proxies:
    the first other address is the client's. Anything unparseable: ``peer``."""
    if not trusted or not header or not _in(peer, trusted):
        return peer
    values = headers.get_all(header)
    if not values:
        return peer
    hops = [h.strip() for v in values for h in v.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            addr = ipaddress.ip_address(hop)
        except ValueError:
            return peer  # not an address (a port, a name, "unknown"): trust none of it
        if not any(addr in net for net in trusted):
            return str(addr)
    return peer


def forwarded_tls(peer: str, headers: Any, trusted: Sequence[Network]) -> bool:
    """True if ``peer`` is a trusted proxy whose ``X-Forwarded-Proto`` (the
    last value: the one the proxy itself set) says the client came over TLS
    (``https`` or ``wss``)."""
    if not trusted or not _in(peer, trusted):
        return False
    values = [h.strip().lower() for v in headers.get_all("X-Forwarded-Proto") for h in v.split(",") if h.strip()]
    return bool(values) and values[-1] in {"https", "wss"}


def _in(ip: str, nets: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in nets)


class LineBreakInMessage(MalformedMessage):
    """A WebSocket message that holds more than one line."""

    def __init__(self, command: str = "*") -> None:
        super().__init__("a WebSocket message must hold exactly one IRC line", command)


class WebSocketState:
    """One connection's WebSocket engine (server side). Not thread-safe: the
    caller holds the connection's output lock around every method.

    Before the handshake completes, :meth:`receive` answers it; :attr:`open`
    turns True with the 101 response, :attr:`client_ip` is then the client's
    address. :attr:`done` is set once the connection must end, with
    :attr:`reason`."""

    __slots__ = ("binary", "client_ip", "done", "header", "parts", "peer", "proto", "reason", "secure", "text",
                 "trusted")

    def __init__(self, peer: str, origins: Sequence[str] = (), trusted: Sequence[Network] = (),
                 header: str = "X-Forwarded-For") -> None:
        self.proto = ServerProtocol(origins=origin_patterns(origins), subprotocols=list(SUBPROTOCOLS),
                                    select_subprotocol=select_subprotocol, max_size=MAX_MESSAGE,
                                    logger=_protocol_log)
        self.peer = peer
        self.client_ip = peer
        self.secure = False  # a trusted proxy said the client reached it over TLS
        self.trusted = list(trusted)
        self.header = header
        self.binary = False
        self.parts: list[bytes] = []  # a fragmented message so far
        self.text = False  # ... and whether it is a text message
        self.done = False
        self.reason = ""

    @property
    def open(self) -> bool:
        """The handshake succeeded (the connection may have closed since)."""
        return self.proto.state is not CONNECTING and self.proto.handshake_exc is None

    # -- input ------------------------------------------------------------------
    def receive(self, data: bytes) -> tuple[list[bytes | RemoteProtocolError], bytes]:
        """Feed bytes from the wire (``b""``: EOF); return the IRC lines that
        arrived (without CRLF), or errors for refused messages, and the bytes to
        send (the handshake response, pongs, close frames)."""
        proto = self.proto
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()
            self._end("Connection closed")
        lines: list[bytes | RemoteProtocolError] = []
        for event in proto.events_received():
            if self.done:
                break  # the connection failed on an earlier message: nothing after it counts
            if isinstance(event, Request):
                self._answer(event)
            elif isinstance(event, Frame):
                line = self._frame(event)
                if line is not None:
                    lines.append(line)
        out = proto.data_to_send()
        if b"" in out:  # SEND_EOF: the library is done with this connection
            self._end(self._close_reason())
        if proto.parser_exc is not None and not self.done:
            self._end(self._close_reason())
        return lines, b"".join(out)

    def _answer(self, request: Request) -> None:
        proto = self.proto
        response = proto.accept(request)
        if response.status_code == 101:
            self.client_ip = client_address(self.peer, request.headers, self.trusted, self.header)
            self.secure = forwarded_tls(self.peer, request.headers, self.trusted)
            self.binary = proto.subprotocol == BINARY_PROTOCOL
        else:
            exc = proto.handshake_exc
            self.reason = f"WebSocket handshake refused ({response.status_code}: {exc or response.reason_phrase})"
        proto.send_response(response)
        if response.status_code != 101:
            self.done = True

    def _frame(self, frame: Frame) -> bytes | RemoteProtocolError | None:
        if frame.opcode is TEXT or frame.opcode is BINARY:
            self.parts = [bytes(frame.data)]
            self.text = frame.opcode is TEXT
        elif frame.opcode is CONT:
            self.parts.append(bytes(frame.data))
        else:
            return None  # ping (answered by the library), pong, close
        if not frame.fin:
            return None
        data = b"".join(self.parts)
        self.parts = []
        if self.text:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.proto.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
                self._end("Invalid UTF-8 in a WebSocket text message")
                return None
        if data.endswith(b"\n"):  # forgiven: one trailing line ending
            data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
        if b"\n" in data or b"\r" in data:
            return LineBreakInMessage(_command_of(data))
        return data

    def _close_reason(self) -> str:
        proto = self.proto
        if proto.state is CONNECTING and proto.handshake_exc is not None:
            return f"WebSocket handshake failed: {proto.handshake_exc}"
        if proto.parser_exc is not None and not isinstance(proto.parser_exc, EOFError):
            return f"WebSocket error: {proto.parser_exc}"
        rcvd = proto.close_rcvd
        if rcvd is not None:
            return f"WebSocket closed ({rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"
        return "Connection closed"

    def _end(self, reason: str) -> None:
        if not self.done:
            self.done = True
            self.reason = self.reason or reason

    # -- output -----------------------------------------------------------------
    def frames(self, data: bytes) -> bytes:
        """IRC bytes (whole CRLF-terminated lines) out, one frame per line."""
        proto = self.proto
        if proto.state is not OPEN:
            return b""
        send = proto.send_binary if self.binary else proto.send_text
        for line in data.split(b"\r\n"):
            if not line:
                continue
            if not self.binary:
                # Never relay non-UTF-8 in text frames (the browser would drop
                # the connection); our own lines are UTF-8 already.
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    line = line.decode("utf-8", "replace").encode()
            send(line)
        return b"".join(proto.data_to_send())

    def close(self, reason: str) -> bytes:
        """A close frame (code 1000 with ``reason``, cut to fit), once."""
        proto = self.proto
        if proto.state is not OPEN:
            return b""
        text = reason.encode()[:120].decode("utf-8", "ignore")
        try:
            proto.send_close(CloseCode.NORMAL_CLOSURE, text)
        except InvalidState:
            return b""
        return b"".join(d for d in proto.data_to_send() if d)


def _command_of(line: bytes) -> str:
    words = line.split()
    while words and words[0][:1] in (b"@", b":"):
        words.pop(0)
    word = words[0].decode("ascii", "replace").upper() if words else "*"
    return word if word.isalnum() and len(word) <= 32 else "*"
