"""The one entry point from a client's thread: :func:`dispatch` checks a message
against the command table (registered? enough parameters?) and runs its handler."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.irc.commands import COMMANDS
from server.irc.multiline import collect
from server.irc.registration import flush_nick
from server.protocol import LocalProtocolError, Message, RemoteProtocolError
from server.protocol import numerics as N

if TYPE_CHECKING:
    from server.irc.client import Client

log = logging.getLogger(__name__)


def dispatch(s: Client, msg: Message | RemoteProtocolError) -> None:
    """Run one line from the client as one unit of output (replies in command
    order; see server/process/session.py): a message, or the codec's error for
    a line it could not take."""
    if s.nick_pending is not None and (isinstance(msg, RemoteProtocolError) or msg.verb != "USER"):
        # a NICK waits for the USER after it, and for nothing else
        s.begin_unit(None)
        try:
            flush_nick(s)
        finally:
            s.end_unit()
    if isinstance(msg, RemoteProtocolError):
        s.begin_unit(None)
        try:
            s.error(msg)
        finally:
            s.end_unit()
        return
    label = msg.tags.get("label") if "labeled-response" in s.caps else None
    s.begin_unit(label or None)
    try:
        run(s, msg)
    finally:
        s.end_unit()


def run(s: Client, msg: Message) -> None:
    verb = msg.verb
    cmd = COMMANDS.get(verb)
    try:
        if "batch" in msg.tags and verb != "BATCH" and s.registered:
            collect(s, msg)  # a line of a client batch (draft/multiline), not a command of its own
            return
        if cmd is None:
            if not s.registered:
                raise RemoteProtocolError(N.ERR_NOTREGISTERED, text="You have not registered")
            raise RemoteProtocolError(N.ERR_UNKNOWNCOMMAND, msg.command, text="Unknown command")
        if not s.registered and not cmd.pre_registration:
            raise RemoteProtocolError(N.ERR_NOTREGISTERED, text="You have not registered")
        if len(msg.params) < cmd.min_params:
            raise RemoteProtocolError(N.ERR_NEEDMOREPARAMS, verb, text="Not enough parameters")
        cmd.handler(s, msg)
    except RemoteProtocolError as exc:
        s.error(exc)  # error_reply makes echoed parameters valid, whatever the client sent
    except LocalProtocolError:
        # A reply we could not put on the wire (our bug, or input the codec let
        # through): answer, never drop the client for it.
        log.exception("%s: reply to %s could not be formatted", s.ip, verb)
        s.error(RemoteProtocolError(N.ERR_UNKNOWNERROR, verb, text="Could not process that command"))
