"""Conformance (issue #14): lines, tags, targets, WHO/WHOX/WHOWAS, LIST, USER and
user modes, against the real server on four workers. Each test sends the bytes
a client would and checks the reply, as progval/irctest does."""

from __future__ import annotations

from collections.abc import Callable

from server.protocol import Message
from tests.conftest import Server
from tests.ircclient import IRCClient

WORKERS = 4


def collect(c: IRCClient, end: str) -> list[Message]:
    """Every message up to and including the numeric ``end``."""
    out: list[Message] = []
    while True:
        m = c.expect(lambda m: m.verb != "PONG")
        out.append(m)
        if m.verb == end:
            return out


# -- 417 ERR_INPUTTOOLONG -------------------------------------------------------------
def test_body_over_512_bytes_gets_417_and_is_not_executed(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    alice, bob = srv.client("alice"), srv.client("bob")
    alice.join("#l")
    bob.join("#l")
    alice.expect("JOIN")
    # TOPIC: its broadcast (cut to TOPICLEN) fits a client's 512-byte line, unlike a relayed PRIVMSG
    alice.send("TOPIC #l :" + "a" * (511 - len("TOPIC #l :")))  # 511 bytes + CRLF = 513
    assert alice.expect("417").params[-1]
    alice.send("TOPIC #l :" + "b" * (510 - len("TOPIC #l :")))  # exactly 512 with CRLF
    assert bob.expect("TOPIC").params[1].startswith("b")  # the long one was never executed
    bob.sync()
    assert not [m for m in bob.drain() if m.verb == "TOPIC"]


def test_client_tags_over_4094_bytes_get_417_and_are_not_delivered(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    caps = ("message-tags",)
    alice, bob = srv.client("alice", caps), srv.client("bob", caps)
    alice.join("#t")
    bob.join("#t")
    alice.expect("JOIN")
    # '@' + "+x=" + value + ' ' = 4095 bytes: one too many
    alice.send("@+x=" + "y" * (4095 - 5) + " TAGMSG #t")
    assert alice.expect("417")
    ok = "@+x=" + "z" * (4094 - 5) + " TAGMSG #t"  # 4094: the most a client may send
    alice.send(ok)
    got = bob.expect("TAGMSG")
    assert got.tags["+x"].startswith("z")
    bob.sync()
    assert not [m for m in bob.drain() if m.verb == "TAGMSG"]


# -- STATUSMSG ---------------------------------------------------------------------------
def test_statusmsg_reaches_only_ops_and_voiced(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    op = srv.client("op", ("echo-message",))
    op.join("#s")
    voiced, plain, op2 = srv.client("voiced"), srv.client("plain"), srv.client("optwo")
    for c in (voiced, plain, op2):
        c.join("#s")
    op.send("MODE #s +vo voiced optwo")
    for c in (op, voiced, plain, op2):
        c.expect(lambda m: m.verb == "MODE" and m.params[1] == "+vo")
    op.send("PRIVMSG @#s :ops only")
    got = op2.expect("PRIVMSG")
    assert got.params == ("@#s", "ops only")
    assert op.expect("PRIVMSG").params == ("@#s", "ops only")  # the echo, once
    voiced.send("PRIVMSG +#s :voice and up")
    assert op.expect("PRIVMSG").params == ("+#s", "voice and up")
    assert op2.expect("PRIVMSG").params == ("+#s", "voice and up")
    # the plain member saw neither; voiced saw only its own (not echoed: no echo-message)
    op.send("PRIVMSG #s :everyone")
    assert plain.expect("PRIVMSG").params == ("#s", "everyone")
    assert voiced.expect("PRIVMSG").params == ("#s", "everyone")
    assert op.expect("PRIVMSG").params == ("#s", "everyone")  # its echo
    plain.sync()
    voiced.sync()
    assert not [m for m in plain.drain() if m.verb == "PRIVMSG"]
    assert not [m for m in voiced.drain() if m.verb == "PRIVMSG"]
    op.sync()
    assert not [m for m in op.drain() if m.verb == "PRIVMSG"]
    assert "STATUSMSG=@+" in [p for m in op.seen if m.verb == "005" for p in m.params[1:-1]]


# -- WHO, WHOX, WHOWAS ----------------------------------------------------------------------
def who_nicks(c: IRCClient, line: str) -> list[str]:
    c.send(line)
    return [m.params[5] for m in collect(c, "315") if m.verb == "352"]


def test_who_invisible_user_visible_only_to_those_sharing_a_channel(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    inv, friend, outsider = srv.client("inv"), srv.client("friend"), srv.client("outsider")
    inv.send("MODE inv +i")
    inv.expect("MODE")
    inv.join("#w")
    friend.join("#w")
    assert who_nicks(friend, "WHO inv") == ["inv"]
    assert sorted(who_nicks(friend, "WHO #w")) == ["friend", "inv"]
    assert who_nicks(outsider, "WHO inv") == []
    assert who_nicks(outsider, "WHO #w") == ["friend"]


def test_whox_with_flags_before_percent(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    acct = srv.client("acct")
    acct.send("REGISTER * * hunter2hunter2")
    acct.expect(lambda m: m.verb == "REGISTER" and m.params[0] == "SUCCESS")
    acct.join("#c")
    bot = srv.client("bot")
    bot.join("#c")
    bot.send("WHO #c n%afhinrstu,735")
    rows = [m for m in collect(bot, "315") if m.verb in ("352", "354")]
    assert rows and all(m.verb == "354" for m in rows)
    # fields in WHOX order after the asker's nick: t u i h s n f a r
    by_nick = {m.params[6]: m for m in rows}
    row = by_nick["acct"]
    assert row.params[1] == "735"
    assert row.params[8] == "acct"  # the account
    assert row.params[9] == "Real acct"
    assert by_nick["bot"].params[8] == "0"


def test_whowas_count_and_end(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    asker = srv.client("asker")
    for i in range(3):
        c = srv.client(f"gone{i}")
        c.send("NICK gone")
        c.expect("NICK")
        c.send("QUIT")
        c.wait_closed()
    def whowas(line: str) -> list[str]:
        asker.send(line)
        return [m.verb for m in collect(asker, "369") if m.verb in ("314", "369", "406")]
    assert whowas("WHOWAS gone 2") == ["314", "314", "369"]
    assert whowas("WHOWAS gone") == ["314", "314", "314", "369"]
    assert whowas("WHOWAS gone \u0662") == ["314", "314", "314", "369"]  # Arabic-Indic 2: not a count
    assert whowas("WHOWAS nobody-ever 1") == ["406", "369"]


# -- LIST / ELIST -----------------------------------------------------------------------------
def list_names(c: IRCClient, line: str) -> list[str]:
    c.send(line)
    return sorted(m.params[1] for m in collect(c, "323") if m.verb == "322")


def test_list_elist_conditions(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    a, b = srv.client("a"), srv.client("b")
    for name in ("#apple", "#avocado", "#banana"):
        a.join(name)
    b.join("#banana")
    a.send("NICK a2")
    assert list_names(a, "LIST") == ["#apple", "#avocado", "#banana"]
    assert list_names(a, "LIST #a*") == ["#apple", "#avocado"]
    assert list_names(a, "LIST !#a*") == ["#banana"]
    assert list_names(a, "LIST #a*,!#av*") == ["#apple"]
    assert list_names(a, "LIST >1") == ["#banana"]
    assert list_names(a, "LIST <2") == ["#apple", "#avocado"]
    a.send("LIST >\u0661")  # not an ASCII number: the command's error reply (issue #15's one rule)
    assert a.expect("400").params[1] == "LIST"
    tokens = [p for m in a.seen if m.verb == "005" for p in m.params[1:-1]]
    elist = next(t for t in tokens if t.startswith("ELIST="))[6:]
    assert set(elist) <= set("MNU")


# -- registration and user modes ---------------------------------------------------------------
def test_non_utf8_username_gets_an_answer(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    c = srv.client()
    c.send(b"NICK latin\r\nUSER \xff\xe9 0 * :R\xe9al\r\n")
    welcome = c.expect("001")
    assert welcome.params[0] == "latin"
    c.send("WHOIS latin")
    user = c.expect("311")
    assert user.params[2].isascii() and user.params[2].startswith("~")


def test_user_mode_change_comes_from_full_prefix(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    c = srv.client("moder")
    c.send("MODE moder +iw")
    m = c.expect("MODE")
    assert m.source is not None and m.source.startswith("moder!~moder@")
    assert m.params == ("moder", "+iw")


def test_whois_self_without_modes_sends_no_379(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    c = srv.client("plainuser")
    c.send("WHOIS plainuser")
    got = collect(c, "318")
    assert "379" not in [m.verb for m in got]
    c.send("MODE plainuser +i")
    c.expect("MODE")
    c.send("WHOIS plainuser")
    modes = [m for m in collect(c, "318") if m.verb == "379"]
    assert modes and modes[0].params[-1].endswith("+i")
