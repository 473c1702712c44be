"""The one entry point from a client's thread: :func:`dispatch` checks a message
against the command table (registered? enough parameters?) and runs its handler."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.irc.commands import COMMANDS, Command
from server.irc.registration import flush_nick
from server.protocol import LocalProtocolError, Message, RemoteProtocolError
from server.protocol import numerics as N

if TYPE_CHECKING:
    from server.process.session import Session

log = logging.getLogger(__name__)


def dispatch(s: Session, msg: Message) -> None:
    verb = msg.verb
    if s.nick_pending is not None and verb != "USER":
        flush_nick(s)  # a NICK waits for the USER after it, and for nothing else
    cmd = COMMANDS.get(verb)
    try:
        if cmd is None:
            if not s.registered:
                raise RemoteProtocolError(N.ERR_NOTREGISTERED, text="You have not registered")
            raise RemoteProtocolError(N.ERR_UNKNOWNCOMMAND, msg.command, text="Unknown command")
        if not s.registered and not cmd.pre_registration:
            raise RemoteProtocolError(N.ERR_NOTREGISTERED, text="You have not registered")
        if len(msg.params) < cmd.min_params:
            raise RemoteProtocolError(N.ERR_NEEDMOREPARAMS, verb, text="Not enough parameters")
        label = msg.tags.get("label")
        if label and "labeled-response" in s.caps:
            s.labeled(label, lambda: _run(cmd, s, msg))
        else:
            cmd.handler(s, msg)
    except RemoteProtocolError as exc:
        answer(s, exc)
    except LocalProtocolError:
        # A reply we could not put on the wire (our bug, or input the codec let
        # through): answer, never drop the client for it.
        log.exception("%s: reply to %s could not be formatted", s.ip, verb)
        s.error(RemoteProtocolError(N.ERR_UNKNOWNERROR, verb, text="Could not process that command"))


def _run(cmd: Command, s: Session, msg: Message) -> None:
    try:
        cmd.handler(s, msg)
    except RemoteProtocolError as exc:
        answer(s, exc)


def answer(s: Session, exc: RemoteProtocolError) -> None:
    """The error reply; when a parameter echoed from the client cannot be put on
    the wire (a space in a middle parameter), the reply without the echo."""
    try:
        s.error(exc)
    except LocalProtocolError:
        s.error(RemoteProtocolError(exc.numeric, *exc.params[:2 if exc.numeric == "FAIL" else 0], text=exc.text))


