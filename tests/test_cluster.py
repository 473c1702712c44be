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
from tests.conftest import ROOT, Server, stop_servers
from tests.ircclient import IRCClient
from tests.test_accounts import found_home
from tests.test_history import fetch

REDIS = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (Debian package redis-server)")
NODE_TIMEOUT = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A throw-away redis-server without persistence."""

    def __init__(self, tmp: Path, persistent: bool = False, password: str = "") -> None:
        self.tmp = tmp
        self.persistent = persistent
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
             "--dir", str(self.tmp), *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        """SIGKILL (the data is gone) or, persistent, SIGTERM (Redis saves)."""
        if self.proc is not None and self.proc.poll() is None:
            if self.persistent:
                self.proc.terminate()
            else:
                self.proc.kill()
            self.proc.wait(10)
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
                           "--set", f"node_timeout={NODE_TIMEOUT}", "--set", "heartbeat_interval=0.3",
                           "--set", "flood_exempt=127.0.0.0/8", "--set", "snapshot_every=50", *extra)


@pytest.fixture
def redis_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Redis]:
    r = Redis(tmp_path, persistent=request.node.get_closest_marker("persistent_redis") is not None)
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
    # one after the other (a server started from a thread that ends would get
    # its parent-death signal): a is node 1, b node 2
    c.a = c.node("a")  # type: ignore[attr-defined]
    c.b = c.node("b")  # type: ignore[attr-defined]
    yield c
    stop_servers(request, started, "node")


def nodes(c: Cluster) -> tuple[Server, Server]:
    return c.a, c.b  # type: ignore[attr-defined]


def alice_and_bob(c: Cluster, channel: str, alice_caps: tuple[str, ...] = ()
                  ) -> tuple[Server, Server, IRCClient, IRCClient]:
    """alice on node a and bob on node b, both in ``channel`` (alice saw bob join)."""
    a, b = nodes(c)
    alice = a.client("alice", caps=alice_caps)
    bob = b.client("bob")
    alice.join(channel)
    bob.join(channel)
    alice.expect(lambda m: m.verb == "JOIN" and m.source.startswith("bob!"))
    return a, b, alice, bob


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


CAPS = ("draft/chathistory", "batch", "server-time", "message-tags")


def test_one_order_per_channel_across_nodes_and_workers(cluster: Cluster) -> None:
    a, b = nodes(cluster)
    clients = [a.client("a1"), a.client("a2"), b.client("b1"), b.client("b2")]
    assert a.worker_of("a1") != a.worker_of("a2") and b.worker_of("b1") != b.worker_of("b2")
    for c in clients:
        c.join("#order")
    for c in clients:
        c.sync()
    per = 60
    for i in range(per):  # every sender's lines interleave with the others' in the log
        for c in clients:
            c.send(f"PRIVMSG #order :{c.nick} {i}")
    seen = {}
    for c in clients:
        # each sees the other three's lines (no echo-message): 3 * per
        got = [c.expect("PRIVMSG", timeout=20) for _ in range(3 * per)]
        seen[c.nick] = [m.params[1] for m in got]
    for nick, lines in seen.items():
        assert all(not t.startswith(nick + " ") for t in lines)
        for other in clients:  # each sender's own order is kept
            mine = [t for t in lines if t.startswith(other.nick + " ")]
            assert mine == ([] if other.nick == nick else [f"{other.nick} {i}" for i in range(per)])
    # one sequence: the order of any two senders' lines is the same for every
    # member that sees both
    for x in seen:
        for y in seen:
            common = set(seen[x]) & set(seen[y])
            assert [t for t in seen[x] if t in common] == [t for t in seen[y] if t in common], (x, y)


def test_modes_bans_and_kick_across_nodes(cluster: Cluster) -> None:
    _a, _b, alice, bob = alice_and_bob(cluster, "#m")
    alice.send("MODE #m +m")
    assert bob.expect("MODE").params[:2] == ("#m", "+m")
    bob.send("PRIVMSG #m :can I speak?")
    assert bob.expect("404").params[1] == "#m"
    alice.send("MODE #m +v bob")
    assert bob.expect("MODE").params == ("#m", "+v", "bob")
    bob.send("PRIVMSG #m :now I can")
    assert alice.expect("PRIVMSG").params == ("#m", "now I can")
    alice.send("MODE #m +b bob!*@*")
    bob.expect(lambda m: m.verb == "MODE" and m.params[1] == "+b")
    alice.send("KICK #m bob :out")
    kick = bob.expect("KICK")
    assert kick.params == ("#m", "bob", "out") and kick.source.startswith("alice!")
    bob.send("JOIN #m")
    assert bob.expect("474").params[1] == "#m"
    bob.send("TOPIC #m :mine")
    assert bob.expect("442").params[1] == "#m"
    alice.send("TOPIC #m :set on node a")
    alice.expect("TOPIC")
    bob.send("TOPIC #m")
    assert bob.expect("332").params[-1] == "set on node a"


def test_chathistory_on_node_b_returns_what_was_said_on_node_a(cluster: Cluster) -> None:
    a, b = nodes(cluster)
    alice = a.client("alice", caps=("echo-message", *CAPS))
    reader = b.client("reader", caps=CAPS)
    alice.join("#h")
    reader.join("#h")
    texts = [f"line {i}" for i in range(12)]
    alice.send("".join(f"PRIVMSG #h :{t}\r\n" for t in texts).encode())
    sent = [alice.expect("PRIVMSG") for _ in texts]
    ids = [m.tags["msgid"] for m in sent]
    got = [reader.expect("PRIVMSG") for _ in texts]
    assert [m.params[1] for m in got] == texts
    on_b = fetch(reader, "CHATHISTORY LATEST #h * 20")
    on_a = fetch(alice, "CHATHISTORY LATEST #h * 20")
    assert on_b == list(zip(ids, texts, strict=True))
    assert on_a == on_b
    alice.send("PRIVMSG reader :private from a")
    reader.expect("PRIVMSG")
    assert [t for _, t in fetch(reader, "CHATHISTORY LATEST alice * 5")] == ["private from a"]


def test_accounts_registered_on_one_node_work_on_the_other(cluster: Cluster) -> None:
    a, b = nodes(cluster)
    alice = a.client("alice")
    alice.send("REGISTER alice * :hunter22")
    assert alice.expect("REGISTER").params[:2] == ("SUCCESS", "alice")
    other = b.client("other")
    other.send("PRIVMSG NickServ :IDENTIFY alice hunter22")
    assert other.expect("900").params[2] == "alice"
    alice.send("PRIVMSG NickServ :SET PASSWORD newpass1")
    assert "Password changed" in alice.expect("NOTICE").params[1]
    third = b.client("third")
    third.send("PRIVMSG NickServ :IDENTIFY alice hunter22")
    assert "Invalid" in third.expect("NOTICE").params[1]
    third.send("PRIVMSG NickServ :IDENTIFY alice newpass1")
    assert third.expect("900").params[2] == "alice"
    alice.send("PRIVMSG NickServ :DROP newpass1")
    assert "dropped" in alice.expect("NOTICE").params[1]
    third.expect(lambda m: m.verb == "NOTICE" and "identified" in m.params[1])
    third.send("PRIVMSG NickServ :INFO alice")
    assert "not registered" in third.expect("NOTICE").params[1]


def test_snapshot_trims_the_log_and_a_new_node_starts_from_it(cluster: Cluster) -> None:
    import redis

    a, b = nodes(cluster)
    alice = a.client("alice")
    alice.send("REGISTER alice * :hunter22")
    assert alice.expect("REGISTER").params[:2] == ("SUCCESS", "alice")
    bob = b.client("bob")
    alice.join("#s")
    bob.join("#s")
    alice.send("MODE #s +t")
    alice.send("TOPIC #s :from before the snapshot")
    bob.expect("TOPIC")
    # node a (the lowest index) writes a snapshot every 50 entries (the fixture's snapshot_every)
    for i in range(120):  # one at a time: an entry each
        bob.send(f"PRIVMSG #s :{i}")
        alice.expect("PRIVMSG")
    a.wait_log(r".*cluster: snapshot after entry .* entries trimmed.*", timeout=20)
    r = redis.Redis.from_url(cluster.redis.url)
    assert r.xlen("chatroom:log") < 100, "trimmed: some 130 entries were appended"
    c = cluster.node("c", 1)
    c.wait_log(r".*cluster: started from the snapshot after entry .*")
    carol = c.client("carol")
    carol.send("NICK bob")
    assert carol.expect("433").params[1] == "bob"
    carol.send("TOPIC #s")
    assert carol.expect("332").params[-1] == "from before the snapshot"
    carol.send("PRIVMSG NickServ :IDENTIFY alice hunter22")
    assert carol.expect("900").params[2] == "alice"
    carol.join("#s")
    assert bob.expect("JOIN").source.startswith("carol!")
    bob.send("PRIVMSG #s :hello carol")
    assert carol.expect("PRIVMSG").params[1] == "hello carol"


def test_a_new_log_starts_from_the_nodes_registered_channels(cluster: Cluster) -> None:
    a, b = nodes(cluster)
    founder = a.client("founder")
    founder.send("REGISTER founder * :founderpw")
    founder.expect("REGISTER")
    found_home(founder)
    founder.sync()
    b.stop()
    a.stop()
    cluster.redis.stop()  # the whole network restarts on an empty Redis
    cluster.redis.start()
    a2 = cluster.node("a")
    b2 = cluster.node("b")
    guest = b2.client("guest")
    burst = guest.join("#home")
    assert [m.params[2] for m in burst if m.verb == "332"] == ["Home sweet home"]
    guest.send("MODE #home")
    assert "m" in guest.expect("324").params[2]
    again = a2.client("again")
    again.send("PRIVMSG NickServ :IDENTIFY founder founderpw")
    assert again.expect("900").params[2] == "founder"


def test_kill_9_of_a_node_frees_its_nicks_within_node_timeout(cluster: Cluster) -> None:
    a, b = nodes(cluster)
    alice = a.client("alice", caps=("batch",))
    dave = a.client("dave")  # without batch: plain QUITs
    bob = b.client("bob")
    carol = b.client("carol")
    for c in (alice, dave, bob, carol):
        c.join("#k")
    alice.expect(lambda m: m.verb == "JOIN" and m.source.startswith("carol!"))
    dave.expect(lambda m: m.verb == "JOIN" and m.source.startswith("carol!"))
    killed = time.monotonic()
    os.killpg(b.proc.pid, signal.SIGKILL)  # the whole node: supervisor, manager, workers, acceptor
    margin = 4.0
    start = alice.expect("BATCH", timeout=NODE_TIMEOUT + margin)
    took = time.monotonic() - killed
    assert start.params[0].startswith("+") and start.params[1:] == ("netsplit", "a", "b")
    ref = start.params[0][1:]
    quits = [alice.expect("QUIT") for _ in range(2)]
    assert all(q.tags.get("batch") == ref and q.params[0] == "a b" for q in quits)
    assert alice.expect("BATCH").params == ("-" + ref,)
    assert sorted(q.source.split("!")[0] for q in quits) == ["bob", "carol"]
    assert took < NODE_TIMEOUT + margin
    plain = [dave.expect("QUIT") for _ in range(2)]
    assert sorted(q.source.split("!")[0] for q in plain) == ["bob", "carol"] and not plain[0].tags
    a.wait_log(r".*cluster: node b \(2\) down: 2 clients dropped.*")
    again = a.client("bob")  # the nick is free again
    again.join("#k")
    alice.send("NAMES #k")
    assert sorted(n.lstrip("@") for n in alice.expect("353").params[-1].split()) == ["alice", "bob", "dave"]


def test_redis_stopped_and_started_again_during_traffic(cluster: Cluster) -> None:
    a, b, alice, bob = alice_and_bob(cluster, "#r", ("echo-message",))
    leaver = b.client("leaver")
    leaver.join("#r")
    alice.expect(lambda m: m.verb == "JOIN" and m.source.startswith("leaver!"))
    alice.send("PRIVMSG #r :before")
    assert bob.expect("PRIVMSG").params[1] == "before"
    cluster.redis.stop()  # without persistence: the log is gone for good
    leaver.send("QUIT :bye")  # leaves while Redis is away: not re-announced
    leaver.wait_closed()
    # commands that need the log fail with a clear error; connections stay up
    deadline = time.monotonic() + 10
    while True:
        alice.send("PRIVMSG #r :during")
        m = alice.expect(lambda m: m.verb in ("PRIVMSG", "400"))
        if m.verb == "400":
            assert "Cluster unavailable" in m.params[-1]
            break
        assert time.monotonic() < deadline, "no 400 while Redis is down"
    alice.send("PING :still-here")
    alice.expect("PONG")
    bob.send("PING :still-here")
    bob.expect("PONG")
    cluster.redis.start()
    a.wait_log(r".*cluster: the log was lost.*re-announcing 1 clients.*", timeout=20)
    b.wait_log(r".*cluster: the log was lost.*re-announcing 1 clients.*", timeout=20)
    # back: same nicks, same channel, no reconnect
    deadline = time.monotonic() + 15
    while True:
        alice.send("PRIVMSG #r :after")
        m = alice.expect(lambda m: m.verb in ("PRIVMSG", "400", "404", "401", "403"))
        if m.verb == "PRIVMSG" and m.params[1] == "after":
            break
        assert time.monotonic() < deadline, f"chat did not resume: {m.to_line()}"
        time.sleep(0.2)
    assert bob.expect(lambda m: m.verb == "PRIVMSG" and m.params[1] == "after").source.startswith("alice!")
    bob.send("NAMES #r")
    assert sorted(n.lstrip("@") for n in bob.expect("353").params[-1].split()) == ["alice", "bob"]
    newcomer = b.client()
    newcomer.send("NICK alice")  # still taken, cluster-wide
    newcomer.expect("433")
    newcomer.send("NICK leaver")  # free
    newcomer.send("USER l 0 * :l")
    newcomer.expect("001")
    assert not alice.closed and not bob.closed


@pytest.mark.persistent_redis
def test_redis_restarted_with_its_data_carries_on_with_the_same_log(cluster: Cluster) -> None:
    a, b, alice, bob = alice_and_bob(cluster, "#p")
    cluster.redis.stop()
    bob.send("PRIVMSG #p :during")
    assert "Cluster unavailable" in bob.expect("400").params[-1]
    cluster.redis.start()
    a.wait_log(r".*cluster: Redis at .* reachable again.*", timeout=20)
    b.wait_log(r".*cluster: Redis at .* reachable again.*", timeout=20)
    deadline = time.monotonic() + 15
    while True:
        bob.send("PRIVMSG #p :after")
        bob.sync()
        if not [m for m in bob.drain() if m.verb == "400"]:
            break
        assert time.monotonic() < deadline
    assert alice.expect("PRIVMSG").params[1] == "after"
    assert not [line for line in a.lines + b.lines if "log was lost" in line]
    # nobody was declared down for the beats missed during the outage
    alice.expect_none("QUIT", timeout=NODE_TIMEOUT + 1)


@pytest.mark.server_errors  # the supervisor logs the worker's death as an error
def test_a_dead_worker_s_users_quit_on_every_node(cluster: Cluster) -> None:
    a, b, alice, _bob = alice_and_bob(cluster, "#w")
    os.kill(b.worker_pids()[b.worker_of("bob")], signal.SIGKILL)
    quit_ = alice.expect("QUIT")
    assert quit_.source.startswith("bob!")
    again = a.client("bob")  # free on every node
    again.join("#w")


@pytest.mark.server_errors  # the supervisor logs the manager's death as an error
def test_a_nodes_manager_killed_is_replaced_and_its_clients_stay(cluster: Cluster) -> None:
    a, _b, alice, bob = alice_and_bob(cluster, "#c")
    pid = int(a.wait_log(r".*manager ready \(pid (\d+)\).*").group(1))
    os.kill(pid, signal.SIGKILL)
    a.wait_log(r".*manager replaced in .*", timeout=20)
    deadline = time.monotonic() + 15
    while True:  # the first lines may get "try again" while the workers restore
        alice.send("PRIVMSG #c :after the new manager")
        alice.sync()
        if not [m for m in alice.drain() if m.verb == "400"]:
            break
        assert time.monotonic() < deadline
    assert bob.expect("PRIVMSG").params[1] == "after the new manager"
    bob.send("PRIVMSG alice :and back")
    assert alice.expect("PRIVMSG").params[1] == "and back"
    bob.sync()
    assert not [m for m in bob.drain() if m.verb == "QUIT"], "alice never left"


@pytest.mark.server_errors  # the supervisor logs the manager's death as an error
def test_a_node_declared_down_while_its_manager_was_gone_closes_its_clients(cluster: Cluster) -> None:
    _a, b, alice, bob = alice_and_bob(cluster, "#d")
    pid = int(b.wait_log(r".*manager ready \(pid (\d+)\).*").group(1))
    os.kill(pid, signal.SIGSTOP)  # no heartbeat: node a declares node b down
    assert alice.expect("QUIT", timeout=NODE_TIMEOUT + 4).source.startswith("bob!")
    os.kill(pid, signal.SIGKILL)
    b.wait_log(r".*manager replaced in .*", timeout=20)
    bob.wait_closed()  # the log no longer has bob: closed, so that he reconnects
    for w in range(2):  # (one who registers while the workers re-register is told to reconnect)
        b.wait_log(rf".*worker {w}: re-registered .* with the new manager.*", timeout=20)
    again = b.client("bob")
    again.join("#d")
    assert alice.expect("JOIN").source.startswith("bob!")
    again.send("PRIVMSG #d :back")
    assert alice.expect("PRIVMSG").params[1] == "back"


def test_metrics_of_a_node(cluster: Cluster) -> None:
    from tests.test_observability import scrape, value, wait_until

    a, _ = nodes(cluster)
    port = free_port()
    c = cluster.node("c", 1, "--metrics-port", str(port))
    alice = a.client("alice")
    carol = c.client("carol")
    alice.join("#x")
    carol.join("#x")
    for i in range(3):
        alice.send(f"PRIVMSG #x :{i}")
        carol.expect("PRIVMSG")
    samples = wait_until("cross-node deliveries", lambda: scrape(port),
                         lambda s: value(s, "chatroom_cluster_cross_node_deliveries_total") >= 3)
    assert value(samples, "chatroom_cluster_up") == 1
    assert value(samples, "chatroom_cluster_nodes") == 3
    assert 0 < value(samples, "chatroom_cluster_redis_rtt_seconds") < 1
    assert value(samples, "chatroom_cluster_pending_publishes") >= 0


def test_redis_password_from_the_settings_and_a_wrong_one(tmp_path: Path,
                                                          start_server: Callable[..., Server]) -> None:
    r = Redis(tmp_path, password="s3cret-pw")
    try:
        common = ("--cluster-url", r.url, "--set", "heartbeat_interval=0.3")
        a = start_server(*common, "--node-name", "a", env={"CHATROOM_CLUSTER_PASSWORD": "s3cret-pw"})
        b = Server(["--workers", "1", "--data-dir", str(tmp_path / "b"), *common, "--node-name", "b",
                    "--set", "cluster_password=s3cret-pw"], None, tmp_path)
        try:
            alice = a.client("alice")
            bob = b.client("bob")
            bob.send("PRIVMSG alice :through a password")
            assert alice.expect("PRIVMSG").params[1] == "through a password"
        finally:
            b.stop()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATROOM_")}
        env["PYTHONPATH"] = str(ROOT)
        wrong = subprocess.run([sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "0", "--workers", "1",
                                "--data-dir", str(tmp_path / "c"), *common, "--node-name", "c",
                                "--set", "cluster_password=wrong"], env=env, cwd=tmp_path, capture_output=True,
                               text=True, timeout=60)
        assert wrong.returncode != 0
        assert "refused this node" in wrong.stdout + wrong.stderr
    finally:
        r.stop()


def test_without_cluster_url_redis_is_never_imported(start_server: Callable[..., Server], tmp_path: Path) -> None:
    poison = tmp_path / "poison"
    (poison / "redis").mkdir(parents=True)
    marker = tmp_path / "redis-imported"
    (poison / "redis" / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('imported\\n')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(poison), str(ROOT)])}
    subprocess.run([sys.executable, "-c", "import redis"], env={**os.environ, **env}, check=True)
    assert marker.exists(), "the poison works"
    marker.unlink()
    srv = start_server(env=env)
    alice = srv.client("alice")
    bob = srv.client("bob")
    alice.join("#x")
    bob.join("#x")
    alice.send("PRIVMSG #x :hi")
    assert bob.expect("PRIVMSG").params[1] == "hi"
    srv.stop()
    assert not marker.exists(), "a single server imported redis"


class Spread:
    """Looks like one server to a core test; its clients alternate between the
    two nodes (so every 'across workers' test is across nodes too)."""

    def __init__(self, c: Cluster) -> None:
        self.nodes = nodes(c)
        self.n = 0
        self.placed: dict[str, Server] = {}

    def client(self, nick: str | None = None, caps: tuple[str, ...] = (), **kw: object) -> IRCClient:
        node = self.nodes[self.n % 2]
        self.n += 1
        if nick is not None:
            self.placed.setdefault(nick, node)
        return node.client(nick, caps, **kw)

    def worker_of(self, nick: str, timeout: float = 10.0) -> tuple[int, int]:
        node = self.placed[nick]
        return node.port, node.worker_of(nick, timeout)


CORE = [test_core_chat.test_channel_and_private_chat_across_workers, test_core_chat.test_errors_for_bad_targets,
        test_core_chat.test_nick_change_seen_once_by_each_peer, test_core_chat.test_quit_reason_shown_and_nick_freed,
        test_core_chat.test_nick_and_user_in_one_write_register_in_one_step_or_get_433,
        test_core_chat.test_names_topic_and_whois]


@pytest.mark.parametrize("core", CORE, ids=[t.__name__.removeprefix("test_") for t in CORE])
def test_core_chat_in_cluster_mode(cluster: Cluster, core: Callable[[Server], None]) -> None:
    core(Spread(cluster))  # type: ignore[arg-type]


def test_redis_out_of_memory_refuses_commands_then_carries_on(cluster: Cluster) -> None:
    import redis as redis_client  # the cluster extra

    _, _, alice, bob = alice_and_bob(cluster, "#m", ("echo-message",))
    admin = redis_client.Redis(port=cluster.redis.port)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", str(used + 50_000))
    try:
        for i in range(400):  # the log grows until Redis refuses to append
            alice.send(f"PRIVMSG #m :{'x' * 400} {i}")
            m = alice.expect(lambda m: m.verb in ("PRIVMSG", "400"))
            if m.verb == "400":
                assert "Cluster unavailable" in m.params[-1]
                break
        else:
            raise AssertionError("Redis never refused an append")
        alice.send("PING :alive")
        alice.expect("PONG")
    finally:
        admin.config_set("maxmemory", "0")
    deadline = time.monotonic() + 15
    while True:  # room again: the same log goes on, on both nodes
        alice.send("PRIVMSG #m :after")
        m = alice.expect(lambda m: m.verb in ("PRIVMSG", "400"))
        if m.verb == "PRIVMSG" and m.params[1] == "after":
            break
        assert time.monotonic() < deadline, f"chat did not resume: {m.to_line()}"
        time.sleep(0.2)
    assert bob.expect(lambda m: m.verb == "PRIVMSG" and m.params[1] == "after").source.startswith("alice!")
    bob.send("PRIVMSG #m :from b")
    assert alice.expect(lambda m: m.verb == "PRIVMSG" and m.params[1] == "from b").source.startswith("bob!")


def test_modern_features_across_nodes(cluster: Cluster) -> None:
    """MONITOR, draft/multiline, REDACT and MARKREAD ride the log like the rest."""
    from tests.test_multiline import batch_of, send_batch

    a, b = nodes(cluster)
    caps = ("batch", "draft/multiline", "draft/message-redaction", "draft/read-marker", "echo-message",
            "message-tags", "server-time", "draft/chathistory", "sasl")
    watcher = a.client("watcher", caps)
    watcher.send("MONITOR + Writer")
    assert watcher.expect("731").params[-1] == "Writer"
    writer = b.client("writer", caps)
    assert watcher.expect("730").params[-1].startswith("writer!")
    for c in (watcher, writer):
        c.join("#modern")
    watcher.expect(lambda m: m.verb == "JOIN" and m.source.startswith("writer!"))
    for c in (watcher, writer):
        c.sync()
        c.backlog.clear()
    send_batch(writer, "#modern", ["first line", "second line"])
    got = batch_of(watcher)
    assert [m.params[1] for m in got[1:-1]] == ["first line", "second line"]
    echo = batch_of(writer)
    msgid = echo[0].tags["msgid"]
    assert got[0].tags["msgid"] == msgid
    writer.send(f"REDACT #modern {msgid} :oops")
    assert watcher.expect("REDACT").params[:2] == ("#modern", msgid)
    watcher.sync()
    assert not [t for _, t in fetch(watcher, "CHATHISTORY LATEST #modern * 10") if "line" in t]
    writer.send("QUIT :bye")
    assert watcher.expect("731").params[-1] == "writer"
