"""A small blocking IRC client for tests, on the project's codec.

It waits on lines, never on sleeps: ``expect()`` reads until a message matches
or the timeout passes (then fails, showing what did arrive).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

from server.protocol import Decoder, Message, RemoteProtocolError

Match = str | Callable[[Message], bool]


class IRCClient:
    def __init__(self, port: int, host: str = "127.0.0.1", *, timeout: float = 10.0,
                 source: str | None = None, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.decoder = Decoder(strict=False)
        self.timeout = timeout
        self.backlog: list[Message] = []
        self.seen: list[Message] = []
        self.nick = "*"
        self.closed = False
        self.autopong = True

    # -- io -------------------------------------------------------------------
    def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode()
        if not data.endswith(b"\n"):
            data += b"\r\n"
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        for item in self.decoder.feed(data):
            if isinstance(item, Message):
                self.backlog.append(item)
                self.seen.append(item)
                if item.verb == "PING" and self.autopong:
                    self.send(f"PONG :{item.params[-1] if item.params else ''}")
        return True

    def expect(self, match: Match, timeout: float | None = None) -> Message:
        """The first message (in arrival order, consumed) that matches."""
        pred = _predicate(match)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i, msg in enumerate(self.backlog):
                if pred(msg):
                    del self.backlog[i]
                    return msg
            if self.closed or not self._fill(deadline):
                got = "\n".join(m.to_line() for m in self.backlog[-30:])
                raise AssertionError(f"{self.nick}: no message matching {match!r}; closed={self.closed}; got:\n{got}")

    def expect_none(self, match: Match, timeout: float = 0.5) -> None:
        """Assert that nothing matching arrives within ``timeout`` (used only
        where the server's answer to a later probe shows it had its chance)."""
        pred = _predicate(match)
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        bad = [m for m in self.backlog if pred(m)]
        assert not bad, f"{self.nick}: unexpected {bad[0].to_line()}"

    def sync(self, token: str = "sync") -> None:
        """A round trip through the bus: once it returns, every reply to this
        client's earlier commands has arrived (replies come in command order),
        and so has everything the bus routed to this client before it.

        For "bob did not get X": ``alice.sync()`` (X has been through the bus),
        then ``bob.sync()`` (bob's own probe passed the bus after X, and the
        bus hands a worker its records in order), then ``expect_none``. Before
        registration it is a plain PING (ISON needs a registered client)."""
        probe = "-sync-"  # never a nick: ISON answers 303 with nobody
        if self.nick != "*":
            self.send(f"ISON {probe}")
        self.send(f"PING :{token}")
        self.expect(lambda m: m.verb == "PONG" and m.params[-1] == token)
        if self.nick != "*":
            self.backlog = [m for m in self.backlog if not (m.verb == "303" and m.params[-1] == "")]

    def collect(self, match: Match, timeout: float | None = None) -> list[Message]:
        """Every message up to and including the first that matches, in arrival
        order (all consumed)."""
        pred = _predicate(match)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i, msg in enumerate(self.backlog):
                if pred(msg):
                    out, self.backlog = self.backlog[:i + 1], self.backlog[i + 1:]
                    return out
            if self.closed or not self._fill(deadline):
                got = "\n".join(m.to_line() for m in self.backlog[-30:])
                raise AssertionError(f"{self.nick}: no message matching {match!r}; closed={self.closed}; got:\n{got}")

    def drain(self) -> list[Message]:
        out, self.backlog = self.backlog, []
        return out

    def wait_closed(self, timeout: float | None = None) -> list[Message]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.closed:
            if not self._fill(deadline) and not self.closed and time.monotonic() >= deadline:
                raise AssertionError(f"{self.nick}: connection still open")
        return self.drain()

    # -- registration ------------------------------------------------------------
    def register(self, nick: str, caps: tuple[str, ...] = (), password: str | None = None,
                 user: str | None = None) -> IRCClient:
        self.nick = nick
        if caps:
            self.send("CAP LS 302")
        if password is not None:
            self.send(f"PASS {password}")
        self.send(f"NICK {nick}")
        self.send(f"USER {user or nick} 0 * :Real {nick}")
        if caps:
            self.send(f"CAP REQ :{' '.join(caps)}")
            self.expect(lambda m: m.verb == "CAP" and m.params[1] == "ACK")
            self.send("CAP END")
        self.expect("001")
        self.expect("376|422")
        return self

    def join(self, channel: str) -> list[Message]:
        self.send(f"JOIN {channel}")
        self.expect(lambda m: m.verb == "JOIN" and m.source is not None and m.source.startswith(self.nick + "!"))
        end = self.expect("366")
        # the burst that came with it is consumed too
        burst = [m for m in self.backlog if m.verb in ("332", "333", "353")]
        self.backlog = [m for m in self.backlog if m not in burst]
        return [*burst, end]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> IRCClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _predicate(match: Match) -> Callable[[Message], bool]:
    if callable(match):
        return match
    pattern = re.compile(match)
    return lambda m: pattern.fullmatch(m.verb) is not None


__all__ = ["IRCClient", "RemoteProtocolError"]
