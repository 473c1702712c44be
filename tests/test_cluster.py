"""Cluster mode (docs/cluster.md): two nodes (``--workers 2`` each) on a real
``redis-server`` started on a free loopback port, no mocks of it.

``cluster`` yields a :class:`Cluster`: its ``a`` and ``b`` nodes are ordinary
test servers (tests/conftest.py) sharing one Redis. Some core tests run a
second time here with their clients spread over both nodes
(:class:`Spread`), so single-node and cluster never drift apart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import test_core_chat
from tests.conftest import ROOT, SERVER_ERROR, Server
from tests.ircclient import IRCClient

REDIS = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (Debian package redis-server)")
NODE_TIMEOUT = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A throw-away redis-server without persistence."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Cluster:
    def __init__(self, redis: Redis, start: Callable[..., Server], tmp: Path) -> None:
        self.redis = redis
        self._start = start
        self.tmp = tmp

    def node(self, name: str, workers: int = 2, *extra: str) -> Server:
        return self._start("--workers", str(workers), "--data-dir", str(self.tmp / f"data-{name}"),
                           "--cluster-url", self.redis.url, "--node-name", name,
                           "--set", f"node_timeout={NODE_TIMEOUT}", "--set", "heartbeat_interval=0.3", *extra)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    r = Redis(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def cluster(redis_server: Redis, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    started: list[Server] = []

    def start(*args: str) -> Server:
        srv = Server(list(args), None, tmp_path)
        started.append(srv)
        return srv

    c = Cluster(redis_server, start, tmp_path)
    c.a = c.node("a")  # type: ignore[attr-defined]
    c.b = c.node("b")  # type: ignore[attr-defined]
    yield c
    for srv in started:
        srv.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for srv in started:
            print("---- node log ----\n" + "\n".join(srv.lines[-150:]))
    elif request.node.get_closest_marker("server_errors") is None:
        for srv in started:
            bad = [line for line in srv.lines if SERVER_ERROR.search(line)]
            if bad:
                pytest.fail("a node logged errors:\n" + "\n".join(bad[:20]), pytrace=False)


def nodes(c: Cluster) -> tuple[Server, Server]:
    return c.a, c.b  # type: ignore[attr-defined]


def test_chat_across_nodes_in_a_channel_and_privately(cluster: Cluster) -> None:
    a, b = nodes(cluster)
    alice = a.client("alice", caps=("echo-message", "server-time", "message-tags"))
    bob = b.client("bob")
    alice.join("#Lobby")
    bob.join("#lobby")
    join = alice.expect(lambda m: m.verb == "JOIN" and m.source.startswith("bob!"))
    assert join.params[0] == "#Lobby"
    alice.send("PRIVMSG #lobby :hello from node a")
    echo = alice.expect("PRIVMSG")
    assert echo.params == ("#Lobby", "hello from node a") and "msgid" in echo.tags
    got = bob.expect("PRIVMSG")
    assert got.source == "alice!~alice@127.0.0.1" and got.params == ("#Lobby", "hello from node a")
    bob.send("PRIVMSG alice :psst from b")
    pm = alice.expect("PRIVMSG")
    assert pm.source.startswith("bob!") and pm.params == ("alice", "psst from b")
    bob.send("WHOIS alice")
    assert bob.expect("311").params[1] == "alice"
    alice.send("NAMES #lobby")
    names = alice.expect("353").params[-1].split()
    assert sorted(n.lstrip("@") for n in names) == ["alice", "bob"]


def test_nick_collision_across_nodes_is_case_folded(cluster: Cluster) -> None:
    a, b = nodes(cluster)
    a.client("Alice")
    other = b.client()
    other.send("NICK aLiCe")
    assert other.expect("433").params[1] == "aLiCe"
    other.send("NICK al[ice")
    other.send("USER x 0 * :x")
    other.expect("001")
    third = a.client()
    third.send("NICK AL{ICE")  # rfc1459: [ and { are one letter
    assert third.expect("433").params[1] == "AL{ICE"
