"""The network client: one background thread per connection, events out on a queue.

It wraps the sans-I/O codec (``server.protocol``) in a few lines of socket I/O
(habit 1) and never imports tkinter: tests drive it against the real server with
no display. It owns what belongs to the connection rather than to the chat:
CAP negotiation, PING/PONG, lag, TLS with pinned certificates, and reconnecting
with back-off. Every
message it reads is put on :attr:`IRCConnection.events` as :class:`Received`;
the GUI's controller drains that queue with ``after()`` (habit 13).

Methods for the caller: :meth:`start`, :meth:`send`, :meth:`quit`, :meth:`stop`.
:meth:`run` is the thread's body (``ChatApp.receive`` calls it).

TLS: a certificate is checked against the system's certificate authorities (plus
``cafile``, for a company or test CA). When that fails, the client does not just
fail: it fetches the certificate on a second connection, reads its SHA-256
fingerprint and reports :class:`UntrustedCertificate` so the user can decide
(trust on first use). A server pinned in ``known`` (:mod:`gui.known_servers`)
is checked against its pin only, at every connect and reconnect; a different
certificate is refused with :class:`CertificateChanged`. Neither event is
retried, and nothing here pins: that is the user's decision, made in the GUI.
"""

from __future__ import annotations

import queue
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from server.protocol import Decoder, LocalProtocolError, Message, RemoteProtocolError, numerics, parse

from . import known_servers
from .known_servers import KnownServers

__all__ = [
    "WANTED_CAPS",
    "CapsChanged",
    "CertificateChanged",
    "Connected",
    "Connecting",
    "Disconnected",
    "Failed",
    "IRCConnection",
    "Lag",
    "NickRetry",
    "Received",
    "UntrustedCertificate",
]

# Capabilities the client understands, asked for when the server offers them.
WANTED_CAPS = frozenset({
    "away-notify", "batch", "cap-notify", "chathistory", "draft/chathistory", "draft/multiline", "echo-message",
    "extended-join", "message-tags", "multi-prefix", "server-time", "userhost-in-names",
})


@dataclass(frozen=True, slots=True)
class Connecting:
    host: str
    port: int
    attempt: int


@dataclass(frozen=True, slots=True)
class Connected:
    host: str
    port: int
    tls: bool
    fingerprint: str | None = None  # SHA-256 of the server's certificate, with TLS


@dataclass(frozen=True, slots=True)
class Received:
    message: Message


@dataclass(frozen=True, slots=True)
class CapsChanged:
    enabled: frozenset[str]
    offered: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lag:
    seconds: float


@dataclass(frozen=True, slots=True)
class NickRetry:
    """While reconnecting, our old nick was still taken: we tried ``nick``."""

    nick: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str
    retry_in: float | None  # None: no more tries


@dataclass(frozen=True, slots=True)
class Failed:
    """Could not connect at all. ``kind``: refused, dns, timeout, tls, password, other."""

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class UntrustedCertificate:
    """No certificate authority vouches for the server's certificate; not connected.

    ``fingerprint`` is the SHA-256 of the certificate the server presented
    (``AB:CD:...``); pinning it and connecting again trusts that certificate.
    """

    host: str
    port: int
    fingerprint: str
    subject: str
    issuer: str
    not_after: str
    reason: str  # why verification failed, e.g. "self-signed certificate"


@dataclass(frozen=True, slots=True)
class CertificateChanged:
    """The server presented another certificate than the pinned one; not connected.

    Either the server's owner replaced it, or someone is in the middle. The pin
    stays as it was.
    """

    host: str
    port: int
    old: str
    new: str
    subject: str
    issuer: str


Event = (Connecting | Connected | Received | CapsChanged | Lag | NickRetry | Disconnected | Failed
         | UntrustedCertificate | CertificateChanged)


class _CertificateProblem(Exception):
    """Raised by ``_open``: the connection was refused over its certificate."""

    def __init__(self, event: UntrustedCertificate | CertificateChanged) -> None:
        super().__init__(event)
        self.event = event


def describe(exc: BaseException, host: str, port: int, tls: bool) -> tuple[str, str]:
    """A connect error in words a person can act on."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused", (f"Connection refused: nothing is accepting connections at {host} port {port}. "
                           "Is the server running, and is the port right?")
    if isinstance(exc, socket.gaierror):
        return "dns", f"Cannot find a server called {host!r}. Check the spelling of the server name."
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout", f"{host} port {port} did not answer in time. Check the address and your network."
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls", (f"The server's certificate is not trusted ({exc.verify_message}), "
                       "and it could not be fetched to show you its fingerprint.")
    if isinstance(exc, ssl.SSLError):
        return "tls", (f"The secure (TLS) connection failed ({exc.reason}). Is {port} a TLS port? "
                       "IRC usually listens on 6697 for TLS and 6667 without.")
    return "other", f"Could not connect to {host} port {port}: {exc}"


# Why a reconnect failed, short enough for a status bar.
_SHORT = {"refused": "the server refuses connections", "dns": "the server's name is not found",
          "timeout": "the server does not answer"}


def _unchecked_context() -> ssl.SSLContext:
    """TLS that encrypts but checks nothing: only for a pinned certificate (checked by its
    fingerprint right after), for fetching a certificate to show, or when the user said so."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class IRCConnection:
    """One IRC connection, run by a background thread; events go to :attr:`events`."""

    def __init__(
        self,
        host: str,
        port: int,
        nick: str,
        *,
        password: str | None = None,
        tls: bool = False,
        tls_verify: bool = True,
        cafile: str | None = None,
        known: KnownServers | None = None,
        username: str | None = None,
        realname: str = "Chat-room user",
        caps: frozenset[str] = WANTED_CAPS,
        reconnect: bool = True,
        backoff: tuple[float, float] = (1.0, 60.0),
        ping_interval: float = 30.0,
        ping_timeout: float = 120.0,
        connect_timeout: float = 15.0,
        events: queue.Queue[Event] | None = None,
    ) -> None:
        self.host, self.port, self.nick = host, port, nick
        self.password, self.tls, self.tls_verify = password, tls, tls_verify
        self.cafile = cafile or None
        self.known = known
        self.fingerprint: str | None = None  # of the certificate of the current TLS connection
        self.username = username or "".join(c for c in nick if c.isalnum())[:10] or "chatroom"
        self.realname = realname
        self.wanted_caps = caps
        self.reconnect = reconnect
        self.backoff = backoff
        self.ping_interval, self.ping_timeout, self.connect_timeout = ping_interval, ping_timeout, connect_timeout
        self.events: queue.Queue[Event] = events if events is not None else queue.Queue()
        self.caps: set[str] = set()
        self.offered: dict[str, str] = {}
        self.registered = False
        self.ever_registered = False
        self.thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set by reconnect_now: cut the back-off wait short
        self._fatal = False
        self._lag_token: str | None = None
        self._lag_sent = 0.0
        self._tokens = 0
        self._cap_ls: list[str] = []

    # -- methods for the caller -------------------------------------------------------
    def start(self, target: object = None) -> threading.Thread:
        """Run :meth:`run` (or ``target``, which must call it) in a daemon thread."""
        body = target if callable(target) else self.run
        self.thread = threading.Thread(target=body, name=f"irc-{self.host}:{self.port}", daemon=True)
        self.thread.start()
        return self.thread

    def send(self, message: Message | str) -> bool:
        """Send one message now; False when not connected. Thread-safe."""
        if not isinstance(message, Message):
            try:
                message = parse(message)  # a raw line (/quote): through the codec, which refuses CR/LF
            except RemoteProtocolError:
                return False
        try:
            data = message.to_bytes()
        except LocalProtocolError:
            return False
        sock = self._sock
        if sock is None:
            return False
        try:
            with self._send_lock:
                sock.sendall(data)
        except OSError:
            return False
        return True

    def quit(self, reason: str = "Leaving", timeout: float = 2.0) -> None:
        """Say QUIT, give the server ``timeout`` seconds to close, then close."""
        self._stopping.set()
        self._wake.set()
        if self.send(Message("QUIT", (reason,))) and self.thread is not None \
                and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        self.stop()

    def stop(self) -> None:
        """Close now, without reconnecting."""
        self._stopping.set()
        self._wake.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(5)

    def reconnect_now(self) -> bool:
        """Skip the rest of the back-off wait and try at once; False when not waiting to retry."""
        if self._stopping.is_set() or self._sock is not None or self.thread is None or not self.thread.is_alive():
            return False
        self._wake.set()
        return True

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # -- the thread ------------------------------------------------------------------------
    def run(self) -> None:
        """Connect, read until the connection ends, reconnect with back-off."""
        attempt = 0
        while not self._stopping.is_set():
            self.events.put(Connecting(self.host, self.port, attempt))
            try:
                sock = self._open()
            except _CertificateProblem as problem:
                # Not a network hiccup: retrying would not change the answer, and
                # must not wear the user down into accepting. The GUI asks.
                self.events.put(problem.event)
                return
            except OSError as exc:
                kind, text = describe(exc, self.host, self.port, self.tls)
                if not self.ever_registered or not self.reconnect:
                    self.events.put(Failed(kind, text))
                    return
                reason = _SHORT.get(kind, text)  # the long advice was for the first connect
            else:
                reason = self._session(sock, attempt)
                if self.registered:
                    attempt = 0
                self.registered = False
            if self._stopping.is_set() or self._fatal or not self.reconnect or not self.ever_registered:
                self.events.put(Disconnected(reason, None))
                return
            base, cap = self.backoff
            delay = min(cap, base * 2 ** attempt) * random.uniform(0.8, 1.2)
            attempt += 1
            self.events.put(Disconnected(reason, delay))
            self._wake.clear()
            self._wake.wait(delay)
        self.events.put(Disconnected("closed", None))

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                sock = self._secure(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def _secure(self, sock: socket.socket) -> ssl.SSLSocket:
        """The TLS handshake, and the decision whether to trust the certificate."""
        self.fingerprint = None
        if not self.tls_verify:  # the user turned checking off for this server
            return _unchecked_context().wrap_socket(sock, server_hostname=self.host)
        pin = self.known.get(self.host, self.port) if self.known is not None else None
        if pin is not None:
            # A pinned server: that certificate and no other. Its CA (usually none) does not matter.
            tls = _unchecked_context().wrap_socket(sock, server_hostname=self.host)
            der = tls.getpeercert(binary_form=True) or b""
            presented = known_servers.fingerprint(der)
            if not known_servers.same_fingerprint(presented, pin):
                tls.close()
                info = known_servers.summary(der)
                raise _CertificateProblem(CertificateChanged(self.host, self.port, pin, presented,
                                                             info.subject, info.issuer))
            self.fingerprint = presented
            return tls
        ctx = ssl.create_default_context()
        if self.cafile:
            ctx.load_verify_locations(cafile=self.cafile)  # in addition to the system's authorities
        try:
            tls = ctx.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or str(exc.reason)
            try:
                der = self._fetch_certificate()
            except OSError:
                raise exc from None
            info = known_servers.summary(der)
            raise _CertificateProblem(UntrustedCertificate(
                self.host, self.port, known_servers.fingerprint(der), info.subject, info.issuer, info.not_after,
                reason)) from exc
        self.fingerprint = known_servers.fingerprint(tls.getpeercert(binary_form=True) or b"")
        return tls

    def _fetch_certificate(self) -> bytes:
        """The server's certificate, from a handshake that checks nothing and sends no IRC.

        A failed verification aborts the handshake before Python lets us see the
        certificate, so it takes a second connection.
        """
        with socket.create_connection((self.host, self.port), timeout=self.connect_timeout) as raw, \
                _unchecked_context().wrap_socket(raw, server_hostname=self.host) as tls:
            der = tls.getpeercert(binary_form=True)
        if not der:
            raise ssl.SSLError("the server presented no certificate")
        return der

    def _session(self, sock: socket.socket, attempt: int) -> str:
        """One connection, from registration to its end; returns why it ended."""
        self._sock = sock
        self.caps.clear()
        self.offered.clear()
        self._lag_token = None
        self.events.put(Connected(self.host, self.port, self.tls, self.fingerprint))
        decoder = Decoder(strict=False)
        nick = self.nick
        self._cap_ls = []
        self.send(Message("CAP", ("LS", "302")))
        if self.password:
            self.send(Message("PASS", (self.password,)))
        self.send(Message("NICK", (nick,)))
        self.send(Message("USER", (self.username, "0", "*", self.realname)))
        sock.settimeout(1.0)
        last_heard = time.monotonic()
        reason = "connection closed by the server"
        try:
            while not self._stopping.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    if self._idle(time.monotonic() - last_heard):
                        reason = "no answer from the server (ping timeout)"
                        break
                    continue
                if not data:
                    break
                last_heard = time.monotonic()
                for item in decoder.feed(data):
                    if isinstance(item, RemoteProtocolError):
                        continue  # a malformed line from the server: skip it, keep the connection
                    nick = self._dispatch(item, attempt, nick)
        except ssl.SSLError as exc:
            reason = f"TLS error: {exc.reason}"
        except OSError as exc:
            reason = exc.strerror or str(exc)
        finally:
            self._sock = None
            try:
                sock.close()
            except OSError:
                pass
        if self._stopping.is_set():
            return "you left"
        return reason

    def _idle(self, quiet: float) -> bool:
        """Ping when quiet; True when the server stopped answering."""
        now = time.monotonic()
        if self._lag_token is not None:
            return now - self._lag_sent > self.ping_timeout
        if self.registered and quiet >= self.ping_interval:
            self.ping()
        return False

    def ping(self) -> None:
        """Measure the lag now (the answer arrives as a :class:`Lag` event)."""
        self._tokens += 1
        self._lag_token = f"lag-{self._tokens}"
        self._lag_sent = time.monotonic()
        self.send(Message("PING", (self._lag_token,)))

    def _dispatch(self, msg: Message, attempt: int, nick: str) -> str:
        verb = msg.verb
        if verb == "PING":
            self.send(Message("PONG", msg.params[-1:] if msg.params else ()))
            return nick
        if verb == "PONG" and self._lag_token is not None and msg.params and msg.params[-1] == self._lag_token:
            self._lag_token = None
            self.events.put(Lag(time.monotonic() - self._lag_sent))
            return nick
        if verb == "CAP" and len(msg.params) >= 2:
            self._cap(msg)
        elif verb == numerics.RPL_WELCOME:
            self.registered = self.ever_registered = True
            self.nick = msg.params[0]
            self.ping()  # a first lag figure at once
        elif verb in (numerics.ERR_NICKNAMEINUSE, numerics.ERR_ERRONEUSNICKNAME) and not self.registered \
                and self.ever_registered:
            # Reconnecting: our previous self may still hold the nick. Nobody to ask.
            nick = nick + "_" if len(nick) < 28 else nick[:-1] + str(attempt % 10)
            self.send(Message("NICK", (nick,)))
            self.events.put(NickRetry(nick))
            return nick
        elif verb == numerics.ERR_PASSWDMISMATCH:
            self._fatal = True
        elif verb == "NICK" and self.registered and msg.source and msg.source.split("!")[0] == self.nick:
            self.nick = msg.params[0]
        self.events.put(Received(msg))
        return nick

    def _cap(self, msg: Message) -> None:
        sub = msg.params[1].upper()
        if sub == "LS":
            more = len(msg.params) > 3 and msg.params[2] == "*"
            self._cap_ls += msg.params[-1].split()
            if more:
                return
            for item in self._cap_ls:
                name, _, value = item.partition("=")
                self.offered[name] = value
            want = sorted(c for c in self.offered if c in self.wanted_caps)
            if want:
                self.send(Message("CAP", ("REQ", " ".join(want))))
            else:
                self.send(Message("CAP", ("END",)))
        elif sub == "ACK":
            for name in msg.params[-1].split():
                if name.startswith("-"):
                    self.caps.discard(name[1:])
                else:
                    self.caps.add(name)
            if not self.registered:
                self.send(Message("CAP", ("END",)))
        elif sub == "NAK":
            if not self.registered:
                self.send(Message("CAP", ("END",)))
            return
        elif sub == "NEW":
            for item in msg.params[-1].split():
                name, _, value = item.partition("=")
                self.offered[name] = value
            want = sorted(c.partition("=")[0] for c in msg.params[-1].split()
                          if c.partition("=")[0] in self.wanted_caps)
            if want:
                self.send(Message("CAP", ("REQ", " ".join(want))))
        elif sub == "DEL":
            for name in msg.params[-1].split():
                self.caps.discard(name)
                self.offered.pop(name, None)
        else:
            return
        self.events.put(CapsChanged(frozenset(self.caps), dict(self.offered)))
