"""IRCv3 ``draft/read-marker``: ``MARKREAD``, kept per account and target.

The markers live in the registry (loaded from and saved to the
``read_markers`` table by the bus, as effects of the batch that changed them),
so every connection of an account, on any worker, gets a change, and a JOIN
is followed by the channel's marker before its NAMES (the registry emits it
with the JOIN). A client that is not logged in has nothing to keep: its get is
answered with ``*`` and a set fails with ``ACCOUNT_REQUIRED``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from server.irc.commands import command
from server.irc.history import parse_timestamp
from server.irc.messaging import server_time
from server.protocol import Message, RemoteProtocolError, is_valid_channel, is_valid_nick

if TYPE_CHECKING:
    from server.irc.client import Client


def fail(code: str, *context: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError.fail("MARKREAD", code, *context, text=text)


@command("MARKREAD")
def markread(s: Client, msg: Message) -> None:
    """MARKREAD <target> [timestamp=<time>]
    Gets or sets where you stopped reading a channel or conversation (IRCv3 draft/read-marker),
    kept for your account: every connection logged in to it hears the change, and joining a
    channel tells you its marker. Setting needs an account; a marker never moves back."""
    if not msg.params or not msg.params[0]:
        raise fail("NEED_MORE_PARAMS", text="Missing parameters")
    target = msg.params[0]
    if not (is_valid_channel(target, "#", s.config.channel_len) or is_valid_nick(target, s.config.nick_len)):
        raise fail("INVALID_PARAMS", target, text="Invalid target")
    timestamp: str | None = None
    if len(msg.params) > 1:
        kind, _, value = msg.params[1].partition("=")
        try:
            if kind != "timestamp":
                raise ValueError(kind)
            when = parse_timestamp(value)
        except (ValueError, OverflowError):
            raise fail("INVALID_PARAMS", msg.params[1], text="Invalid parameters") from None
        if s.account is None:
            raise fail("ACCOUNT_REQUIRED", target, text="You must be logged in to keep read markers")
        timestamp = server_time(min(max(when, 0.0), time.time()))  # never in the future
    value = s.request("markread", s.sid, target, timestamp)
    s.send(Message("MARKREAD", (target, value), s.config.server_name))
