"""Connection registration: CAP, PASS, NICK, USER, and PING/PONG/QUIT."""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING

from server.irc.accounts import protect_nick, registration_keys
from server.irc.commands import command
from server.irc.features import (
    CAP_VALUES,
    CHANNEL_MODES,
    CREATED,
    USER_MODES,
    VERSION,
    isupport,
    multiline_value,
    offered_caps,
)
from server.irc.logins import LoginRefused, check
from server.irc.server_info import lusers_replies, motd_replies
from server.protocol import (
    Message,
    RemoteProtocolError,
    is_valid_nick,
    parse_int,
)
from server.protocol import (
    numerics as N,
)
from server.state.shared import shared

if TYPE_CHECKING:
    from server.irc.client import Client


log = logging.getLogger(__name__)

# -- registration ---------------------------------------------------------------
@command("CAP", 1, pre_registration=True)
def cap(s: Client, msg: Message) -> None:
    """CAP LS [302] | CAP LIST | CAP REQ <capabilities> | CAP END
    Negotiates IRCv3 capabilities: LS lists what the server offers, REQ asks for some, END finishes."""
    sub = msg.params[0].upper()
    nick = s.nick
    src = s.config.server_name
    if sub == "LS":
        if not s.registered:
            s.cap_negotiating = True
        if len(msg.params) > 1:
            version = parse_int(msg.params[1])
            if version is None:
                raise RemoteProtocolError(N.ERR_INVALIDCAPCMD, "LS", text="Invalid CAP version")
            s.cap_version = max(s.cap_version, version)
        if s.cap_version >= 302:
            s.caps = shared(s.caps | {"cap-notify"})
        caps = offered_caps(s.config)
        if s.cap_version >= 302:
            values = {**CAP_VALUES, "draft/account-registration": ",".join(registration_keys(s)),
                      "draft/multiline": multiline_value(s.config) or ""}
            offered = " ".join(f"{c}={values[c]}" if values.get(c) else c for c in caps)
        else:
            offered = " ".join(caps)
        s.send(Message("CAP", (nick, "LS", offered), src))
    elif sub == "LIST":
        s.send(Message("CAP", (nick, "LIST", " ".join(sorted(s.caps))), src))
    elif sub == "REQ":
        if not s.registered:
            s.cap_negotiating = True
        wanted = msg.params[1].split() if len(msg.params) > 1 else []
        names = [w.lstrip("-") for w in wanted]
        caps = offered_caps(s.config)
        ok = all(n in caps for n in names)
        s.send(Message("CAP", (nick, "ACK" if ok else "NAK", " ".join(wanted)), src))
        if ok:
            held = set(s.caps)
            for w in wanted:
                if w.startswith("-"):
                    held.discard(w[1:])
                else:
                    held.add(w)
            s.caps = shared(frozenset(held))
            s.caps_changed()
    elif sub == "END":
        if not s.registered:
            s.cap_negotiating = False
            try_register(s)
    else:
        raise RemoteProtocolError(N.ERR_INVALIDCAPCMD, msg.params[0], text="Invalid CAP command")


@command("PASS", 1, pre_registration=True)
def pass_(s: Client, msg: Message) -> None:
    """PASS <password>
    Gives the server password, before NICK and USER."""
    if s.registered:
        raise RemoteProtocolError(N.ERR_ALREADYREGISTERED, text="You may not reregister")
    s.password = msg.params[0]


@command("NICK", 0, pre_registration=True)
def nick(s: Client, msg: Message) -> None:
    """NICK <nick>
    Chooses your nick, or changes it."""
    if not msg.params or not msg.params[0]:
        raise RemoteProtocolError(N.ERR_NONICKNAMEGIVEN, text="No nickname given")
    new = msg.params[0]
    if not is_valid_nick(new, s.config.nick_len):
        raise RemoteProtocolError(N.ERR_ERRONEUSNICKNAME, new, text="Erroneous nickname")
    if new == s.nick:
        return
    if s.registered and (wait := s.nick_change_wait()):
        # ERR_NICKTOOFAST (438): not in Modern IRC, but what ratbox/solanum send and clients show
        raise RemoteProtocolError("438", new, text=f"Nick change too fast. Please wait {wait} seconds")
    if not s.registered and not msg.tags:
        # Claimed together with the registration when USER comes next in the
        # same read (one registry request instead of two), else before
        # anything else is handled (see flush_nick).
        s.nick_pending = new
        return
    _claim_nick(s, new)


def _claim_nick(s: Client, new: str) -> None:
    _, _, protected = s.request("claim_nick", s.sid, new)
    s.nick = new
    s.nick_claimed = True
    if not s.registered:
        try_register(s)
    else:
        protect_nick(s, protected)


def flush_nick(s: Client) -> None:
    """Claim a nick that NICK left pending: before any command but USER, and
    before the client's thread waits for more input."""
    new, s.nick_pending = s.nick_pending, None
    if new is None:
        return
    try:
        _claim_nick(s, new)
    except RemoteProtocolError as exc:
        s.error(exc)


@command("USER", 4, pre_registration=True)
def user(s: Client, msg: Message) -> None:
    """USER <username> 0 * <realname>
    Completes registration, with NICK."""
    if s.registered:
        raise RemoteProtocolError(N.ERR_ALREADYREGISTERED, text="You may not reregister")
    # ASCII only: str.isalnum() would also keep "ÿ" and other letters
    username = "".join(c for c in msg.params[0] if (c.isascii() and c.isalnum()) or c in "-_.[]{}|^`")
    username = username[: s.config.user_len - 1] or "user"  # nothing usable left: a placeholder
    if not msg.params[3]:
        raise RemoteProtocolError(N.ERR_NEEDMOREPARAMS, "USER", text="Not enough parameters")
    s.user = "~" + username
    s.realname = msg.params[3]
    try_register(s)


def try_register(s: Client) -> None:
    if s.registered or not s.user or s.cap_negotiating:
        return
    pending = s.nick_pending
    if not s.nick_claimed and pending is None:
        return
    cfg = s.config
    if cfg.password:
        given, wanted = (s.password or "").encode(), cfg.password.encode()
        try:
            ok = check(s, None, lambda: hmac.compare_digest(given, wanted), hashing=False)
        except LoginRefused as exc:
            s.numeric(N.ERR_PASSWDMISMATCH, f"Password incorrect: {exc.text}")
            s.close("Bad password")
            return
        if not ok:
            log.info("client %s gave a wrong server password", s.ip)
            s.numeric(N.ERR_PASSWDMISMATCH, "Password incorrect")
            s.close("Bad password")
            return
    s.nick_pending = None
    banned: RemoteProtocolError | None = None
    try:
        # with a pending nick, the registry claims it first (433 if taken)
        lusers_data = s.request("register", s.sid, s.user, s.realname, time.time(), s.account, pending)
    except RemoteProtocolError as exc:
        if exc.numeric != N.ERR_YOUREBANNEDCREEP:
            raise
        banned = exc  # the nick was claimed before the ban was found
    if pending is not None:
        s.nick, s.nick_claimed = pending, True
    if banned is not None:
        s.error(banned)
        s.close(banned.text)
        return
    s.registered = True
    s.caps_changed()
    log.info("client %s:%d registered as %s", s.ip, s.port, s.nick)
    replies: list[tuple[str, ...]] = [
        (N.RPL_WELCOME, f"Welcome to the {cfg.network} IRC Network {s.prefix}"),
        (N.RPL_YOURHOST, f"Your host is {cfg.server_name}, running version {VERSION}"),
        (N.RPL_CREATED, f"This server was created {CREATED}"),
        (N.RPL_MYINFO, cfg.server_name, VERSION, USER_MODES, CHANNEL_MODES, "beIklov"),
    ]
    tokens = isupport(s)
    for i in range(0, len(tokens), 12):
        replies.append((N.RPL_ISUPPORT, *tokens[i:i + 12], "are supported by this server"))
    if s.host != s.ip:
        replies.append((N.RPL_HOSTHIDDEN, s.host, "is now your displayed host"))
    replies += lusers_replies(s, lusers_data)
    replies += motd_replies(s)
    s.numerics(replies)
    protect_nick(s, lusers_data["protected"])


# -- connection -----------------------------------------------------------------
@command("PING", 1, pre_registration=True)
def ping(s: Client, msg: Message) -> None:
    """PING <token>
    Asks the server for a PONG with the same token."""
    src = s.config.server_name
    s.send(Message("PONG", (src, msg.params[0]), src))


@command("PONG", 0, pre_registration=True)
def pong(s: Client, msg: Message) -> None:
    """PONG <token>
    Answers the server's PING."""
    s.ping_sent = None


@command("QUIT", 0, pre_registration=True)
def quit_(s: Client, msg: Message) -> None:
    """QUIT [<reason>]
    Disconnects; the people who share a channel with you see the reason."""
    reason = msg.params[0] if msg.params else ""
    reason = f"Quit: {reason}" if reason else "Quit"
    # Forget the client before the socket closes: once a client sees its
    # connection end after QUIT, its nick is free again.
    s.request("disconnect", s.sid, reason)
    s.forgotten = True
    s.close(reason)


