"""Durable history: CHATHISTORY (every subcommand, paging), replay on join,
restart, reconnect without gaps or duplicates, privacy, bursts, retention,
labeled-response."""

from __future__ import annotations

from tests.conftest import Server
from tests.ircclient import IRCClient

CAPS = ("draft/chathistory", "batch", "server-time", "message-tags")
REPLAY = ("batch", "server-time")  # what a client needs to be replayed history on JOIN
EXEMPT = ("--set", "flood_exempt=127.0.0.0/8")


def fetch(c: IRCClient, line: str) -> list[tuple[str, str]]:
    """Send a CHATHISTORY request; return (msgid, text) of the batch, in order."""
    return [(m.tags["msgid"], m.params[-1]) for m in fetch_messages(c, line)]


def fetch_messages(c: IRCClient, line: str) -> list:
    """Send a CHATHISTORY request; return the messages of its batch, in order."""
    c.send(line)
    start = c.expect("BATCH")
    assert start.params[0].startswith("+") and start.params[1] == "chathistory"
    ref = start.params[0][1:]
    out = []
    while True:
        m = c.expect(lambda m: m.tags.get("batch") == ref or (m.verb == "BATCH" and m.params[0] == "-" + ref))
        if m.verb == "BATCH":
            return out
        out.append(m)


def talk(c: IRCClient, target: str, texts: list[str], echo_to: IRCClient) -> list[str | None]:
    """Send lines; return their msgids when ``echo_to`` (a member that receives
    them) asked for tags."""
    c.send("".join(f"PRIVMSG {target} :{t}\r\n" for t in texts).encode())
    got = [echo_to.expect("PRIVMSG") for _ in texts]
    assert [m.params[1] for m in got] == texts
    return [m.tags.get("msgid") for m in got]


def test_chathistory_subcommands_and_paging(start_server) -> None:
    server: Server = start_server(*EXEMPT)
    alice = server.client("alice")
    reader = server.client("reader", caps=CAPS)
    alice.join("#h")
    reader.join("#h")
    texts = [f"m{i}" for i in range(30)]
    ids = talk(alice, "#h", texts, reader)
    latest = fetch(reader, "CHATHISTORY LATEST #h * 10")
    assert [t for _, t in latest] == texts[20:]
    page2 = fetch(reader, f"CHATHISTORY BEFORE #h msgid={latest[0][0]} 10")
    assert [t for _, t in page2] == texts[10:20]
    page3 = fetch(reader, f"CHATHISTORY BEFORE #h msgid={page2[0][0]} 10")
    assert [t for _, t in page3] == texts[:10]
    assert fetch(reader, f"CHATHISTORY BEFORE #h msgid={page3[0][0]} 10") == []
    after = fetch(reader, f"CHATHISTORY AFTER #h msgid={ids[4]} 3")
    assert [t for _, t in after] == ["m5", "m6", "m7"]
    around = fetch(reader, f"CHATHISTORY AROUND #h msgid={ids[15]} 4")
    assert [t for _, t in around] == ["m13", "m14", "m15", "m16"]
    between = fetch(reader, f"CHATHISTORY BETWEEN #h msgid={ids[2]} msgid={ids[8]} 100")
    assert [t for _, t in between] == texts[3:8]
    since = fetch(reader, f"CHATHISTORY LATEST #h msgid={ids[26]} 100")
    assert [t for _, t in since] == texts[27:]
    everything = [(m.tags["time"], m.params[1]) for m in fetch_messages(reader, "CHATHISTORY LATEST #h * 100")]
    assert [t for _, t in everything] == texts
    ts = everything[-1][0]
    by_time = [(m.tags["time"], m.params[1]) for m in fetch_messages(reader, f"CHATHISTORY BEFORE #h timestamp={ts} 3")]
    assert by_time == [row for row in everything if row[0] < ts][-3:]
    after_time = [(m.tags["time"], m.params[1])
                  for m in fetch_messages(reader, f"CHATHISTORY AFTER #h timestamp={everything[0][0]} 100")]
    assert after_time == [row for row in everything if row[0] > everything[0][0]]
    reader.send("CHATHISTORY LATEST #nowhere-at-all * 5")
    assert reader.expect("FAIL").params[:2] == ("CHATHISTORY", "INVALID_TARGET")
    reader.send("CHATHISTORY SIDEWAYS #h * 5")
    assert reader.expect("FAIL").params[:2] == ("CHATHISTORY", "INVALID_PARAMS")


def test_targets(start_server) -> None:
    server: Server = start_server(*EXEMPT)
    alice = server.client("alice", caps=CAPS)
    bob = server.client("bob")
    alice.join("#t1")
    bob.join("#t1")
    talk(bob, "#t1", ["in channel"], alice)
    bob.send("PRIVMSG alice :direct")
    alice.expect("PRIVMSG")
    alice.send("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z timestamp=2100-01-01T00:00:00.000Z 10")
    start = alice.expect("BATCH")
    assert start.params[1] == "draft/chathistory-targets"
    names = set()
    while True:
        m = alice.expect(lambda m: m.verb in ("CHATHISTORY", "BATCH"))
        if m.verb == "BATCH":
            break
        names.add(m.params[1])
    assert names == {"#t1", "bob"}


def test_history_survives_restart(start_server) -> None:
    server: Server = start_server(*EXEMPT)
    alice = server.client("alice")
    bob = server.client("bob")
    alice.join("#keep")
    bob.join("#keep")
    texts = [f"before shutdown {i}" for i in range(50)]
    talk(alice, "#keep", texts, bob)
    assert server.stop() == 0
    server2: Server = start_server()
    reader = server2.client("reader", caps=CAPS)
    reader.join("#keep")
    got = fetch(reader, "CHATHISTORY LATEST #keep * 100")
    assert [t for _, t in got] == texts


def test_reconnect_after_last_msgid_no_gap_no_duplicate(start_server) -> None:
    server: Server = start_server(*EXEMPT)
    talker = server.client("talker")
    talker.join("#r")
    away = server.client("away", caps=CAPS)
    away.join("#r")
    seen = talk(talker, "#r", ["a", "b"], away)
    away.send("QUIT")
    away.wait_closed()
    watcher = server.client("watcher", caps=CAPS)
    watcher.join("#r")
    talk(talker, "#r", ["c", "d", "e"], watcher)
    back = server.client("away", caps=CAPS)
    back.join("#r")
    got = fetch(back, f"CHATHISTORY AFTER #r msgid={seen[-1]} 100")
    assert [t for _, t in got] == ["c", "d", "e"]
    assert len({i for i, _ in got}) == 3


def test_direct_messages_are_private(start_server) -> None:
    server: Server = start_server(*EXEMPT)
    alice = server.client("alice", caps=CAPS)
    bob = server.client("bob", caps=CAPS)
    carol = server.client("carol", caps=CAPS)
    alice.send("PRIVMSG bob :secret plan")
    bob.expect("PRIVMSG")
    assert [t for _, t in fetch(bob, "CHATHISTORY LATEST alice * 10")] == ["secret plan"]
    assert [t for _, t in fetch(alice, "CHATHISTORY LATEST bob * 10")] == ["secret plan"]
    assert fetch(carol, "CHATHISTORY LATEST alice * 10") == []
    assert fetch(carol, "CHATHISTORY LATEST bob * 10") == []


def test_banned_users_get_no_history(start_server) -> None:
    server: Server = start_server(*EXEMPT)
    op = server.client("op")
    op.join("#b")
    member = server.client("member")
    member.join("#b")
    talk(op, "#b", ["private talk"], member)
    outsider = server.client("outsider", caps=CAPS)
    assert [t for _, t in fetch(outsider, "CHATHISTORY LATEST #b * 10")] == ["private talk"]
    op.send("MODE #b +b outsider!*@*")
    op.expect("MODE")
    outsider.send("CHATHISTORY LATEST #b * 10")
    assert outsider.expect("FAIL").params[:2] == ("CHATHISTORY", "INVALID_TARGET")
    op.send("MODE #b -b+k outsider!*@* key")
    op.expect("MODE")
    outsider.send("CHATHISTORY LATEST #b * 10")
    assert outsider.expect("FAIL").params[:2] == ("CHATHISTORY", "INVALID_TARGET")


def test_burst_lands_in_history_in_order(start_server) -> None:
    server: Server = start_server(*EXEMPT, "--set", "chathistory_max=1000")
    sender = server.client("sender")
    sender.join("#burst")
    listener = server.client("listener", caps=CAPS)
    listener.join("#burst")
    n = 3000
    for k in range(0, n, 500):
        sender.send("".join(f"PRIVMSG #burst :{i}\r\n" for i in range(k, k + 500)).encode())
    for _ in range(n):
        listener.expect("PRIVMSG", timeout=30)
    got: list[str] = []
    cursor = "*"
    while True:
        page = fetch(listener, f"CHATHISTORY BEFORE #burst {cursor} 1000" if cursor != "*"
                     else "CHATHISTORY LATEST #burst * 1000")
        if not page:
            break
        got = [t for _, t in page] + got
        cursor = f"msgid={page[0][0]}"
    assert got == [str(i) for i in range(n)]


def test_replay_on_join_for_plain_clients(start_server) -> None:
    server: Server = start_server(*EXEMPT, "--set", "history_replay_lines=3")
    alice = server.client("alice")
    alice.join("#rp")
    helper = server.client("helper")
    helper.join("#rp")
    talk(alice, "#rp", ["one", "two", "three", "four"], helper)
    late = server.client("late", caps=("server-time", "batch"))
    late.join("#rp")
    start = late.expect("BATCH")
    assert start.params[1:] == ("chathistory", "#rp")
    got = [late.expect("PRIVMSG") for _ in range(3)]
    assert [m.params[1] for m in got] == ["two", "three", "four"]
    assert all("time" in m.tags and m.tags["batch"] == start.params[0][1:] for m in got)
    # a client that cannot tell history from live lines is told it exists, not sent it
    plain = server.client("plain")
    plain.join("#rp")
    note = plain.expect("NOTICE")
    assert note.params[0] == "#rp" and "server-time" in note.params[1]
    plain.sync()
    assert not [m for m in plain.drain() if m.verb == "PRIVMSG"]


def test_replay_on_join_sees_the_lines_just_spoken(start_server) -> None:
    """Rows are committed before their deliveries leave the manager, so a joiner
    right after a line gets it in the replay, once, and not live as well."""
    server: Server = start_server(*EXEMPT, "--set", "history_replay_lines=5")
    alice = server.client("alice")
    alice.join("#fresh")
    alice.join("#other")
    helper = server.client("helper")
    helper.join("#fresh")
    helper.join("#other")
    talk(alice, "#fresh", ["a", "b", "c"], helper)
    talk(alice, "#other", ["x"], helper)
    for n in range(2):
        late = server.client(f"late{n}", caps=REPLAY)
        late.join("#fresh")
        late.sync()
        assert [m.params[1] for m in late.drain() if m.verb == "PRIVMSG"] == ["a", "b", "c"]
    talk(alice, "#fresh", ["d"], helper)
    last = server.client("last", caps=REPLAY)
    last.join("#fresh")
    last.sync()
    assert [m.params[1] for m in last.drain() if m.verb == "PRIVMSG"] == ["a", "b", "c", "d"]


def test_replay_off_and_history_switch(start_server) -> None:
    server: Server = start_server(*EXEMPT, "--set", "history_replay_lines=0")
    alice = server.client("alice")
    alice.join("#off")
    helper = server.client("helper", caps=CAPS)
    helper.join("#off")
    talk(alice, "#off", ["kept"], helper)
    alice.send("PRIVMSG ChanServ :SET #off HISTORY OFF")
    assert "off" in alice.expect("NOTICE").params[1]
    talk(alice, "#off", ["not kept"], helper)
    assert [t for _, t in fetch(helper, "CHATHISTORY LATEST #off * 10")] == ["kept"]
    late = server.client("late")
    late.join("#off")
    late.sync()
    assert not [m for m in late.drain() if m.verb == "PRIVMSG"]


def test_retention_by_count(start_server) -> None:
    server: Server = start_server(*EXEMPT, "--set", "history_max_per_target=5", "--set", "history_expire_every=0.2")
    alice = server.client("alice")
    alice.join("#ret")
    reader = server.client("reader", caps=CAPS)
    reader.join("#ret")
    talk(alice, "#ret", [f"r{i}" for i in range(12)], reader)
    import time

    deadline = time.monotonic() + 15
    while True:
        got = [t for _, t in fetch(reader, "CHATHISTORY LATEST #ret * 100")]
        if len(got) <= 5 or time.monotonic() > deadline:
            break
    assert got == [f"r{i}" for i in range(7, 12)]


def test_labeled_response(server: Server) -> None:
    c = server.client("lab", caps=("labeled-response", "batch", "message-tags"))
    server.client("target")
    c.send("@label=p1 PING :x")
    pong = c.expect("PONG")
    assert pong.tags["label"] == "p1"
    c.send("@label=w1 WHOIS target")
    start = c.expect("BATCH")
    assert start.tags["label"] == "w1" and start.params[1] == "labeled-response"
    ref = start.params[0][1:]
    assert c.expect("311").tags["batch"] == ref
    end = c.expect(lambda m: m.verb == "BATCH" and m.params[0] == "-" + ref)
    assert end
    c.send("@label=a1 AWAY")
    assert c.expect("305").tags["label"] == "a1"


def test_regression_replay_on_join_never_repeats_live_messages(start_server) -> None:
    """The replay used to read "the last N lines" a moment after the JOIN, so a
    message that arrived live just after the join could come twice."""
    server: Server = start_server(*EXEMPT, "--set", "history_replay_lines=50")
    alice = server.client("alice")
    alice.join("#race")
    for round_ in range(5):
        bob = server.client(f"bob{round_}", caps=REPLAY)
        alice.send("".join(f"PRIVMSG #race :{round_}-{i}\r\n" for i in range(60)).encode())
        bob.send("JOIN #race")
        bob.expect("366")
        bob.sync()
        texts = [m.params[1] for m in bob.drain() if m.verb == "PRIVMSG"]
        assert len(texts) == len(set(texts)), f"repeated: {sorted(t for t in texts if texts.count(t) > 1)[:5]}"
