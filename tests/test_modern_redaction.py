"""draft/message-redaction: REDACT by the sender (within redact_window) and by
channel operators, delivered to capable clients only, removed from history
(also for a message that was still being committed, and across a restart);
on four workers with the clients on different workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.state.store import Store
from tests.conftest import Server
from tests.ircclient import IRCClient
from tests.test_history import fetch

EXEMPT = ("--set", "flood_exempt=127.0.0.0/8")
CAPS = ("draft/message-redaction", "message-tags", "echo-message", "draft/chathistory", "batch", "server-time")


def spread(server: Server, specs: list[tuple[str, tuple[str, ...]]]) -> list[IRCClient]:
    clients = [server.client(n, caps) for n, caps in specs]
    workers = {server.worker_of(n) for n, _ in specs}
    assert len(workers) == len(specs), f"clients all on workers {workers}"
    return clients


def say(c: IRCClient, target: str, text: str) -> str:
    """Send a PRIVMSG; return its msgid from the echo."""
    c.send(f"PRIVMSG {target} :{text}")
    echo = c.expect(lambda m: m.verb == "PRIVMSG" and m.params[1] == text)
    return echo.tags["msgid"]


def failure(c: IRCClient, line: str) -> tuple[str, ...]:
    c.send(line)
    m = c.expect("FAIL")
    assert m.params[0] == "REDACT"
    return m.params[1:-1]


def texts(c: IRCClient, target: str) -> list[str]:
    return [t for _, t in fetch(c, f"CHATHISTORY LATEST {target} * 100")]


def test_cap_advertised(start_server: Callable[..., Server]) -> None:
    server = start_server(workers=4)
    c = server.client()
    c.send("CAP LS 302")
    assert "draft/message-redaction" in c.expect("CAP").params[-1].split()


def test_sender_redacts_in_channel(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    op, alice, bob, plain = spread(server, [("op", CAPS), ("alice", CAPS), ("bob", CAPS), ("plain", ())])
    for c in (op, alice, bob, plain):
        c.join("#r")
    keep = say(alice, "#r", "keep this")
    msgid = say(alice, "#r", "oops, a password")
    assert keep != msgid
    alice.send(f"REDACT #r {msgid} :typo")
    for c in (alice, bob, op):
        m = c.expect("REDACT")
        assert m.source is not None and m.source.startswith("alice!")
        assert m.params == ("#r", msgid, "typo")
    # a client without the capability hears nothing of it
    alice.sync()
    plain.sync()
    plain.expect_none("REDACT")
    assert texts(bob, "#r") == ["keep this"]
    # already gone: unknown now
    assert failure(alice, f"REDACT #r {msgid}") == ("UNKNOWN_MSGID", "#r", msgid)


def test_permissions_and_bad_input(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    op, alice, bob, outsider = spread(server, [("op", CAPS), ("alice", CAPS), ("bob", CAPS), ("outsider", CAPS)])
    for c in (op, alice, bob):
        c.join("#p")
    msgid = say(alice, "#p", "spam spam")
    # someone else's message: forbidden for a member, refused to a non-member
    assert failure(bob, f"REDACT #p {msgid} :mine now") == ("REDACT_FORBIDDEN", "#p", msgid)
    assert failure(outsider, f"REDACT #p {msgid}") == ("INVALID_TARGET", "#p")
    assert failure(bob, "REDACT #p nosuchmsgid") == ("UNKNOWN_MSGID", "#p", "nosuchmsgid")
    assert failure(bob, f"REDACT #nowhere {msgid}") == ("INVALID_TARGET", "#nowhere")
    assert failure(bob, f"REDACT a,b {msgid}") == ("INVALID_TARGET", "a,b")
    assert failure(bob, f"REDACT #p {msgid}x") == ("UNKNOWN_MSGID", "#p", msgid + "x")
    bob.send("REDACT #p")
    bob.expect("461")
    assert texts(bob, "#p") == ["spam spam"]
    # a channel operator may redact anyone's message
    op.send(f"REDACT #p {msgid} spam")
    m = bob.expect("REDACT")
    assert m.source is not None and m.source.startswith("op!") and m.params == ("#p", msgid, "spam")
    assert texts(alice, "#p") == []
    for c in (op, alice, bob, outsider):
        c.sync()
        assert not [x for x in c.drain() if x.verb == "400"]


def test_window_expired(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, "--set", "redact_window=0.001", workers=4)
    op, alice = spread(server, [("op", CAPS), ("alice", CAPS)])
    op.join("#w")
    alice.join("#w")
    msgid = say(alice, "#w", "too late to take back")
    assert failure(alice, f"REDACT #w {msgid}") == ("REDACT_WINDOW_EXPIRED", "#w", msgid, "0.001")
    op.send(f"REDACT #w {msgid}")  # operators have no window
    assert alice.expect("REDACT").params == ("#w", msgid)


def test_direct_message(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    alice, bob = spread(server, [("alice", CAPS), ("bob", CAPS)])
    msgid = say(alice, "bob", "hello bob")
    bob.expect("PRIVMSG")
    assert failure(bob, f"REDACT alice {msgid}") == ("REDACT_FORBIDDEN", "alice", msgid)
    alice.send(f"REDACT bob {msgid}")
    assert bob.expect("REDACT").params == ("bob", msgid)
    assert alice.expect("REDACT").params == ("bob", msgid)
    assert texts(bob, "alice") == []
    assert texts(alice, "bob") == []


def next_msgid(msgid: str) -> str:
    """The msgid a worker gives its next message (prefix, then a hex counter)."""
    return msgid[:7] + format(int(msgid[7:], 16) + 1, "x")


def test_redact_while_committing_and_after_restart(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    alice, bob = spread(server, [("alice", CAPS), ("bob", CAPS)])
    alice.join("#c")
    bob.join("#c")
    first = say(alice, "#c", "first")
    bob.expect("PRIVMSG")
    # the REDACT comes in the same read as its message: the message is still on
    # its way to the store when the REDACT looks it up
    guess = next_msgid(first)
    alice.send(f"PRIVMSG #c :regret\r\nREDACT #c {guess}\r\nPRIVMSG #c :after\r\n")
    assert bob.expect("PRIVMSG").tags["msgid"] == guess
    assert bob.expect("REDACT").params == ("#c", guess)
    bob.expect("PRIVMSG")
    assert texts(bob, "#c") == ["first", "after"]
    assert server.stop() == 0
    again = start_server(*EXEMPT, workers=4)
    reader = again.client("reader", CAPS)
    reader.join("#c")
    assert texts(reader, "#c") == ["first", "after"]


def test_store_deletes_a_row_committed_in_the_same_group(tmp_path: Path) -> None:
    """A message and its redaction in one group commit: the row goes in, then
    out, in one transaction (the committer's order), and stays out on reopen."""
    store = Store(tmp_path)
    row = (1, "#g", "m1", 1.0, "PRIVMSG", "msgid=m1", ":a!a@h PRIVMSG #g :gone")
    kept = (2, "#g", "m2", 2.0, "PRIVMSG", "msgid=m2", ":a!a@h PRIVMSG #g :kept")
    store.commit([row, kept], [], [], [("#g", "m1")])
    assert store.history_row("#g", "m1") is None
    store.close()
    again = Store(tmp_path)
    assert [r[4] for r in again.history("#g", limit=10)] == [kept[6]]
    again.close()


def test_labeled_responses(start_server: Callable[..., Server]) -> None:
    """A labeled REDACT gets its own REDACT line with the label; MARKREAD and
    MONITOR answers carry theirs too (ACK when there is nothing to say)."""
    caps = (*CAPS, "labeled-response", "draft/read-marker")
    server = start_server(*EXEMPT, workers=4)
    alice, bob = spread(server, [("alice", caps), ("bob", caps)])
    alice.join("#l")
    bob.join("#l")
    msgid = say(alice, "#l", "label me")
    alice.send(f"@label=r1 REDACT #l {msgid} :why")
    m = alice.expect("REDACT")
    assert m.tags.get("label") == "r1" and m.params == ("#l", msgid, "why")
    assert "label" not in bob.expect("REDACT").tags
    alice.send("@label=r2 REDACT #l nosuch")
    fail = alice.expect("FAIL")
    assert fail.tags.get("label") == "r2" and fail.params[:2] == ("REDACT", "UNKNOWN_MSGID")
    alice.send("@label=m1 MARKREAD #elsewhere")
    m = alice.expect(lambda m: m.verb == "MARKREAD" and m.params[0] == "#elsewhere")
    assert m.tags.get("label") == "m1" and m.params == ("#elsewhere", "*")
    alice.send("@label=o1 MONITOR - nobody")
    ack = alice.expect("ACK")
    assert ack.tags.get("label") == "o1"
    alice.send("@label=o2 MONITOR + nobody,bob")
    start = alice.expect("BATCH")
    assert start.tags.get("label") == "o2" and start.params[1] == "labeled-response"
    ref = start.params[0][1:]
    lines = alice.collect(lambda m: m.verb == "BATCH" and m.params[0] == "-" + ref)
    assert {m.verb for m in lines if m.tags.get("batch") == ref} == {"730", "731"}
