"""IRCv3 draft/multiline (server/irc/multiline.py) on the real server with four
workers: one batch in, one message through the bus, a batch out to capable
clients and separate lines to the others; echo and label; the limits and every
kind of invalid batch (FAIL BATCH ...); history as one row, replayed as a
nested batch or as lines; private messages; the 512-byte line limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.protocol import Message
from tests.conftest import Server
from tests.ircclient import IRCClient

EXEMPT = ("--set", "flood_exempt=127.0.0.0/8")
ML = ("batch", "draft/multiline", "echo-message", "labeled-response", "message-tags", "server-time")
TAGS = ("message-tags", "server-time")  # a client with tags but without draft/multiline
CONCAT = "draft/multiline-concat"


def spread(server: Server, specs: list[tuple[str, tuple[str, ...]]]) -> list[IRCClient]:
    """Clients registered on different workers (the acceptor spreads them)."""
    clients = [server.client(nick, caps) for nick, caps in specs]
    workers = {server.worker_of(nick) for nick, _ in specs}
    assert len(workers) == min(len(specs), 4), f"clients all on workers {workers}"
    return clients


def mark(c: IRCClient) -> None:
    c.sync()
    c.backlog.clear()


def batch_of(c: IRCClient, first: Message | None = None) -> list[Message]:
    """A whole draft/multiline batch as it arrives: opener, lines, closer."""
    start = first or c.expect(lambda m: m.verb == "BATCH" and m.params[0].startswith("+"))
    assert start.params[1] == "draft/multiline", start
    end = "-" + start.params[0][1:]
    return [start, *c.collect(lambda m: m.verb == "BATCH" and m.params[0] == end)]


def send_batch(c: IRCClient, target: str, lines: list[str], ref: str = "b1", opener_tags: str = "",
               verb: str = "PRIVMSG") -> None:
    """``lines`` starting with ``+`` are sent with the concat tag (the ``+`` dropped)."""
    out = [f"{opener_tags}BATCH +{ref} draft/multiline {target}"]
    for line in lines:
        tag = f"@batch={ref};{CONCAT}" if line.startswith("+") else f"@batch={ref}"
        out.append(f"{tag} {verb} {target} :{line.removeprefix('+')}")
    out.append(f"BATCH -{ref}")
    c.send("".join(x + "\r\n" for x in out).encode())


@pytest.fixture
def room(start_server: Callable[..., Server]) -> tuple[Server, IRCClient, IRCClient, IRCClient, IRCClient]:
    """alice and bob with draft/multiline, carol with tags only, dave with nothing; one worker each."""
    server = start_server(*EXEMPT, workers=4)
    alice, bob, carol, dave = spread(server, [("alice", ML), ("bob", ML), ("carol", TAGS), ("dave", ())])
    for c in (alice, bob, carol, dave):
        c.join("#room")
    for c in (alice, bob, carol, dave):
        mark(c)
    return server, alice, bob, carol, dave


def test_cap_is_advertised_with_its_limits(start_server: Callable[..., Server]) -> None:
    server = start_server("--set", "multiline_max_bytes=2000", "--set", "multiline_max_lines=9")
    c = server.client()
    c.send("CAP LS 302")
    ls = c.expect("CAP")
    caps = dict(x.partition("=")[::2] for x in ls.params[-1].split())
    assert caps["draft/multiline"] == "max-bytes=2000,max-lines=9"


def test_cap_is_not_offered_when_turned_off(start_server: Callable[..., Server]) -> None:
    server = start_server("--set", "multiline_max_bytes=0")
    c = server.client()
    c.send("CAP LS 302")
    assert "draft/multiline" not in c.expect("CAP").params[-1]
    c.send("CAP REQ :batch draft/multiline")
    assert c.expect("CAP").params[1] == "NAK"


def test_one_batch_reaches_capable_and_other_clients_across_workers(room) -> None:
    server, alice, bob, carol, dave = room
    erin = server.client("erin", ("server-time",))
    erin.join("#room")
    for c in (erin, alice, bob, carol, dave):
        mark(c)
    send_batch(alice, "#room", ["hello", "", "how is ", "+everyone?"], opener_tags="@label=L1;+client-only ")
    echo = batch_of(alice)
    start = echo[0]
    assert start.source is not None and start.source.startswith("alice!")
    assert start.params[2] == "#room"
    assert start.tags["label"] == "L1" and start.tags["+client-only"] == ""
    msgid, time = start.tags["msgid"], start.tags["time"]
    lines = echo[1:-1]
    ref = start.params[0][1:]
    assert [m.params for m in lines] == [("#room", t) for t in ("hello", "", "how is ", "everyone?")]
    assert all(m.verb == "PRIVMSG" and m.tags.get("batch") == ref for m in lines)
    assert all("msgid" not in m.tags and "time" not in m.tags and "label" not in m.tags for m in lines)
    assert [CONCAT in m.tags for m in lines] == [False, False, False, True]
    alice.sync()
    assert not [m for m in alice.backlog if m.verb in ("ACK", "PRIVMSG", "FAIL")]

    relay = batch_of(bob)
    assert relay[0].tags["msgid"] == msgid and relay[0].tags["time"] == time and "label" not in relay[0].tags
    assert [m.params[1] for m in relay[1:-1]] == ["hello", "", "how is ", "everyone?"]
    assert [CONCAT in m.tags for m in relay[1:-1]] == [False, False, False, True]

    # without the cap: the non-blank lines, the msgid on the first only, the other tags on every line
    fallback = [carol.expect("PRIVMSG") for _ in range(3)]
    assert [m.params for m in fallback] == [("#room", "hello"), ("#room", "how is "), ("#room", "everyone?")]
    assert [m.tags.get("msgid") for m in fallback] == [msgid, None, None]
    assert all(m.tags.get("time") == time and "+client-only" in m.tags for m in fallback)
    assert all(CONCAT not in m.tags and "batch" not in m.tags for m in fallback)
    plain = [dave.expect("PRIVMSG") for _ in range(3)]
    timed = [erin.expect("PRIVMSG") for _ in range(3)]
    assert all(m.tags == {"time": time} for m in timed)  # server-time only: the time on every line
    assert [m.params[1] for m in plain] == ["hello", "how is ", "everyone?"] and all(not m.tags for m in plain)
    for c in (carol, dave):
        c.sync()
        assert not [m for m in c.backlog if m.verb in ("PRIVMSG", "BATCH")]


def test_notice_batch_and_echo_without_label(room) -> None:
    _, alice, bob, _, dave = room
    send_batch(alice, "#room", ["one", "two"], verb="NOTICE")
    echo = batch_of(alice)
    assert "label" not in echo[0].tags
    assert [m.verb for m in echo[1:-1]] == ["NOTICE", "NOTICE"]
    assert [m.verb for m in batch_of(bob)[1:-1]] == ["NOTICE", "NOTICE"]
    assert [dave.expect("NOTICE").params[1] for _ in range(2)] == ["one", "two"]


def test_private_message_across_workers(room) -> None:
    _, alice, bob, _, dave = room
    send_batch(alice, "bob", ["to you", "+ only"], opener_tags="@label=dm ")
    echo = batch_of(alice)
    assert echo[0].tags["label"] == "dm" and echo[0].params[2] == "bob"
    relay = batch_of(bob)
    assert relay[0].params[2] == "bob" and relay[0].tags["msgid"] == echo[0].tags["msgid"]
    assert [(m.params, CONCAT in m.tags) for m in relay[1:-1]] == [(("bob", "to you"), False),
                                                                    (("bob", " only"), True)]
    send_batch(alice, "dave", ["first", "second"], ref="b2")
    batch_of(alice)
    assert [dave.expect("PRIVMSG").params for _ in range(2)] == [("dave", "first"), ("dave", "second")]
    for bad in (":#a b", "a,b", "NickServ", "*"):
        alice.send(f"BATCH +t draft/multiline {bad}")
        if bad == "*":  # a name nobody has: refused by the bus at the end, like a PRIVMSG
            alice.send("@batch=t PRIVMSG * :x\r\nBATCH -t")
            alice.expect("401")
        else:
            assert alice.expect("FAIL").params[:2] == ("BATCH", "MULTILINE_INVALID"), bad


def test_labeled_batch_to_an_away_user(room) -> None:
    _, alice, bob, _, _ = room
    bob.send("AWAY :gone")
    bob.expect("306")
    send_batch(alice, "bob", ["a", "b"], opener_tags="@label=aw ")
    # the 301 and the echo are the command's answer: one labeled batch holds both
    outer = alice.expect(lambda m: m.verb == "BATCH" and m.tags.get("label") == "aw")
    assert outer.params[1] == "labeled-response"
    ref = outer.params[0][1:]
    away = alice.expect("301")
    assert away.params[1:] == ("bob", "gone") and away.tags.get("batch") == ref
    echo = batch_of(alice)
    assert echo[0].tags.get("batch") == ref and [m.params[1] for m in echo[1:-1]] == ["a", "b"]
    assert all("label" not in m.tags for m in echo)
    alice.expect(lambda m: m.verb == "BATCH" and m.params[0] == "-" + ref)


def test_labeled_batch_without_echo_is_acked_and_errors_are_labeled(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    alice, bob = spread(server, [("alice", ("batch", "draft/multiline", "labeled-response")), ("bob", ML)])
    for c in (alice, bob):
        c.join("#room")
        mark(c)
    send_batch(alice, "#room", ["x", "y"], opener_tags="@label=q ")
    ack = alice.expect("ACK")
    assert ack.tags["label"] == "q"
    assert [m.params[1] for m in batch_of(bob)[1:-1]] == ["x", "y"]
    send_batch(alice, "#nowhere", ["x"], ref="b2", opener_tags="@label=r ")
    err = alice.expect("403")
    assert err.tags["label"] == "r" and err.params[1] == "#nowhere"
    alice.sync()
    assert not [m for m in alice.backlog if m.verb in ("ACK", "BATCH")]


def test_lines_too_long_with_the_source_are_split(room) -> None:
    _, alice, bob, _, dave = room
    long = "x" * 200 + "é" * 140  # 480 bytes: fits the client's line, not the relayed one
    send_batch(alice, "#room", [long, "short"])
    batch_of(alice)
    relay = batch_of(bob)[1:-1]
    assert "".join(m.params[1] for m in relay[:-1]) == long and relay[-1].params[1] == "short"
    assert [CONCAT in m.tags for m in relay] == [False] + [True] * (len(relay) - 2) + [False]
    assert len(relay) > 2
    fallback = [dave.expect("PRIVMSG") for _ in range(len(relay))]
    assert "".join(m.params[1] for m in fallback[:-1]) == long
    assert all(len(Message(m.command, m.params, m.source).to_bytes()) <= 512 for m in relay + fallback)


@pytest.mark.parametrize("lines,code,context", [
    (["@batch=b1 PRIVMSG #room :hi", "@batch=b1 NOTICE #room :mixed"], "MULTILINE_INVALID", ()),
    (["@batch=b1 PRIVMSG #room :hi", f"@batch=b1;{CONCAT} PRIVMSG #room :"], "MULTILINE_INVALID", ()),
    (["@batch=b1 PRIVMSG #other :hi"], "MULTILINE_INVALID_TARGET", ("#room", "#other")),
    (["@batch=zz PRIVMSG #room :hi"], "MULTILINE_INVALID", ()),
    (["@batch=b1 TOPIC #room :not a message"], "MULTILINE_INVALID", ()),
    (["@batch=b1 PRIVMSG #room :", "@batch=b1 PRIVMSG #room :", "BATCH -b1"], "MULTILINE_INVALID", ()),
    (["BATCH -b1"], "MULTILINE_INVALID", ()),
    (["BATCH +b2 draft/multiline #room"], "MULTILINE_INVALID", ()),  # b1 never closed
    (["@batch=b1 BATCH +b3 draft/multiline #room"], "MULTILINE_INVALID", ()),  # nested
])
def test_invalid_batches_fail_and_deliver_nothing(room, lines: list[str], code: str,
                                                   context: tuple[str, ...]) -> None:
    _, alice, bob, _, dave = room
    alice.send("".join(x + "\r\n" for x in ["BATCH +b1 draft/multiline #room", *lines]).encode())
    fail = alice.expect("FAIL")
    assert fail.params[:2] == ("BATCH", code) and fail.params[2:-1] == context
    # the rest of a refused batch is ignored without more replies
    alice.send(b"@batch=b1 PRIVMSG #room :late\r\nBATCH -b1\r\n")
    alice.sync()
    assert not [m for m in alice.backlog if m.verb == "FAIL"], alice.backlog
    alice.send("BATCH -b2")  # (an unterminated b1 let b2 start: close it, whatever it holds)
    alice.sync()
    for c in (bob, dave):
        c.sync()
        assert not [m for m in c.backlog if m.verb in ("PRIVMSG", "NOTICE", "BATCH", "TOPIC")], c.backlog
    # and the next batch works
    alice.backlog.clear()
    send_batch(alice, "#room", ["fine"], ref="ok")
    assert [m.params[1] for m in batch_of(bob)[1:-1]] == ["fine"]


def test_batch_without_the_cap_is_refused(room) -> None:
    _, _, bob, carol, _ = room
    carol.send("BATCH +x draft/multiline #room")
    fail = carol.expect("FAIL")
    assert fail.params[:2] == ("BATCH", "MULTILINE_INVALID")
    carol.send("@batch=x PRIVMSG #room :hi")
    assert carol.expect("FAIL").params[:2] == ("BATCH", "MULTILINE_INVALID")
    carol.send("BATCH +y chathistory #room")
    assert carol.expect("FAIL").params[:2] == ("BATCH", "MULTILINE_INVALID")
    carol.send("BATCH -q")  # no such batch
    assert carol.expect("FAIL").params[:2] == ("BATCH", "MULTILINE_INVALID")
    carol.sync()
    bob.sync()
    assert not [m for m in bob.backlog if m.verb in ("PRIVMSG", "BATCH")]


def test_limits_fail_at_the_line_that_overflows(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, "--set", "multiline_max_lines=4", "--set", "multiline_max_bytes=100",
                          workers=4)
    alice, bob = spread(server, [("alice", ML), ("bob", ML)])
    for c in (alice, bob):
        c.join("#room")
        mark(c)
    # five lines: refused at the fifth, before the batch ends, with the opener's label
    alice.send("@label=big BATCH +l draft/multiline #room\r\n" + "@batch=l PRIVMSG #room :hi\r\n" * 5)
    fail = alice.expect("FAIL")
    assert fail.params[:3] == ("BATCH", "MULTILINE_MAX_LINES", "4") and fail.tags.get("label") == "big"
    alice.send("@batch=l PRIVMSG #room :more\r\nBATCH -l")
    # 101 bytes: 60 + LF + 40
    alice.send("BATCH +m draft/multiline #room\r\n"
               f"@batch=m PRIVMSG #room :{'a' * 60}\r\n@batch=m PRIVMSG #room :{'b' * 40}\r\nBATCH -m")
    fail = alice.expect("FAIL")
    assert fail.params[:3] == ("BATCH", "MULTILINE_MAX_BYTES", "100")
    # exactly at the limits passes: 4 lines, 100 bytes (concat lines add no LF)
    send_batch(alice, "#room", ["a" * 40, "+" + "b" * 40, "c" * 9, "d" * 9], ref="n")
    assert [len(m.params[1]) for m in batch_of(bob)[1:-1]] == [40, 40, 9, 9]
    alice.sync()
    assert not [m for m in alice.backlog if m.verb == "FAIL"]
    bob.sync()
    assert not [m for m in bob.backlog if m.verb in ("PRIVMSG", "BATCH")]


def test_a_batch_is_charged_as_its_batch_lines_not_each_line(start_server: Callable[..., Server]) -> None:
    """32 lines at once pass flood control that would hold them back for 30 s."""
    server = start_server("--set", "flood_burst=5", "--set", "flood_rate=1", "--set", "per_ip_exempt=")
    alice = server.client("alice", ML)
    bob = server.client("bob", ML)
    for c in (alice, bob):
        c.join("#room")
        mark(c)
    send_batch(alice, "#room", [f"line {i}" for i in range(32)])
    assert len(batch_of(bob, bob.expect("BATCH", timeout=5))) == 34


def fetch(c: IRCClient, line: str) -> list[Message]:
    """A CHATHISTORY reply's whole outer batch, as it arrived (opener and closer included)."""
    mark(c)
    c.send(line)
    start = c.expect(lambda m: m.verb == "BATCH" and m.params[1] == "chathistory")
    return [start, *c.collect(lambda m: m.verb == "BATCH" and m.params[0] == "-" + start.params[0][1:])]


def test_history_is_one_message_replayed_as_a_nested_batch(room, start_server) -> None:
    server, alice, bob, _, _ = room
    alice.send("PRIVMSG #room :before")
    send_batch(alice, "#room", ["first", "", "sec", "+ond"], opener_tags="@+tag=v ")
    live = batch_of(bob)[0].tags["msgid"]
    alice.send("PRIVMSG #room :after")
    reader = server.client("reader", ("draft/chathistory", *ML))
    got = fetch(reader, "CHATHISTORY LATEST #room * 2")  # two rows: the batch and "after"
    outer = got[0].params[0][1:]
    inner = got[1:-2]
    assert inner[0].verb == "BATCH" and inner[0].params[1:] == ("draft/multiline", "#room")
    assert inner[0].tags["msgid"] == live and inner[0].tags["+tag"] == "v" and inner[0].tags["batch"] == outer
    ref = inner[0].params[0][1:]
    assert inner[-1].params == ("-" + ref,) and inner[-1].tags["batch"] == outer
    assert [(m.params[1], m.tags["batch"], CONCAT in m.tags) for m in inner[1:-1]] == [
        ("first", ref, False), ("", ref, False), ("sec", ref, False), ("ond", ref, True)]
    assert got[-2].params[1] == "after" and got[-2].tags["batch"] == outer
    # without the cap: its lines, one msgid
    plain = server.client("plain", ("draft/chathistory", "batch", "message-tags", "server-time"))
    got = fetch(plain, "CHATHISTORY LATEST #room * 2")[1:-1]
    assert [m.params[1] for m in got] == ["first", "sec", "ond", "after"]
    assert [m.tags.get("msgid") for m in got[:3]] == [live, None, None]
    # a msgid reference to it works like any message's
    got = fetch(plain, f"CHATHISTORY BEFORE #room msgid={live} 1")[1:-1]
    assert [m.params[1] for m in got] == ["before"]


def test_private_history_and_replay_on_join(room) -> None:
    server, alice, bob, _, _ = room
    send_batch(alice, "bob", ["dm one", "dm two"])
    batch_of(bob)
    bob.send("CHATHISTORY LATEST alice * 10")
    start = bob.expect(lambda m: m.verb == "BATCH" and m.params[1] == "chathistory")
    inner = batch_of(bob)
    assert inner[0].params[2] == "bob" and inner[0].tags["batch"] == start.params[0][1:]
    assert [m.params for m in inner[1:-1]] == [("bob", "dm one"), ("bob", "dm two")]
    # replay on join (batch + server-time, no chathistory): the fallback lines inside the replay batch
    send_batch(alice, "#room", ["r1", "r2"], ref="r")
    batch_of(bob)
    late = server.client("late", ("batch", "server-time"))
    late.send("JOIN #room")
    start = late.expect(lambda m: m.verb == "BATCH" and m.params[1] == "chathistory")
    got = late.collect(lambda m: m.verb == "BATCH" and m.params[0] == "-" + start.params[0][1:])[:-1]
    assert [m.params[1] for m in got if m.verb == "PRIVMSG"][-2:] == ["r1", "r2"]


def test_a_labeled_batch_tags_each_line_of_a_multiline_item() -> None:
    """Session._labeled: a multiline echo (one item of several lines) inside a
    labeled-response batch: its BATCH lines get the outer reference, its lines keep theirs."""
    from server.ops.config import Config
    from server.process.session import Session
    from server.protocol import parse

    s = Session.__new__(Session)
    s.config, s.caps = Config(), {"batch", "labeled-response"}
    blob = b":a!b@c BATCH +m1 draft/multiline #c\r\n@batch=m1 :a!b@c PRIVMSG #c :x\r\nBATCH -m1\r\n"
    alone = [parse(x) for x in s._labeled("L", [blob]).decode().split("\r\n") if x]
    assert [m.tags.get("label") for m in alone] == ["L", None, None]  # the label on the opener only
    out = [parse(x) for x in s._labeled("L", [b":srv 301 a b :away\r\n", blob]).decode().split("\r\n") if x]
    assert [m.verb for m in out] == ["BATCH", "301", "BATCH", "PRIVMSG", "BATCH", "BATCH"]
    outer = out[0].params[0][1:]
    assert out[0].tags["label"] == "L" and out[0].params[1] == "labeled-response"
    assert [m.tags.get("batch") for m in out[1:]] == [outer, outer, "m1", outer, None]
