"""HELP and HELPOP (Modern IRC 704/705/706, 524), and the rule that keeps the help
in step with the command table: every command's handler carries its help text."""

from __future__ import annotations

import pytest

from server.irc import help as help_mod
from server.irc.commands import COMMANDS
from server.protocol import Message
from tests.conftest import Server
from tests.ircclient import IRCClient


def help_reply(c: IRCClient, line: str) -> list[Message]:
    """Send a HELP line; return everything from 704 to 706 (or the lone 524)."""
    c.send(line)
    first = c.expect(lambda m: m.verb in ("704", "524"))
    if first.verb == "524":
        return [first]
    out = [first]
    while out[-1].verb != "706":
        out.append(c.expect(lambda m: m.verb in ("705", "706")))
    return out


def test_every_command_has_help_text() -> None:
    missing = sorted(verb for verb, cmd in COMMANDS.items() if not cmd.help)
    assert missing == [], f"give these handlers a docstring (their HELP text): {missing}"
    for verb, cmd in COMMANDS.items():
        first = cmd.help.splitlines()[0]
        assert first.split()[0] == verb, f"{verb}: the help's first line is its syntax: {first!r}"
        assert len(cmd.help.splitlines()) >= 2, f"{verb}: say what the command does after the syntax"
        # each line goes out as one numeric: it must fit the 512-byte line
        assert all(len(line.encode()) <= 400 for line in cmd.help.splitlines()), verb


def test_index_lists_every_verb_of_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    listed = " ".join(help_mod.index_lines()).split()
    assert set(COMMANDS) <= set(listed)
    # generated from the table: a new command shows up without touching the help
    monkeypatch.setitem(COMMANDS, "FROBNICATE", COMMANDS["TIME"]._replace(help="FROBNICATE\nFrobs."))
    assert "FROBNICATE" in " ".join(help_mod.index_lines()).split()
    assert help_mod.topic_lines("FROBNICATE") == ["FROBNICATE", "Frobs."]


@pytest.mark.parametrize("verb", ["HELP", "HELPOP"])
def test_help_without_subject_is_the_index(server: Server, verb: str) -> None:
    c = server.client("alice")
    got = help_reply(c, verb)
    assert got[0].verb == "704" and got[-1].verb == "706"
    assert all(m.verb == "705" for m in got[1:-1])
    assert {m.params[1] for m in got} == {"*"}
    words = " ".join(m.params[2] for m in got).split()
    assert {"PRIVMSG", "JOIN", "WHOIS", "HELP", "CHATHISTORY"} <= set(words)


@pytest.mark.parametrize("verb", ["HELP", "HELPOP"])
def test_help_on_a_command(server: Server, verb: str) -> None:
    c = server.client("alice")
    got = help_reply(c, f"{verb} privmsg")
    assert got[0].verb == "704" and got[0].params[1:] == ("PRIVMSG", COMMANDS["PRIVMSG"].help.splitlines()[0])
    assert [m.params[2] for m in got[1:-1]] == COMMANDS["PRIVMSG"].help.splitlines()[1:]
    assert got[-1].verb == "706" and got[-1].params[1] == "PRIVMSG"
    # every command of the table answers with its own text
    for name in ("KLINE", "CAP", "SETNAME"):
        lines = help_reply(c, f"{verb} {name}")
        assert lines[0].params[2] == COMMANDS[name].help.splitlines()[0]


def test_help_unknown_subject_is_524(server: Server) -> None:
    c = server.client("alice")
    got = help_reply(c, "HELP THISISNOTACOMMAND")
    assert len(got) == 1 and got[0].params[1:] == ("THISISNOTACOMMAND", "No help available on this topic")
    c.send("HELP ::x")  # a subject that cannot be echoed as a middle parameter
    assert c.expect("524").params[1] == "*"
    c.sync()


def test_help_before_registration_and_labeled(server: Server) -> None:
    c = server.client()
    c.send("HELP NICK")
    assert c.expect("704").params[1:] == ("NICK", "NICK <nick>")
    c.expect("706")
    c.register("bob", caps=("labeled-response", "batch"))
    c.send("@label=h1 HELP JOIN")
    start = c.expect("BATCH")
    assert start.tags["label"] == "h1" and start.params[1] == "labeled-response"
    assert c.expect("704").tags["batch"] == start.params[0][1:]
    c.expect("706")
