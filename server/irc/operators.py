"""IRC operators: OPER, KILL, WALLOPS, KLINE, UNKLINE, REHASH."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import TYPE_CHECKING

from server.irc.commands import command
from server.irc.logins import LoginRefused, check
from server.ops.passwords import dummy_hash, verify_password
from server.protocol import (
    Message,
    RemoteProtocolError,
    mask_match,
    parse_int,
)
from server.protocol import (
    numerics as N,
)
from server.state.shared import shared

if TYPE_CHECKING:
    from server.irc.client import Client


log = logging.getLogger(__name__)

MAX_KLINE_MINUTES = 10_000_000  # about 19 years

# -- operators ------------------------------------------------------------------
def require_oper(s: Client) -> None:
    if "o" not in s.modes:
        raise RemoteProtocolError(N.ERR_NOPRIVILEGES, text="Permission Denied- You're not an IRC operator")


@command("OPER", 2)
def oper(s: Client, msg: Message) -> None:
    """OPER <name> <password>
    Becomes an IRC operator, if an [[oper]] block of the server's configuration matches."""
    name, password = msg.params[0], msg.params[1]
    block = next((b for b in s.config.opers if b.get("name") == name), None)
    # an unknown name is checked against a dummy hash: it takes as long as a known one
    known = block is not None
    stored = str(block.get("password", "")) if block is not None else dummy_hash()
    try:
        ok = check(s, "oper:" + name, lambda: verify_password(password, stored) and known)
    except LoginRefused as exc:
        raise RemoteProtocolError(N.ERR_PASSWDMISMATCH, text=f"Password incorrect: {exc.text}") from None
    if not ok:
        log.warning("failed OPER attempt as %r from %s", name, s.ip)
        raise RemoteProtocolError(N.ERR_PASSWDMISMATCH, text="Password incorrect")
    assert block is not None
    hostmask = str(block.get("hostmask", "*@*"))
    if not any(mask_match(hostmask, f"{s.user}@{h}") for h in (s.host, s.ip)):
        log.warning("OPER %r from %s refused by its host mask", name, s.ip)
        raise RemoteProtocolError(N.ERR_NOOPERHOST, text="No O-lines for your host")
    s.modes = shared(s.modes | {"o", "w"})
    s.notify("set_user_mode", s.sid, "o", True)
    log.info("%s (%s) is now an operator (%s)", s.nick, s.ip, name)
    s.numeric(N.RPL_YOUREOPER, "You are now an IRC operator")
    s.send(Message("MODE", (s.nick, "+ow"), s.nick))


@command("KILL", 1)
def kill(s: Client, msg: Message) -> None:
    """KILL <nick> [<reason>]
    Disconnects a user (operators only)."""
    require_oper(s)
    reason = msg.params[1] if len(msg.params) > 1 and msg.params[1] else "No reason"
    s.request("kill", s.sid, msg.params[0], reason)


@command("WALLOPS", 1)
def wallops(s: Client, msg: Message) -> None:
    """WALLOPS <text>
    Sends a message to every user with +w (operators only)."""
    require_oper(s)
    s.request("wallops", s.sid, msg.params[0])


@command("KLINE")
def kline(s: Client, msg: Message) -> None:
    """KLINE [<minutes>] <user@host> [<reason>]
    Bans matching users from the server, for that long or for good, and disconnects those online
    (operators only). KLINE alone lists the bans."""
    require_oper(s)
    params = list(msg.params)
    if not params:
        now = time.time()
        for mask, reason, by, _, expires in s.request("list_klines", s.sid):
            left = f"{int((expires - now) // 60)} more minutes" if expires else "permanent"
            s.send(Message("NOTICE", (s.nick, f"K-Line {mask} by {by} ({left}): {reason}"), s.config.server_name))
        s.send(Message("NOTICE", (s.nick, "End of K-Lines"), s.config.server_name))
        return
    minutes = 0
    if len(params) > 1 and not any(c.isalpha() or c in ".:@*?/" for c in params[0]):
        # not a mask (no letters, no address or wildcard characters): the duration
        duration = parse_int(params.pop(0), 0, MAX_KLINE_MINUTES)
        if duration is None:
            raise RemoteProtocolError(N.ERR_UNKNOWNERROR, "KLINE",
                                      text=f"Invalid duration: minutes from 0 (permanent) to {MAX_KLINE_MINUTES}")
        minutes = duration
    mask = params[0]
    reason = params[1] if len(params) > 1 and params[1] else "No reason"
    hit = s.request("kline", s.sid, mask, minutes * 60, reason, time.time())
    until = f"for {int(minutes)} minutes" if minutes else "permanently"
    s.send(Message("NOTICE", (s.nick, f"K-Line for {mask} added {until} ({hit} clients disconnected)"),
                   s.config.server_name))


@command("UNKLINE", 1)
def unkline(s: Client, msg: Message) -> None:
    """UNKLINE <user@host>
    Lifts a K-Line (operators only)."""
    require_oper(s)
    removed = s.request("unkline", s.sid, msg.params[0])
    text = f"K-Line for {msg.params[0]} removed" if removed else f"No K-Line for {msg.params[0]}"
    s.send(Message("NOTICE", (s.nick, text), s.config.server_name))


@command("REHASH")
def rehash(s: Client, msg: Message) -> None:
    """REHASH
    Reloads the server's configuration file (operators only)."""
    require_oper(s)
    path = s.config.config or "(no configuration file)"
    s.numeric(N.RPL_REHASHING, path, "Rehashing")
    log.info("REHASH by %s", s.nick)
    os.kill(os.getppid(), signal.SIGHUP)


