"""Connection limits, host cloaking, persisted server bans and the abuse
limits: each one answers the client with an ERROR, a numeric or FAIL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.ops.passwords import hash_password
from tests.conftest import Server
from tests.ircclient import IRCClient

NO_EXEMPT = ("--set", "per_ip_exempt=")
CLOAK = re.compile(r"[0-9a-f]{8}\.[0-9a-f]{8}\.[0-9a-f]{8}\.ip")


def refused(server: Server, source: str) -> str:
    """Connect from ``source``; return the ERROR text the server closed with."""
    c = IRCClient(server.port, source=source)
    server.clients.append(c)
    err = c.expect("ERROR")
    c.wait_closed()
    return err.params[0]


def test_per_ip_concurrent_limit_with_exemptions(start_server) -> None:
    server = start_server(*NO_EXEMPT, "--set", "per_ip_exempt=127.0.0.3/32", "--set", "max_per_ip=2")
    a = server.client("a1", source="127.0.0.2")
    server.client("a2", source="127.0.0.2")
    assert "Too many connections from your IP address (2)" in refused(server, "127.0.0.2")
    server.client("other", source="127.0.0.4")  # another address is not affected
    for i in range(4):  # the exempt network is not limited
        server.client(f"ex{i}", source="127.0.0.3")
    a.send("QUIT")
    a.wait_closed()
    server.wait_log(r".*\(a1\) left.*")
    # the slot comes back once the worker has told the acceptor (asynchronous: a few tries)
    for _ in range(50):
        c = IRCClient(server.port, source="127.0.0.2")
        server.clients.append(c)
        c.send("NICK a3")
        c.send("USER a 0 * :a")
        got = c.expect(lambda m: m.verb in ("001", "ERROR"))
        if got.verb == "001":
            break
    else:
        raise AssertionError("the per-IP slot never came back")


def test_total_connection_cap(start_server) -> None:
    server = start_server("--set", "max_connections=3")
    for i in range(3):
        server.client(f"u{i}")
    assert "Server is full" in refused(server, "127.0.0.1")


def test_connection_rate_limit_per_ip_with_exemptions(start_server) -> None:
    server = start_server(*NO_EXEMPT, "--set", "per_ip_exempt=127.0.0.9/32",
                          "--set", "conn_burst=3", "--set", "conn_rate=0.01")
    for _ in range(3):  # the burst passes (each connection closed at once)
        c = IRCClient(server.port, source="127.0.0.8")
        c.sync()
        c.close()
    assert "Connecting too fast" in refused(server, "127.0.0.8")
    server.client("elsewhere", source="127.0.0.10")  # other addresses have their own bucket
    for _ in range(6):  # exempt
        c = IRCClient(server.port, source="127.0.0.9")
        c.sync()
        c.close()
    server.wait_log(r".*refused 127\.0\.0\.8:\d+: connecting too fast.*")


def test_nick_change_rate_limit(start_server) -> None:
    server = start_server("--set", "nick_change_burst=2", "--set", "nick_change_interval=600")
    alice = server.client("alice")
    bob = server.client("bob")
    alice.join("#n")
    bob.join("#n")
    for new in ("alice2", "alice3"):
        alice.send(f"NICK {new}")
        assert alice.expect("NICK").params[0] == new
    alice.send("NICK alice4")
    err = alice.expect("438")
    assert err.params[1] == "alice4" and "too fast" in err.params[-1]
    # A line through the bus after the refused change: bob has every NICK before it
    # (a PING to bob's own worker would not wait for the bus).
    alice.send("PRIVMSG #n :after")
    bob.expect(lambda m: m.verb == "PRIVMSG" and m.params[1] == "after")
    assert [m.params[0] for m in bob.seen if m.verb == "NICK"] == ["alice2", "alice3"]


def test_channel_target_and_list_limits_answer(start_server) -> None:
    server = start_server("--set", "max_channels=2", "--set", "max_targets=2", "--set", "max_list=2")
    alice = server.client("alice")
    alice.join("#a")
    alice.join("#b")
    alice.send("JOIN #c")
    assert alice.expect("405").params[1] == "#c"
    alice.send("PRIVMSG #a,#b,bob :hi")
    assert alice.expect("407")
    alice.send("MODE #a +b one!*@*")
    alice.send("MODE #a +b two!*@*")
    alice.send("MODE #a +b three!*@*")
    full = alice.expect("478")
    assert full.params[1:3] == ("#a", "three!*@*")
    alice.send("MODE #a +b")
    bans = []
    while (m := alice.expect(lambda m: m.verb in ("367", "368"))).verb == "367":
        bans.append(m.params[2])
    assert bans and "three!*@*" not in bans and len(bans) == 2


def _strings(msgs: list) -> str:
    return "\n".join(m.to_line() for m in msgs)


@pytest.fixture
def opconf(tmp_path: Path) -> Path:
    conf = tmp_path / "ops.toml"
    conf.write_text(f'[[oper]]\nname = "root"\npassword = "{hash_password("hunter2")}"\n')
    return conf


def test_hosts_are_cloaked_and_operators_see_the_address(start_server, opconf: Path) -> None:
    server = start_server("--config", str(opconf), "--set", "cloak_exempt=")
    alice = server.client("alice", source="127.0.0.21")
    bob = server.client("bob", source="127.0.0.22")
    alice.join("#c")
    bob.join("#c")
    alice.send("PRIVMSG #c :hello")
    src = bob.expect("PRIVMSG").source
    host = src.split("@", 1)[1]
    assert CLOAK.fullmatch(host), src
    assert [m.params[1] for m in alice.seen if m.verb == "396"] == [host], "alice is told her displayed host"
    for line in ("WHOIS alice", "WHO #c", "WHO alice %tnuhi,42", "USERHOST alice", "NAMES #c", "WHOWAS alice"):
        bob.send(line)
    bob.sync()
    seen = _strings(bob.seen)
    assert "127.0.0.21" not in seen and host in seen
    # a reconnect from the same address gets the same cloak; another address another one
    alice.send("QUIT")
    alice.wait_closed()
    again = server.client("alice2", source="127.0.0.21")
    again.join("#c")
    assert bob.expect("JOIN").source.split("@", 1)[1] == host
    carol = server.client("carol", source="127.0.0.23")
    carol.join("#c")
    other = bob.expect("JOIN").source.split("@", 1)[1]
    assert CLOAK.fullmatch(other) and other != host
    # same /24: the last two parts are shared (range bans stay possible)
    assert other.split(".")[1:] == host.split(".")[1:]
    # a channel ban on the cloak works
    bob.join("#ban")
    bob.send(f"MODE #ban +b *!*@{host}")
    bob.expect("MODE")
    again.send("JOIN #ban")
    assert again.expect("474").params[1] == "#ban"
    # operators see the real address
    bob.send("OPER root hunter2")
    bob.expect("381")
    bob.send("WHOIS alice2")
    assert bob.expect("338").params[3] == "127.0.0.21"


def test_loopback_is_shown_as_is_by_default_and_cloak_can_be_switched_off(start_server) -> None:
    server = start_server("--set", "cloak=false", "--set", "cloak_exempt=")
    server.client("alice", source="127.0.0.31")
    bob = server.client("bob")
    bob.send("WHOIS alice")
    assert bob.expect("311").params[3] == "127.0.0.31"


def test_cloaks_survive_a_restart(start_server, tmp_path: Path) -> None:
    first = start_server("--set", "cloak_exempt=")
    a = first.client("a", source="127.0.0.41")
    first.client("b").send("WHOIS a")
    host = first.clients[-1].expect("311").params[3]
    assert CLOAK.fullmatch(host)
    a.close()
    first.stop()
    assert (tmp_path / "data" / "cloak.key").exists()
    second = start_server("--set", "cloak_exempt=")
    second.client("a", source="127.0.0.41")
    b = second.client("b")
    b.send("WHOIS a")
    assert b.expect("311").params[3] == host


def test_server_bans_persist_across_restarts(start_server, opconf: Path, tmp_path: Path) -> None:
    first = start_server("--config", str(opconf))
    boss = first.client("boss")
    boss.send("OPER root hunter2")
    boss.expect("381")
    boss.send("KLINE *@127.0.0.51 :spam")
    boss.expect("NOTICE")
    boss.send("KLINE 60 *@127.0.0.52 :timed")
    boss.expect("NOTICE")
    boss.send("KLINE *@127.0.0.53 :lifted later")
    boss.expect("NOTICE")
    boss.send("UNKLINE *@127.0.0.53")
    boss.expect("NOTICE")
    first.stop()
    assert (tmp_path / "data" / "klines.json").exists()
    second = start_server("--config", str(opconf))
    for source in ("127.0.0.51", "127.0.0.52"):
        c = IRCClient(second.port, source=source)
        second.clients.append(c)
        c.send("NICK x")
        c.send("USER x 0 * :x")
        assert "banned" in c.expect("465").params[-1]
        c.wait_closed()
    second.client("fine", source="127.0.0.53")  # the lifted ban stayed lifted
