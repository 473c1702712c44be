"""Every command in the table, with generated parameters, on a live server.

hypothesis picks a verb from ``server.irc.commands.COMMANDS`` (all of them),
a sender (an IRC operator who is also channel operator of ``#f``, an ordinary
user, or a client that has not registered) and up to six parameters drawn from
odd numbers (``²``, ``٣``, ``-1``, 30 digits, ``1_000``...), the words commands
expect (subcommands, channels, nicks, masks, mode strings, LIST conditions)
and random text. After each line the sender round-trips a PING; the test fails
on any traceback or ERROR in the server log, and on any "Internal error" a
client is sent: bad input gets the command's error reply, never a crash.

Senders that a command ends (QUIT, KILL, a K-line) are replaced by fresh ones.
K-lines that would match the test's own clients are not generated: they would
lock the test out, not test anything more.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import server.irc  # noqa: F401  (loads every handler into the table)
from server.irc.commands import COMMANDS
from server.ops.passwords import hash_password
from server.protocol import RemoteProtocolError, as_middle, error_reply, mask_match, parse_int
from tests.conftest import Server
from tests.ircclient import IRCClient

VERBS = sorted(COMMANDS)

NUMBERS = ["0", "1", "5", "302", "-1", "+5", "²", "٣", "\uff11", "1_000", "0x10", "1e3", "007", "2147483648",
           "9" * 18, "9" * 19, "1" * 30, "-" + "9" * 30]
WORDS = [
    "*", "#f", "#nope", "#f,#g", "0", "fzop", "fzuser", "nobody", "NickServ", "ChanServ", "*!*@*", "fz*!*@*",
    "*@127.0.0.9", "*!*@127.0.0.9", "~x@10.1.1.1", "10.2.0.0/16",
    "LS", "LIST", "REQ", "END", "ACK", "PLAIN", "EXTERNAL", "+", "root", "hunter2",
    "LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN", "TARGETS", "timestamp=2020-01-01T00:00:00.000Z",
    "msgid=abc", "timestamp=²",
    "+b", "-b", "+l", "-l", "+k", "-k", "+o", "-o", "+v", "+beI", "+imnst", "+lk", "+ll", "-lk", "+i", "+w", "+x",
    "%tnuhiafr", "%t,42", "%t,²", "o",
    "IDENTIFY", "REGISTER", "LOGOUT", "INFO", "DROP", "SET", "PASSWORD", "HISTORY", "ON", "OP", "HELP",
    "p", "s", "c", "u", "z", ">", "<", ">1,<5", "message-tags", "sasl", "-echo-message",
    "a:*", "a:fz*", "m:*!*@*", "m:a:*", "m:m:x", "z:x", "a:", "m:", "C", "L", "S",
]
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\0 "), min_size=1, max_size=10)
number = st.sampled_from(NUMBERS)
middle = st.one_of(
    number, st.sampled_from(WORDS), text,
    st.tuples(st.sampled_from("<>"), number).map("".join),  # LIST conditions
    st.lists(st.one_of(number, st.sampled_from(WORDS)), min_size=2, max_size=4).map(",".join),
).filter(lambda p: not p.startswith(":"))
trailing = st.one_of(middle, st.just(""), st.lists(middle, min_size=2, max_size=3).map(" ".join))

OWN_USERS = ("~fzop@127.0.0.1", "~fzuser@127.0.0.1", "~fzpre@127.0.0.1")
BAD_LOG = re.compile(r"Traceback|Exception in thread|^\S+ \S+ (ERROR|CRITICAL) ")


# What each position of some commands usually holds, so that generated lines
# get past the first checks often enough to reach the numbers behind them.
CHANNELS = ["#f", "#nope", "#f,#nope", "0", "*"]
NICKS = ["fzop", "fzuser", "nobody", "NickServ", "*"]
COND = st.tuples(st.sampled_from("<>"), number).map("".join)
MODES = ["+l", "-l", "+lk", "+ll", "+b", "+beI", "+bbb", "+eI", "+o", "+v", "+k", "+imnst", "-o", "+l-l", "+i", "+w",
         "b", "l"]
SHAPES: dict[str, list[st.SearchStrategy[str]]] = {
    "CAP": [st.sampled_from(["LS", "REQ", "LIST", "END", "ACK", "NEW"]), number],
    "LIST": [st.one_of(COND, st.sampled_from(CHANNELS)), COND],
    "MODE": [st.sampled_from(CHANNELS + NICKS), st.sampled_from(MODES), number, number],
    "KLINE": [number, st.sampled_from(["*@10.1.1.1", "x@192.0.2.1", "10.9.0.0/16", "nobody@*"]), text],
    "CHATHISTORY": [st.sampled_from(["LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN", "TARGETS"]),
                    st.sampled_from(CHANNELS + NICKS + ["timestamp=2020-01-01T00:00:00.000Z"]),
                    st.sampled_from(["*", "timestamp=2020-01-01T00:00:00.000Z", "msgid=abc", "timestamp=²"]),
                    number, number],
    "WHO": [st.sampled_from(CHANNELS + NICKS), st.sampled_from(["%tnuhiafr", "%t,42", "%t,²", "o", "%"])],
    "WHOWAS": [st.sampled_from(NICKS), number, number],
    "STATS": [st.sampled_from([*"pscuz", "", "pp"]), number],
    "JOIN": [st.sampled_from(CHANNELS), number],
    "KICK": [st.sampled_from(CHANNELS), st.sampled_from(NICKS), number],
    "TOPIC": [st.sampled_from(CHANNELS), number],
    "OPER": [st.sampled_from(["root", "nobody", "²"]), st.sampled_from(["hunter2", "wrong", "²"])],
    "AUTHENTICATE": [st.sampled_from(["PLAIN", "EXTERNAL", "+", "*", "AAAA", "=="])],
    "PRIVMSG": [st.sampled_from(CHANNELS + NICKS), st.sampled_from(["IDENTIFY root ²", "INFO", "SET PASSWORD 1",
                                                                   "REGISTER #f", "SET #f HISTORY ²", "OP #f ²"])],
    "USER": [text, number, st.just("*"), text],
    "NICK": [st.one_of(text, number, st.sampled_from(NICKS))],
    "MONITOR": [st.sampled_from(["+", "-", "C", "L", "S", "X", "c"]),
                st.sampled_from([*NICKS, "fzop,fzuser,nobody", "bad!nick,#f", ",,"])],
    "MARKREAD": [st.sampled_from(CHANNELS + NICKS),
                 st.sampled_from(["timestamp=2020-01-01T00:00:00.000Z", "timestamp=2999-01-01T00:00:00Z", "timestamp=²",
                                  "timestamp=", "*", "bogus"])],
    "REDACT": [st.sampled_from(CHANNELS + NICKS), st.one_of(text, number), text],
}


def int_disagrees(text: str) -> bool:
    """Whether ``int()`` takes ``text`` where :func:`parse_int` refuses it."""
    try:
        int(text)
    except ValueError:
        return False
    return parse_int(text) is None


@st.composite
def command_lines(draw: st.DrawFn) -> tuple[str, str]:
    # half the time a command whose parameters have a shape (the numbers hide there)
    verb = draw(st.sampled_from(sorted(SHAPES)) if draw(st.booleans()) else st.sampled_from(VERBS))
    shape = SHAPES.get(verb, [])
    if shape and draw(st.integers(0, 3)) != 0:
        size = draw(st.sampled_from([len(shape), len(shape), *range(1, len(shape) + 1)]))
        params = [draw(st.one_of(pool, middle) if draw(st.integers(0, 4)) == 0 else pool) for pool in shape[:size]]
        params = [p for p in params if p and not p.startswith(":")]
    else:
        params = draw(st.lists(middle, max_size=5))
    if draw(st.booleans()):
        params.append(":" + draw(trailing))
    if verb == "KLINE":  # never lock the test's own clients out
        for p in params:
            mask = p.lstrip(":")
            mask = mask if "@" in mask else "*@" + mask
            assume(not any(mask_match(mask, own) for own in OWN_USERS))
    sender = draw(st.sampled_from(["oper", "user", "unregistered"]))
    return sender, " ".join([verb, *params])


class Senders:
    """The three kinds of sender, reconnected when a command ended them."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.serial = itertools.count()
        self.oper = self._oper()
        self.user = self._registered("fzuser")

    def _registered(self, user: str) -> IRCClient:
        c = IRCClient(self.server.port)
        self.server.clients.append(c)
        return c.register(f"{user}{next(self.serial)}", user=user)

    def _oper(self) -> IRCClient:
        c = self._registered("fzop")
        c.send("OPER root hunter2")
        c.expect("381")
        c.send("JOIN #f")
        c.expect("366")
        return c

    def get(self, kind: str) -> IRCClient:
        if kind == "unregistered":
            c = IRCClient(self.server.port)
            self.server.clients.append(c)
            return c
        if kind == "oper":
            if self.oper.closed:
                self.oper = self._oper()
            return self.oper
        if self.user.closed:
            self.user = self._registered("fzuser")
        return self.user


def internal_errors(clients: list[IRCClient], checked: dict[int, int]) -> list[str]:
    """"Internal error" lines clients got since the last call."""
    out = []
    for c in clients:
        start, checked[id(c)] = checked.get(id(c), 0), len(c.seen)
        out += [m.to_line() for m in c.seen[start:] if "internal error" in " ".join(m.params).lower()]
    return out


def test_every_command_with_generated_parameters(start_server: Callable[..., Server], tmp_path: Path) -> None:
    conf = tmp_path / "ops.toml"
    conf.write_text(f'[[oper]]\nname = "root"\npassword = "{hash_password("hunter2")}"\n')
    server = start_server("--config", str(conf), "--set", "flood_exempt=127.0.0.0/8",
                          "--set", "login_free_attempts=1000000", "--set", "nick_change_burst=0")
    senders = Senders(server)
    seen = [0]
    checked: dict[int, int] = {}

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(command_lines())
    def example(case: tuple[str, str]) -> None:
        kind, line = case
        c = senders.get(kind)
        c.send(line.encode()[:500])
        token = f"fz{next(senders.serial)}"
        c.send(f"PING :{token}")
        try:
            c.expect(lambda m: m.verb == "PONG" and m.params[-1] == token)
        except AssertionError:
            if not c.closed:  # no answer from a live connection: the server is stuck
                raise
        if kind == "unregistered":
            c.close()
        assert server.proc.poll() is None, "the server died"
        bad = [line_ for line_ in server.lines[seen[0]:] if BAD_LOG.search(line_)]
        seen[0] = len(server.lines)
        errors = internal_errors(server.clients, checked)
        assert not bad, f"{line!r} from the {kind}:\n" + "\n".join(bad[:30])
        assert not errors, f"{line!r} from the {kind}: {errors}"

    example()
    # the ordinary user and the operator still work
    user, oper = senders.get("user"), senders.get("oper")
    user.sync()
    oper.sync()
    bad = [line for line in server.lines if BAD_LOG.search(line)]
    assert not bad, "\n".join(bad[:30])


@pytest.mark.parametrize("line, reply", [
    ("CAP LS ²", "410"), ("CAP LS -1", "410"), ("CAP LS " + "3" * 30, "410"),
    ("LIST >²", "400"), ("LIST <-1", "400"), ("LIST >" + "1" * 30, "400"),
    ("MODE #n +l ²", "696"), ("MODE #n +l -1", "696"), ("MODE #n +l " + "5" * 30, "696"), ("MODE #n +l ٣", "696"),
    ("KLINE ² *@10.0.0.1 :x", "400"), ("KLINE -1 *@10.0.0.1 :x", "400"),
    ("KLINE " + "9" * 30 + " *@10.0.0.1 :x", "400"),
])
def test_bad_numbers_get_the_command_error(start_server: Callable[..., Server], tmp_path: Path,
                                           line: str, reply: str) -> None:
    conf = tmp_path / "ops.toml"
    conf.write_text(f'[[oper]]\nname = "root"\npassword = "{hash_password("hunter2")}"\n')
    server = start_server("--config", str(conf), workers=1)
    c = server.client("numbers")
    if line.startswith("KLINE"):
        c.send("OPER root hunter2")
        c.expect("381")
        c.expect("MODE")
    c.join("#n")
    c.send(line)
    err = c.expect(lambda m: m.verb in (reply, "ERROR", "MODE") or (m.verb == "NOTICE" and "K-Line" in m.params[-1]))
    assert err.verb == reply, err.to_line()
    c.sync()
    assert not [x for x in server.lines if BAD_LOG.search(x)]


def test_error_replies_echo_trailing_parameters_validly() -> None:
    """A reply that echoes what a client sent as a trailing parameter (empty,
    with spaces, starting with ':') is still a valid line."""
    for bad in ("", "a b", ":x", " "):
        line = error_reply(RemoteProtocolError("401", bad, text="No such nick/channel"), "srv", "me").to_line()
        assert line.startswith(":srv 401 me ") and line.endswith(" :No such nick/channel")
        assert len(line.split(" ", 4)[3].split(" ")) == 1 and " :No such" in line
    assert as_middle("a b") == "a_b" and as_middle("") == "*" and as_middle("::x") == "x"


@pytest.mark.parametrize("line, reply", [
    ("WHOIS :a b", "401"), ("TAGMSG :0 0", "401"),
    ("MODE :x y", "401"), ("NAMES :a b", "366"), ("TOPIC :a b", "403|442"),
])
def test_regression_trailing_parameters_echoed_in_replies(server: Server, line: str, reply: str) -> None:
    """Found by the generated-parameters test: these crashed the reply (the
    client was cut off with "Internal error", or a whole bus batch of other
    clients' lines was dropped by the subscriber)."""
    c = server.client("echo")
    other = server.client("other")
    c.send(line)
    assert c.expect(reply).params[1:2] != ("",)
    c.send("PRIVMSG other :still here")
    assert other.expect("PRIVMSG").params[1] == "still here"
    assert not [x for x in server.lines if BAD_LOG.search(x)]
