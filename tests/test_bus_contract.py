"""The bus contract (server/bus/records.py, server/process/session.py), on the
real server with four workers and clients spread over them:

* replies come in the order of the client's commands (a PONG never overtakes
  the answer to the command before it);
* IRCv3 labeled-response: the label sticks to the echo, the error, or the one
  batch that holds everything a command caused, nested batches included;
* acknowledged means stored: what any client received survives SIGKILL of the
  manager (a new manager takes over, then a fresh server reads the same data directory).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from server.protocol import Message
from tests.conftest import Server
from tests.ircclient import IRCClient
from tests.test_supervision import history

EXEMPT = ("--set", "flood_exempt=127.0.0.0/8")
CAPS_ALL = ("echo-message", "labeled-response", "batch", "message-tags", "server-time", "draft/chathistory")


def spread(server: Server, nicks: list[str], caps: tuple[str, ...] = ()) -> list[IRCClient]:
    """Clients registered on (as far as the acceptor allows) different workers."""
    clients = [server.client(n, caps) for n in nicks]
    workers = {server.worker_of(n) for n in nicks}
    assert len(workers) == min(len(nicks), 4), f"clients all on workers {workers}"
    return clients


def until_pong(c: IRCClient, token: str) -> list[Message]:
    """Everything before the PONG for ``token``, in arrival order (all consumed)."""
    return c.collect(lambda m: m.verb == "PONG" and m.params[-1] == token)[:-1]


def mark(c: IRCClient) -> None:
    """Start from a clean backlog: nothing of the set-up is left to match."""
    c.sync()
    c.backlog.clear()


@pytest.fixture
def net(start_server: Callable[..., Server]) -> tuple[Server, IRCClient, IRCClient, IRCClient]:
    server = start_server(*EXEMPT, workers=4)
    alice, bob, carol = spread(server, ["alice", "bob", "carol"], ("echo-message", "message-tags"))
    for c in (alice, bob, carol):
        c.join("#room")
    alice.send("MODE #room +o bob")
    for c in (alice, bob, carol):
        c.expect(lambda m: m.verb == "MODE")
    for c in (alice, bob, carol):
        mark(c)
    return server, alice, bob, carol


# command sent by alice (an op on worker A; bob and carol on others) -> reply verbs that must precede the PONG
ORDERED: list[tuple[str, set[str]]] = [
    ("PRIVMSG nobody :hi", {"401"}),
    ("PRIVMSG #nowhere :hi", {"403"}),
    ("PRIVMSG #room :hi", {"PRIVMSG"}),  # the echo
    ("PRIVMSG bob :hi", {"PRIVMSG"}),
    ("TAGMSG #room", {"TAGMSG"}),
    ("JOIN #other", {"JOIN", "353", "366"}),
    ("NAMES #room", {"353", "366"}),
    ("WHO #room", {"352", "315"}),
    ("WHOIS bob", {"311", "318"}),
    ("WHOWAS nobody", {"406", "369"}),
    ("AWAY :gone", {"306"}),
    ("MODE #room +m", {"MODE"}),
    ("MODE #room", {"324", "329"}),
    ("MODE #room +b", {"368"}),
    ("TOPIC #room :new topic", {"TOPIC"}),
    ("TOPIC #room", {"331"}),
    ("INVITE dave #room", {"401"}),
    ("KICK #room carol :out", {"KICK"}),
    ("PART #room", {"PART"}),
    ("NICK alice2", {"NICK"}),
    ("LIST", {"321", "322", "323"}),
    ("ISON bob", {"303"}),
    ("USERHOST bob", {"302"}),
    ("LUSERS", {"251", "266"}),
    ("SETNAME :Alice A", set()),  # no setname cap: nothing to see, but the PONG must still come
]


@pytest.mark.parametrize(("line", "verbs"), ORDERED, ids=[c.split(" :")[0] for c, _ in ORDERED])
def test_replies_arrive_in_command_order(net: tuple[Server, IRCClient, IRCClient, IRCClient], line: str,
                                         verbs: set[str]) -> None:
    _, alice, bob, _ = net
    # one write: the command and the PING arrive together, as a bot sends them
    alice.send(f"{line}\r\nPING :after".encode())
    before = {m.verb for m in until_pong(alice, "after")}
    assert verbs <= before, f"{line!r}: {verbs - before} came after the PONG (before it: {sorted(before)})"
    if line.startswith(("PRIVMSG #room", "TAGMSG #room", "KICK", "TOPIC #room :", "MODE #room +m")):
        bob.expect(lambda m: m.verb in {"PRIVMSG", "TAGMSG", "KICK", "TOPIC", "MODE"})


def test_many_commands_in_one_write_keep_their_order(net: tuple[Server, IRCClient, IRCClient, IRCClient]) -> None:
    """Interleaved local and bus-routed commands: each PONG comes after the
    replies of every command before it, and before those of the one after."""
    _, alice, _, _ = net
    lines = []
    for i in range(30):
        lines += [f"PRIVMSG #room :m{i}", f"PING :p{i}", f"PRIVMSG nobody{i} :x", f"PING :q{i}"]
    alice.send(("\r\n".join(lines) + "\r\n").encode())
    got = [m for m in alice.collect(lambda m: m.verb == "PONG" and m.params[-1] == "q29")
           if m.verb in ("PONG", "PRIVMSG", "401")]
    want: list[tuple[str, str]] = []
    for i in range(30):
        want += [("PRIVMSG", f"m{i}"), ("PONG", f"p{i}"), ("401", f"nobody{i}"), ("PONG", f"q{i}")]
    seen = [(m.verb, m.params[-1] if m.verb != "401" else m.params[1]) for m in got]
    assert seen == want


def test_sync_waits_for_the_bus(net: tuple[Server, IRCClient, IRCClient, IRCClient]) -> None:
    """The test client's sync(): after alice.sync() and bob.sync(), bob has
    every line alice's earlier message produced for him (on another worker)."""
    _, alice, bob, _ = net
    for i in range(20):
        alice.send(f"PRIVMSG #room :burst {i}")
    alice.sync()
    bob.sync()
    texts = [m.params[-1] for m in bob.backlog if m.verb == "PRIVMSG"]
    assert texts == [f"burst {i}" for i in range(20)]


# -- labeled-response -------------------------------------------------------------------

@pytest.fixture
def lab(start_server: Callable[..., Server]) -> tuple[Server, IRCClient, IRCClient]:
    server = start_server(*EXEMPT, workers=4)
    alice, bob = spread(server, ["alice", "bob"], CAPS_ALL)
    for c in (alice, bob):
        c.join("#room")
        mark(c)
    return server, alice, bob


def reply(c: IRCClient, label: str) -> list[Message]:
    """The labeled answer: one message, or the whole labeled batch, as it
    arrived (whatever came before it is dropped)."""
    first = c.collect(lambda m: m.tags.get("label") == label)[-1]
    if first.verb != "BATCH":
        return [first]
    end = "-" + first.params[0][1:]
    return [first, *c.collect(lambda m: m.verb == "BATCH" and m.params[0] == end)]


def test_labeled_privmsg_with_echo_gets_the_label_on_the_echo(lab: tuple[Server, IRCClient, IRCClient]) -> None:
    _, alice, bob = lab
    alice.send("@label=e1 PRIVMSG #room :hello")
    (echo,) = reply(alice, "e1")
    assert echo.verb == "PRIVMSG" and echo.params == ("#room", "hello") and "msgid" in echo.tags
    alice.sync()
    assert not [m for m in alice.backlog if m.verb == "ACK"]
    got = bob.expect("PRIVMSG")
    assert "label" not in got.tags


def test_labeled_privmsg_to_several_targets_is_one_batch(lab: tuple[Server, IRCClient, IRCClient]) -> None:
    _, alice, _ = lab
    alice.send("@label=e2 PRIVMSG #room,bob :both")
    msgs = reply(alice, "e2")
    assert msgs[0].verb == "BATCH" and msgs[0].params[1] == "labeled-response"
    ref = msgs[0].params[0][1:]
    inner = msgs[1:-1]
    assert sorted(m.params[0] for m in inner) == ["#room", "bob"]
    assert all(m.tags.get("batch") == ref for m in inner)


def test_labeled_privmsg_to_a_missing_nick_labels_the_401(lab: tuple[Server, IRCClient, IRCClient]) -> None:
    _, alice, _ = lab
    alice.send("@label=e3 PRIVMSG nobody :hi")
    (err,) = reply(alice, "e3")
    assert err.verb == "401"


def test_labeled_privmsg_to_an_away_nick_holds_the_301_and_the_echo(lab: tuple[Server, IRCClient, IRCClient]) -> None:
    _, alice, bob = lab
    bob.send("AWAY :lunch")
    bob.expect("306")
    alice.send("@label=e5 PRIVMSG bob :there?")
    msgs = reply(alice, "e5")
    assert msgs[0].verb == "BATCH" and msgs[0].params[1] == "labeled-response"
    ref = msgs[0].params[0][1:]
    assert [m.verb for m in msgs[1:-1]] == ["301", "PRIVMSG"]
    assert all(m.tags.get("batch") == ref for m in msgs[1:-1])
    assert msgs[1].params[-1] == "lunch"
    alice.send("PRIVMSG bob :still there?")  # unlabeled: the 301 and the echo come before the PONG
    alice.send("PING after-away")
    assert [m.verb for m in until_pong(alice, "after-away")] == ["301", "PRIVMSG"]


def test_labeled_privmsg_without_echo_is_acked(start_server: Callable[..., Server]) -> None:
    server = start_server(workers=4)
    alice = server.client("alice", ("labeled-response", "batch", "message-tags"))
    alice.join("#room")
    alice.send("@label=e4 PRIVMSG #room :quiet")
    (ack,) = reply(alice, "e4")
    assert ack.verb == "ACK"


def test_labeled_join_is_one_batch_with_the_join_line(lab: tuple[Server, IRCClient, IRCClient]) -> None:
    _, alice, bob = lab
    bob.send("PRIVMSG #new :nobody here")  # 403: #new does not exist yet
    alice.send("@label=j1 JOIN #new")
    msgs = reply(alice, "j1")
    verbs = [m.verb for m in msgs]
    assert verbs[0] == "BATCH" and verbs[-1] == "BATCH"
    assert verbs[1] == "JOIN" and "353" in verbs and "366" in verbs
    ref = msgs[0].params[0][1:]
    assert all(m.tags.get("batch") == ref for m in msgs[1:-1])


def test_labeled_join_with_replay_nests_the_history_batch(lab: tuple[Server, IRCClient, IRCClient]) -> None:
    server, _, bob = lab
    for i in range(3):
        bob.send(f"PRIVMSG #room :old {i}")
    bob.sync()
    # a client without draft/chathistory gets the replay on join
    carol = server.client("carol", ("labeled-response", "batch", "message-tags", "server-time"))
    carol.send("@label=j2 JOIN #room")
    msgs = reply(carol, "j2")
    outer = msgs[0].params[0][1:]
    starts = [m for m in msgs if m.verb == "BATCH" and m.params[0].startswith("+") and m is not msgs[0]]
    assert len(starts) == 1 and starts[0].params[1] == "chathistory"
    inner = starts[0].params[0][1:]
    assert starts[0].tags.get("batch") == outer
    replay = [m for m in msgs if m.verb == "PRIVMSG"]
    assert [m.params[-1] for m in replay] == ["old 0", "old 1", "old 2"]
    assert all(m.tags.get("batch") == inner for m in replay)
    end = next(m for m in msgs if m.verb == "BATCH" and m.params[0] == "-" + inner)
    assert end.tags.get("batch") == outer


def test_labeled_chathistory_latest_nests_its_batch(lab: tuple[Server, IRCClient, IRCClient]) -> None:
    _, alice, bob = lab
    for i in range(3):
        bob.send(f"PRIVMSG #room :line {i}")
    bob.sync()
    alice.sync()
    alice.send("@label=h1 CHATHISTORY LATEST #room * 10")
    msgs = reply(alice, "h1")
    rows = [m for m in msgs if m.verb == "PRIVMSG"]
    assert [m.params[-1] for m in rows] == ["line 0", "line 1", "line 2"]
    # the chathistory batch inside the labeled one: it carries the outer id, its lines its own
    outer = msgs[0]
    assert outer.verb == "BATCH" and outer.params[1] == "labeled-response"
    inner = msgs[1]
    assert inner.verb == "BATCH" and inner.params[1] == "chathistory"
    assert inner.tags.get("batch") == outer.params[0][1:]
    assert all(m.tags.get("batch") == inner.params[0][1:] for m in rows)


@pytest.mark.parametrize(("line", "verb"), [
    ("NICK alice9", "NICK"),
    ("MODE #room +s", "MODE"),
    ("FOO bar", "421"),
    ("WHOIS bob", "BATCH"),
    ("WHO #room", "BATCH"),
    ("LIST", "BATCH"),
    ("MODE #room -n", "MODE"),
    ("AWAY :later", "306"),
    ("PING :x", "PONG"),
])
def test_labeled_single_replies_and_batches(lab: tuple[Server, IRCClient, IRCClient], line: str, verb: str) -> None:
    _, alice, _ = lab
    alice.send(f"@label=c1 {line}")
    msgs = reply(alice, "c1")
    assert msgs[0].verb == verb
    if verb == "BATCH":
        assert len(msgs) > 3 and all(m.tags.get("batch") == msgs[0].params[0][1:] for m in msgs[1:-1])


def test_labeled_quit_acks_before_the_error(lab: tuple[Server, IRCClient, IRCClient]) -> None:
    _, alice, _ = lab
    alice.send("@label=q1 QUIT :bye")
    rest = alice.wait_closed()
    verbs = [m.verb for m in rest]
    assert "ACK" in verbs and verbs.index("ACK") < verbs.index("ERROR")
    assert next(m for m in rest if m.verb == "ACK").tags.get("label") == "q1"


# -- acknowledged means stored ----------------------------------------------------------

@pytest.mark.server_errors  # the supervisor logs the manager's death
def test_acknowledged_messages_survive_sigkill_of_the_manager(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    m = server.wait_log(r".*manager ready \(pid (\d+)\).*")
    manager_pid = int(m.group(1))
    senders = spread(server, ["s1", "s2", "s3"], ("echo-message", "message-tags"))
    member = server.client("member", ("message-tags",))
    for c in (*senders, member):
        c.join("#log")
    received: dict[str, set[str]] = {c.nick: set() for c in (*senders, member)}
    stop = threading.Event()

    def talk(c: IRCClient) -> None:
        i = 0
        while not stop.is_set() and i < 5000:
            try:
                c.send(f"PRIVMSG #log :{c.nick} {i}")
            except OSError:
                return
            i += 1
            if i % 20 == 0:
                time.sleep(0.005)  # steady traffic, not a flood

    def listen(c: IRCClient) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not c.closed:
            try:
                msg = c.expect(lambda m: m.verb in ("PRIVMSG", "ERROR"), timeout=1)
            except AssertionError:
                if stop.is_set():
                    return
                continue
            if msg.verb == "ERROR":
                return
            received[c.nick].add(msg.tags["msgid"])

    threads = [threading.Thread(target=talk, args=(c,)) for c in senders]
    threads += [threading.Thread(target=listen, args=(c,)) for c in (*senders, member)]
    for t in threads:
        t.start()
    # kill the manager once traffic is flowing (the member saw 300 lines)
    deadline = time.monotonic() + 20
    while len(received["member"]) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(received["member"]) >= 300, "no traffic"
    seen_before = len(received["member"])
    os.kill(manager_pid, signal.SIGKILL)
    # the supervisor starts a new manager; the workers re-register their clients
    server.wait_log(rf".*manager ready \(pid (?!{manager_pid}\b)\d+\).*", timeout=15)
    deadline = time.monotonic() + 20
    while len(received["member"]) < seen_before + 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(received["member"]) >= seen_before + 200, "traffic did not resume after the new manager"
    stop.set()
    for t in threads:
        t.join(25)
    shown = set().union(*received.values())
    assert len(shown) >= 300
    # what did history keep? (the live server, rebuilt; then a fresh one on the same data directory)
    server.stop()
    again = start_server(workers=2)
    stored = history(again)
    missing = shown - stored
    assert not missing, f"{len(missing)} of {len(shown)} messages clients received are not in history"
