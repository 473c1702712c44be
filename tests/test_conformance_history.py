"""Conformance (issue #14): draft/chathistory and the replay on JOIN, against
the real server on four workers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.irc.history import parse_timestamp
from server.protocol import Message
from tests.conftest import Server
from tests.ircclient import IRCClient

WORKERS = 4
CAPS = ("draft/chathistory", "batch", "server-time", "message-tags", "echo-message")
EXEMPT = ("--set", "flood_exempt=127.0.0.0/8")


def batch(c: IRCClient, line: str, kind: str = "chathistory") -> tuple[tuple[str, ...], list[Message]]:
    """Send a request; return the batch's parameters after its type, and its messages."""
    c.send(line)
    start = c.expect(lambda m: m.verb in ("BATCH", "FAIL"))
    assert start.verb == "BATCH", start.to_line()
    assert start.params[1] == kind
    ref = start.params[0][1:]
    out: list[Message] = []
    while True:
        m = c.expect(lambda m: m.tags.get("batch") == ref or (m.verb == "BATCH" and m.params[0] == "-" + ref))
        if m.verb == "BATCH":
            return start.params[2:], out
        out.append(m)


def texts(msgs: list[Message]) -> list[str]:
    return [m.params[1] for m in msgs]


def say(c: IRCClient, target: str, text: str) -> str:
    """Send a PRIVMSG and return its msgid (from the echo)."""
    c.send(f"PRIVMSG {target} :{text}")
    echo = c.expect(lambda m: m.verb == "PRIVMSG" and m.params[1] == text)
    return echo.tags["msgid"]


# -- direct messages ---------------------------------------------------------------------
def test_dm_history_names_the_other_party_in_every_subcommand(start_server: Callable[..., Server]) -> None:
    srv = start_server(*EXEMPT, workers=WORKERS)
    alice = srv.client("Alice", CAPS)
    bob = srv.client("bob", CAPS)
    ids = [say(bob, "ALICE", "hi"), say(alice, "BOB", "hey"), say(bob, "alice", "how are you"),
           say(alice, "Bob", "fine")]
    note = say(alice, "alice", "note to self")

    for reader, target, partner in ((bob, "alice", "Alice"), (alice, "BOB", "bob")):
        params, msgs = batch(reader, f"CHATHISTORY LATEST {target} * 10")
        assert params == (partner,)
        assert texts(msgs) == ["hi", "hey", "how are you", "fine"]
        # each message is addressed to the party it went to, spelled as that user spells it
        assert [((m.source or "").partition("!")[0], m.params[0]) for m in msgs] == [
            ("bob", "Alice"), ("Alice", "bob"), ("bob", "Alice"), ("Alice", "bob")]
        assert texts(batch(reader, f"CHATHISTORY BEFORE {target} msgid={ids[2]} 10")[1]) == ["hi", "hey"]
        assert texts(batch(reader, f"CHATHISTORY AFTER {target} msgid={ids[1]} 10")[1]) == ["how are you", "fine"]
        assert texts(batch(reader, f"CHATHISTORY AROUND {target} msgid={ids[1]} 3")[1]) == ["hi", "hey",
                                                                                            "how are you"]
        assert texts(batch(reader, f"CHATHISTORY BETWEEN {target} msgid={ids[3]} msgid={ids[0]} 10")[1]) == [
            "hey", "how are you"]
    params, msgs = batch(alice, "CHATHISTORY LATEST ALICE * 10")
    assert params == ("Alice",)
    assert [(m.tags["msgid"], m.params) for m in msgs] == [(note, ("Alice", "note to self"))]
    # once Alice has gone, her spelling still comes from her own messages
    alice.send("QUIT")
    alice.wait_closed()
    params, msgs = batch(bob, "CHATHISTORY LATEST alice * 10")
    assert params == ("Alice",)
    assert [m.params[0] for m in msgs] == ["Alice", "bob", "Alice", "bob"]


def test_invalid_or_inaccessible_targets_fail(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    c = srv.client("asker", CAPS)
    op = srv.client("op")
    op.join("#secret")
    op.send("MODE #secret +s")
    op.expect("MODE")
    for target in ("nobody-by-that-name", "*", "#no-such-channel", "#secret", "a,b"):
        c.send(f"CHATHISTORY LATEST {target} * 10")
        m = c.expect(lambda m: m.verb in ("FAIL", "BATCH"))
        assert m.verb == "FAIL" and m.params[:2] == ("CHATHISTORY", "INVALID_TARGET"), (target, m.to_line())
        assert m.params[3] == target


# -- limits ---------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", ["0", "-1", "abc", "\u0665", "1" * 23, "9" * 30, "+5", " 5"])
def test_bad_limits_are_invalid_params(start_server: Callable[..., Server], limit: str) -> None:
    srv = start_server(workers=WORKERS)
    c = srv.client("lim", CAPS)
    c.join("#lim")
    say(c, "#lim", "one")
    c.send(f"CHATHISTORY LATEST #lim * :{limit}")
    m = c.expect(lambda m: m.verb in ("FAIL", "BATCH", "400"))
    assert m.verb == "FAIL" and m.params[:2] == ("CHATHISTORY", "INVALID_PARAMS"), m.to_line()


def test_server_maximum_is_advertised_and_applied(start_server: Callable[..., Server]) -> None:
    srv = start_server(*EXEMPT, "--set", "chathistory_max=5", workers=WORKERS)
    c = srv.client("maxer", CAPS)
    assert "CHATHISTORY=5" in [p for m in c.seen if m.verb == "005" for p in m.params[1:-1]]
    c.join("#max")
    for i in range(8):
        say(c, "#max", f"m{i}")
    assert texts(batch(c, "CHATHISTORY LATEST #max * 1000")[1]) == [f"m{i}" for i in range(3, 8)]


# -- AROUND and TARGETS -----------------------------------------------------------------------
def test_around_is_centred_on_the_reference(start_server: Callable[..., Server]) -> None:
    srv = start_server(*EXEMPT, workers=WORKERS)
    c = srv.client("arounder", CAPS)
    c.join("#ar")
    ids = [say(c, "#ar", f"m{i}") for i in range(9)]
    assert texts(batch(c, f"CHATHISTORY AROUND #ar msgid={ids[4]} 1")[1]) == ["m4"]
    assert texts(batch(c, f"CHATHISTORY AROUND #ar msgid={ids[4]} 3")[1]) == ["m3", "m4", "m5"]
    assert texts(batch(c, f"CHATHISTORY AROUND #ar msgid={ids[4]} 5")[1]) == ["m2", "m3", "m4", "m5", "m6"]
    # at an edge the window is filled from the other side
    assert texts(batch(c, f"CHATHISTORY AROUND #ar msgid={ids[0]} 3")[1]) == ["m0", "m1", "m2"]
    assert texts(batch(c, f"CHATHISTORY AROUND #ar msgid={ids[8]} 3")[1]) == ["m6", "m7", "m8"]


def test_targets_window_order_and_names(start_server: Callable[..., Server]) -> None:
    srv = start_server(*EXEMPT, workers=WORKERS)
    me = srv.client("me", CAPS)
    other = srv.client("Other", CAPS)
    me.join("#early")
    me.join("#late")
    me.send("PRIVMSG #early :before the window")
    edge = me.expect("PRIVMSG").tags["time"]
    # activity strictly after the window's start (times have millisecond steps)
    for _ in range(500):
        me.send("PRIVMSG #late :in the window")
        if parse_timestamp(me.expect("PRIVMSG").tags["time"]) > parse_timestamp(edge):
            break
    else:
        raise AssertionError("the clock did not move")
    other.send("PRIVMSG ME :a direct message")
    me.expect(lambda m: m.verb == "PRIVMSG" and m.params[1] == "a direct message")
    end = "timestamp=2100-01-01T00:00:00.000Z"
    _, lines = batch(me, f"CHATHISTORY TARGETS timestamp={edge} {end} 10", "draft/chathistory-targets")
    got = [(m.params[1], m.params[2]) for m in lines]
    assert [name for name, _ in got] == ["#late", "Other"]  # #early's only line is on the edge: outside
    assert [t for _, t in got] == sorted(t for _, t in got)
    # backwards in time, the limit counts from the first timestamp: the latest target
    _, lines = batch(me, f"CHATHISTORY TARGETS {end} timestamp={edge} 1", "draft/chathistory-targets")
    assert [m.params[1] for m in lines] == ["Other"]


# -- TAGMSG and the replay on join ----------------------------------------------------------
def test_tagmsgs_never_count_against_replay_or_limit(start_server: Callable[..., Server]) -> None:
    srv = start_server(*EXEMPT, workers=WORKERS)
    talker = srv.client("talker", CAPS)
    talker.join("#typing")
    say(talker, "#typing", "a real message")
    for _ in range(24):
        talker.send("@+typing=active TAGMSG #typing")
    talker.send("@+typing=done TAGMSG #typing")
    talker.expect(lambda m: m.verb == "TAGMSG" and m.tags.get("+typing") == "done")
    _, msgs = batch(talker, "CHATHISTORY LATEST #typing * 1")
    assert [(m.verb, m.params[1]) for m in msgs] == [("PRIVMSG", "a real message")]
    late = srv.client("late", ("batch", "server-time"))
    late.join("#typing")
    start = late.expect("BATCH")
    assert start.params[1:] == ("chathistory", "#typing")
    assert late.expect("PRIVMSG").params[1] == "a real message"


def test_replay_on_join_only_to_clients_that_can_tell_it_apart(start_server: Callable[..., Server]) -> None:
    srv = start_server(*EXEMPT, workers=WORKERS)
    talker = srv.client("talker", CAPS)
    talker.join("#bots")
    say(talker, "#bots", "!restart")
    for caps in ((), ("server-time",), ("batch",)):
        bot = srv.client(f"bot{len(caps)}{''.join(c[0] for c in caps)}", caps)
        bot.join("#bots")
        note = bot.expect("NOTICE")
        assert note.params[0] == "#bots" and "batch" in note.params[1] and "server-time" in note.params[1]
        bot.sync()
        assert not [m for m in bot.drain() if m.verb == "PRIVMSG"], caps
    full = srv.client("viewer", ("batch", "server-time"))
    full.join("#bots")
    start = full.expect("BATCH")
    replayed = full.expect("PRIVMSG")
    assert replayed.params[1] == "!restart" and "time" in replayed.tags
    assert replayed.tags["batch"] == start.params[0][1:]
    # an empty channel's history: no NOTICE either
    quiet = srv.client("quiet")
    quiet.join("#nothing-said")
    quiet.sync()
    assert not [m for m in quiet.drain() if m.verb == "NOTICE"]
