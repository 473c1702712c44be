"""HELP and HELPOP (Modern IRC): 704 RPL_HELPSTART, 705 RPL_HELPTXT lines,
706 RPL_ENDOFHELP; 524 ERR_HELPNOTFOUND for a subject we know nothing about.

Everything said comes from the command table (:data:`server.irc.commands.COMMANDS`):
the index lists its verbs, and ``HELP <verb>`` shows that handler's docstring.
A command added to the table is in the help at once.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from server.irc.commands import COMMANDS, command
from server.protocol import Message
from server.protocol import numerics as N

if TYPE_CHECKING:
    from server.irc.client import Client

INDEX_WIDTH = 72  # characters of verbs per line of the index


def index_lines() -> list[str]:
    """The help without a subject: every command, in a few lines."""
    verbs = " ".join(sorted(COMMANDS))
    return ["Chat-room help. Commands (HELP <command> tells more about one):",
            *textwrap.wrap(verbs, INDEX_WIDTH), "Operator commands answer only IRC operators."]


def topic_lines(verb: str) -> list[str] | None:
    cmd = COMMANDS.get(verb)
    if cmd is None or not cmd.help:
        return None
    return cmd.help.splitlines()


def _subject(raw: str) -> str:
    """The subject to echo: as asked, unless it cannot be a middle parameter."""
    return raw if raw and not raw.startswith(":") and " " not in raw else "*"


@command("HELP", pre_registration=True)
def help_(s: Client, msg: Message) -> None:
    """HELP [<command>]
    Without a command: the list of commands. With one: its syntax and what it does.
    HELPOP is the same command."""
    raw = msg.params[0] if msg.params else ""
    if not raw:
        subject, lines = "*", index_lines()
    else:
        found = topic_lines(raw.upper())
        if found is None:
            s.numeric(N.ERR_HELPNOTFOUND, _subject(raw), "No help available on this topic")
            return
        subject, lines = raw.upper(), found  # the verb as the table spells it
    replies: list[tuple[str, ...]] = [(N.RPL_HELPSTART, subject, lines[0])]
    replies += [(N.RPL_HELPTXT, subject, line) for line in lines[1:]]
    replies.append((N.RPL_ENDOFHELP, subject, "End of /HELP"))
    s.numerics(replies)


@command("HELPOP", pre_registration=True)
def helpop(s: Client, msg: Message) -> None:
    """HELPOP [<command>]
    The same as HELP: the list of commands, or the syntax of one and what it does."""
    help_(s, msg)
