"""An IRC client for locust, on the project's codec (``server.protocol``).

Each timed action fires one locust request event (``request_type="IRC"``):

* ``connect+register``: TCP connect until ``001 RPL_WELCOME``;
* ``join``: ``JOIN`` until the server echoes our own JOIN;
* ``privmsg rtt``: ``PRIVMSG`` to a channel until our echo-message copy comes
  back; where the server lacks echo-message, ``privmsg peer`` is the time until
  the first other user of this locust process receives it.

It is written on plain ``socket`` and ``threading``: under locust (which
monkey-patches them with gevent) each client's reader is a greenlet; outside
locust it is a thread, which is how the tests use it.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from server.protocol import Decoder, Message

Predicate = Callable[[Message], bool]
RequestEvent = Any  # locust's EventHook (``environment.events.request``), or anything with fire(**kw)

_ids = itertools.count(1)
# Messages sent by clients of this process and not yet received by a peer:
# token -> (sender's start time, the event to fire). A peer's receipt fires it.
_in_flight: dict[str, tuple[float, RequestEvent]] = {}


class IRCError(Exception):
    """The server refused, closed, or did not answer in time."""


def parse_host(host: str | None, default_port: int = 6667) -> tuple[str, int]:
    """``irc://127.0.0.1:6667``, ``127.0.0.1:6667`` or ``127.0.0.1`` -> (host, port)."""
    text = (host or "127.0.0.1").strip()
    for scheme in ("irc://", "ircs://", "tcp://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    text = text.rstrip("/")
    if text.startswith("["):
        name, _, rest = text[1:].partition("]")
        return name, int(rest.lstrip(":") or default_port)
    name, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    return name or "127.0.0.1", int(port)


def unique_nick(prefix: str = "L") -> str:
    """A short nick, unique across the processes of one machine (9 characters
    fit the RFC 1459 default of most servers)."""
    n = next(_ids)
    return f"{prefix}{os.getpid() % 46656:03x}{n:x}"[:30]


class IRCClient:
    def __init__(self, host: str, port: int, request_event: RequestEvent | None = None, *,
                 timeout: float = 10.0, source: str | None = None) -> None:
        self.host = host
        self.port = port
        self.request_event = request_event
        self.timeout = timeout
        self.source = source
        self.sock: socket.socket | None = None
        self.nick = "*"
        self.caps: set[str] = set()
        self.channels: set[str] = set()
        self.received = 0
        self.closed = threading.Event()
        self._decoder = Decoder(strict=False)
        self._lock = threading.Lock()
        self._waiters: list[tuple[Predicate, threading.Event, list[Message]]] = []
        self._reader: threading.Thread | None = None

    # -- events ---------------------------------------------------------------
    def _fire(self, name: str, started: float, exc: BaseException | None = None, length: int = 0) -> None:
        if self.request_event is not None:
            self.request_event.fire(request_type="IRC", name=name, response_time=(time.perf_counter() - started) * 1000,
                                    response_length=length, exception=exc, context={"nick": self.nick})

    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` and report it as one request; errors are reported, then raised."""
        started = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            self._fire(name, started, exc)
            raise
        self._fire(name, started)
        return result

    # -- io -------------------------------------------------------------------
    def send(self, message: Message) -> None:
        if self.sock is None or self.closed.is_set():
            raise IRCError("not connected")
        try:
            self.sock.sendall(message.to_bytes())
        except OSError as exc:
            self.closed.set()
            raise IRCError(f"send failed: {exc}") from exc

    def _read(self) -> None:
        sock = self.sock
        assert sock is not None
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for msg in self._decoder.feed(data):
                    if isinstance(msg, Message):
                        self._on_message(msg)
        except OSError:
            pass
        finally:
            self.closed.set()
            with self._lock:
                waiters, self._waiters = self._waiters, []
            for _, event, _ in waiters:
                event.set()

    def _on_message(self, msg: Message) -> None:
        verb = msg.command.upper()
        if verb == "PING":
            try:
                self.send(Message("PONG", msg.params[-1:]))
            except IRCError:
                return
        elif verb == "PRIVMSG":
            self.received += 1
            text = msg.params[-1] if msg.params else ""
            sender = (msg.source or "").split("!", 1)[0]
            if text.startswith("rt:") and sender != self.nick:
                peer = _in_flight.pop(text.split(" ", 1)[0], None)
                if peer is not None:
                    started, event = peer
                    event.fire(request_type="IRC", name="privmsg peer", response_time=(time.perf_counter() - started)
                               * 1000, response_length=len(text), exception=None, context={})
        with self._lock:
            for pred, event, box in self._waiters:
                if not event.is_set() and pred(msg):
                    box.append(msg)
                    event.set()

    def wait_for(self, pred: Predicate, timeout: float | None = None, what: str = "reply") -> Message:
        """Block until a message matching ``pred`` arrives (register before sending)."""
        event, box = self.expect(pred)
        return self.wait(event, box, timeout, what)

    def expect(self, pred: Predicate) -> tuple[threading.Event, list[Message]]:
        event = threading.Event()
        box: list[Message] = []
        with self._lock:
            self._waiters.append((pred, event, box))
        return event, box

    def wait(self, event: threading.Event, box: list[Message], timeout: float | None, what: str) -> Message:
        ok = event.wait(self.timeout if timeout is None else timeout)
        with self._lock:
            self._waiters = [w for w in self._waiters if w[1] is not event]
        if not ok:
            raise IRCError(f"no {what} within {self.timeout if timeout is None else timeout:.0f}s")
        if not box:
            raise IRCError(f"connection closed while waiting for {what}")
        msg = box[0]
        if msg.command == "ERROR" or (msg.command.isdigit() and msg.command[0] in "45"):
            raise IRCError(f"{msg.command} {' '.join(msg.params)}")
        return msg

    # -- actions ---------------------------------------------------------------
    def connect(self, nick: str | None = None, caps: tuple[str, ...] = ("echo-message", "server-time")) -> None:
        """Connect and register (timed as ``connect+register``)."""
        self.timed("connect+register", lambda: self._connect(nick or unique_nick(), caps))

    def _connect(self, nick: str, caps: tuple[str, ...]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        if self.source:
            sock.bind((self.source, 0))
        try:
            sock.connect((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise IRCError(f"connect failed: {exc}") from exc
        sock.settimeout(None)
        self.sock = sock
        self.nick = nick
        self._reader = threading.Thread(target=self._read, name=f"irc-{nick}", daemon=True)
        self._reader.start()
        welcome = self.expect(lambda m: m.command in ("001", "ERROR", "432", "433", "436", "464"))
        if caps:
            acked = self.expect(lambda m: m.command == "CAP" and len(m.params) > 1
                                and m.params[1].upper() in ("ACK", "NAK"))
            self.send(Message("CAP", ("LS", "302")))
            self.send(Message("NICK", (nick,)))
            self.send(Message("USER", (nick[:9], "0", "*", "locust")))
            self.send(Message("CAP", ("REQ", " ".join(caps))))
            try:
                reply = self.wait(*acked, None, "CAP ACK")
                if reply.params[1].upper() == "ACK":
                    self.caps.update(reply.params[-1].split())
            except IRCError:
                pass  # a server without CAP registers anyway
            self.send(Message("CAP", ("END",)))
        else:
            self.send(Message("NICK", (nick,)))
            self.send(Message("USER", (nick[:9], "0", "*", "locust")))
        self.wait(*welcome, None, "welcome")

    def join(self, channel: str) -> None:
        """Join and wait for our own JOIN (timed as ``join``)."""
        def run() -> None:
            folded = channel.lower()
            event = self.expect(lambda m: (m.command == "JOIN" and (m.source or "").split("!", 1)[0] == self.nick
                                           and bool(m.params) and m.params[0].lower() == folded)
                                or m.command in ("403", "405", "471", "473", "474", "475", "476"))
            self.send(Message("JOIN", (channel,)))
            self.wait(*event, None, "JOIN")
            self.channels.add(channel)
        self.timed("join", run)

    def part(self, channel: str) -> None:
        def run() -> None:
            event = self.expect(lambda m: (m.command == "PART" and (m.source or "").split("!", 1)[0] == self.nick)
                                or m.command in ("403", "442"))
            self.send(Message("PART", (channel, "hop")))
            self.wait(*event, None, "PART")
            self.channels.discard(channel)
        self.timed("part", run)

    def say(self, channel: str, text: str = "hello") -> None:
        """PRIVMSG a channel; with echo-message, time the round trip until our copy
        is back (``privmsg rtt``); without it, a peer's receipt fires ``privmsg peer``."""
        token = f"rt:{os.getpid():x}.{next(_ids):x}"
        line = f"{token} {text}"
        if "echo-message" not in self.caps:
            if self.request_event is not None:
                _in_flight[token] = (time.perf_counter(), self.request_event)
                if len(_in_flight) > 10000:  # nobody heard the oldest ones
                    for key in list(_in_flight)[:5000]:
                        _in_flight.pop(key, None)
            self.send(Message("PRIVMSG", (channel, line)))
            return

        def run() -> None:
            event = self.expect(lambda m: (m.command == "PRIVMSG" and m.params[-1:] == (line,))
                                or m.command in ("401", "403", "404"))
            self.send(Message("PRIVMSG", (channel, line)))
            self.wait(*event, None, "echo")
        self.timed("privmsg rtt", run)

    def quit(self, reason: str = "bye") -> None:
        if self.sock is None:
            return
        try:
            self.send(Message("QUIT", (reason,)))
            self.closed.wait(2.0)
        except IRCError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        self.closed.set()
