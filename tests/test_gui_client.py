"""The GUI's network client and model against the real server, without a display.

The client's events are drained into a ``ChatModel`` here as the GUI's
controller would; the model's ``Send`` updates go back to the client.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from gui import model as m
from gui.client import CapsChanged, Disconnected, Failed, IRCConnection, Lag, Received
from server.protocol import Message
from tests.conftest import Server


class Driver:
    """An IRCConnection plus a model, pumped from the test thread."""

    def __init__(self, port: int, nick: str, **kw: object) -> None:
        self.model = m.ChatModel(nick)
        self.conn = IRCConnection("127.0.0.1", port, nick, **kw)  # type: ignore[arg-type]
        self.seen: list[object] = []
        self.conn.start()

    def pump_until(self, cond: Callable[[], object], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"condition not met; events: {self.seen[-20:]!r}")
            try:
                ev = self.conn.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            self.seen.append(ev)
            now = datetime.now(UTC)
            if isinstance(ev, Received):
                for u in self.model.handle(ev.message, now):
                    if isinstance(u, m.Send):
                        self.conn.send(u.message)
            elif isinstance(ev, CapsChanged):
                self.model.caps = set(ev.enabled)
            elif isinstance(ev, Disconnected):
                self.model.disconnected(ev.reason, now)

    def got(self, kind: type) -> list[object]:
        return [e for e in self.seen if isinstance(e, kind)]

    def lines(self, channel: str) -> list[str]:
        conv = self.model.conversation(channel)
        return [ln.text for ln in conv.lines if ln.kind == "message"] if conv else []

    def joined(self, channel: str) -> bool:
        conv = self.model.conversation(channel)
        return conv is not None and conv.joined and self.model.fold(channel) not in self.model._names_open \
            and bool(conv.members)


@pytest.fixture
def drivers() -> Iterator[list[Driver]]:
    made: list[Driver] = []
    yield made
    for d in made:
        d.conn.stop()


def test_register_negotiate_caps_chat_both_ways(server: Server, drivers: list[Driver]) -> None:
    alice = Driver(server.port, "alice")
    drivers.append(alice)
    alice.pump_until(lambda: alice.model.registered)
    assert {"echo-message", "server-time", "message-tags", "multi-prefix"} <= alice.conn.caps
    alice.conn.send(Message("JOIN", ("#lobby",)))
    alice.pump_until(lambda: alice.joined("#lobby"))
    bob = server.client("bob")
    bob.join("#lobby")
    alice.pump_until(lambda: "bob" in alice.model.conversations["#lobby"].members)
    assert alice.model.prefix_of(alice.model.conversations["#lobby"].members["alice"]) == "@"

    bob.send("PRIVMSG #lobby :hello alice \U0001F44B")
    alice.pump_until(lambda: "hello alice \U0001F44B" in alice.lines("#lobby"))
    line = alice.model.conversations["#lobby"].lines[-1]
    assert line.mention and line.msgid and line.nick == "bob"
    alice.conn.send(Message("PRIVMSG", ("#lobby", "hi bob \U0001F389")))
    assert bob.expect("PRIVMSG").params == ("#lobby", "hi bob \U0001F389")
    alice.pump_until(lambda: "hi bob \U0001F389" in alice.lines("#lobby"))  # echo-message
    assert alice.model.conversations["#lobby"].lines[-1].own

    alice.pump_until(lambda: alice.got(Lag))
    alice.conn.quit("see you")
    assert bob.expect("QUIT").params == ("Quit: see you",)
    alice.pump_until(lambda: alice.got(Disconnected))
    assert alice.got(Disconnected)[-1].retry_in is None, "a quit is not a lost connection"


def test_typing_notifications_both_ways(server: Server, drivers: list[Driver]) -> None:
    alice = Driver(server.port, "alice")
    drivers.append(alice)
    alice.pump_until(lambda: alice.model.registered)
    alice.conn.send(Message("JOIN", ("#t",)))
    alice.pump_until(lambda: alice.joined("#t"))
    bob = server.client("bob", caps=("message-tags",))
    bob.join("#t")
    bob.send("@+typing=active TAGMSG #t")
    alice.pump_until(lambda: alice.model.typing_names("#t") == ["bob"])
    alice.conn.send(Message("TAGMSG", ("#t",), tags={"+typing": "active"}))
    got = bob.expect("TAGMSG")
    assert got.tags.get("+typing") == "active" and got.source.startswith("alice!")


def test_nick_in_use_is_reported_then_another_accepted(server: Server, drivers: list[Driver]) -> None:
    server.client("alice")
    alice = Driver(server.port, "alice")
    drivers.append(alice)
    alice.pump_until(lambda: any(isinstance(e, Received) and e.message.verb == "433" for e in alice.seen))
    assert not alice.model.registered
    alice.conn.send(Message("NICK", ("alice2",)))
    alice.pump_until(lambda: alice.model.registered)
    assert alice.model.nick == "alice2"


def test_wrong_password_stops_without_retrying(start_server: Callable[..., Server], drivers: list[Driver]) -> None:
    srv = start_server("--password", "letmein")
    bad = Driver(srv.port, "mallory", password="wrong", backoff=(0.05, 0.1))
    drivers.append(bad)
    bad.pump_until(lambda: bad.got(Disconnected))
    assert any(isinstance(e, Received) and e.message.verb == "464" for e in bad.seen)
    assert bad.got(Disconnected)[0].retry_in is None
    good = Driver(srv.port, "alice", password="letmein")
    drivers.append(good)
    good.pump_until(lambda: good.model.registered)


def test_connection_refused_is_explained(drivers: list[Driver]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connecting is refused
        d = Driver(port, "alice")
        drivers.append(d)
        d.pump_until(lambda: d.got(Failed))
    failed = d.got(Failed)[0]
    assert failed.kind == "refused" and "refused" in failed.text and str(port) in failed.text


class Proxy:
    """A TCP forwarder whose connections the test can cut, like a network drop."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.accepted = threading.Semaphore(0)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()
            self.accepted.release()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.socks.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_reconnect_rejoins_and_fills_the_gap_without_duplicates(server: Server, drivers: list[Driver]) -> None:
    proxy = Proxy(server.port)
    try:
        alice = Driver(proxy.port, "alice", backoff=(0.2, 1.0))
        drivers.append(alice)
        alice.pump_until(lambda: alice.model.registered)
        alice.conn.send(Message("JOIN", ("#gap",)))
        alice.pump_until(lambda: alice.joined("#gap"))
        bob = server.client("bob")
        bob.join("#gap")
        bob.send("PRIVMSG #gap :before the cut")
        alice.pump_until(lambda: "before the cut" in alice.lines("#gap"))

        proxy.cut()
        alice.pump_until(lambda: alice.got(Disconnected))
        assert alice.got(Disconnected)[0].retry_in is not None, "a lost connection is retried"
        # Our old self may linger on the server for a moment: wait for its QUIT.
        bob.expect(lambda msg: msg.verb == "QUIT" and msg.source.startswith("alice!"))
        bob.send("PRIVMSG #gap :while you were away")
        bob.sync()

        alice.pump_until(lambda: alice.joined("#gap"), timeout=15)
        bob.send("PRIVMSG #gap :after the return")
        alice.pump_until(lambda: "after the return" in alice.lines("#gap"))
        if alice.model.has_history():
            # CHATHISTORY AFTER <last seen> filled the gap; msgids kept the overlap out.
            alice.pump_until(lambda: "while you were away" in alice.lines("#gap"))
            assert alice.lines("#gap") == ["before the cut", "while you were away", "after the return"]
        else:  # a server without chathistory: rejoined, nothing duplicated, the gap stays a gap
            assert alice.lines("#gap") == ["before the cut", "after the return"]
    finally:
        proxy.close()
