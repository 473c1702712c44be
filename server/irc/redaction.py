"""IRCv3 ``draft/message-redaction``: ``REDACT <target> <msgid> [:reason]``.

The client thread finds the message in history (after a barrier, so anything
published before is readable) and decides whether the asker sent it: the
row's ``account`` tag against the asker's account, else the row's
``nick!user@host`` against the asker's. The registry then checks the rest
atomically (membership, channel operator, the window) and emits the REDACT to
the message's audience; the bus deletes the history row in the same commit
that releases the REDACT, so CHATHISTORY no longer returns the message.

The sender may redact within ``redact_window`` seconds (0: any time); channel
operators and IRC operators may redact any message of their channel. Only
stored messages can be redacted (a channel with history off has none):
``UNKNOWN_MSGID`` otherwise.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from server.irc.commands import command
from server.protocol import Message, RemoteProtocolError, casefold, parse, unescape_tag_value

if TYPE_CHECKING:
    from server.irc.client import Client


def fail(code: str, *context: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError.fail("REDACT", code, *context, text=text)


def sent_by(s: Client, tags: str, line: str) -> bool:
    """Whether the stored message (its tags and line) is ``s``'s own."""
    account = next((unescape_tag_value(t[8:]) for t in tags.split(";") if t.startswith("account=")), None)
    if account is not None:
        return s.account is not None and casefold(s.account) == casefold(account)
    source = parse(line).source or ""
    nick, _, userhost = source.partition("!")
    return casefold(nick) == casefold(s.nick) and userhost == f"{s.user}@{s.host}"


@command("REDACT", 2)
def redact(s: Client, msg: Message) -> None:
    """REDACT <target> <msgid> [:<reason>]
    Deletes a message (IRCv3 draft/message-redaction): your own for a while after you sent it, or
    anyone's in a channel where you are an operator. Clients that support it hide the message, and
    CHATHISTORY no longer returns it."""
    target, msgid = msg.params[0], msg.params[1]
    reason = msg.params[2] if len(msg.params) > 2 else ""
    access = s.request("history_target", s.sid, target)
    if access is None:
        raise fail("INVALID_TARGET", target, text=f"You cannot delete messages from {target}")
    key = access[0]
    s.request("history_barrier")
    row = s.worker.get_store().history_row(key, msgid)
    if row is None:
        raise fail("UNKNOWN_MSGID", target, msgid, text="This message does not exist or is too old")
    when, tags, line = row
    window = s.config.redact_window
    expired = window > 0 and time.time() - when > window
    s.request("redact", s.sid, target, key, msgid, reason, sent_by(s, tags, line), expired, f"{window:g}")
