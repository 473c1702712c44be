"""Channels: JOIN, PART, NAMES, TOPIC, LIST, MODE (channel and user modes), KICK, INVITE."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from server.irc.commands import command
from server.irc.features import FLAG_MODES, LIST_MODES, PARAM_MODES, PREFIX_MODES, SET_PARAM_MODES
from server.irc.history import replay_on_join
from server.protocol import (
    Message,
    RemoteProtocolError,
    casefold,
    is_channel,
    parse_int,
)
from server.protocol import (
    numerics as N,
)
from server.state.shared import toggled

if TYPE_CHECKING:
    from server.irc.client import Client


log = logging.getLogger(__name__)

# -- channels -------------------------------------------------------------------
@command("JOIN", 1)
def join(s: Client, msg: Message) -> None:
    """JOIN <channel>{,<channel>} [<key>{,<key>}]
    Joins the channels (a key for those with +k). JOIN 0 leaves every channel."""
    if msg.params[0] == "0":
        s.request("part_all", s.sid)
        return
    names = msg.params[0].split(",")
    keys = msg.params[1].split(",") if len(msg.params) > 1 else []
    for i, name in enumerate(names):
        if not name:
            continue
        try:
            info = s.request("join", s.sid, name, keys[i] if i < len(keys) else None, time.time())
        except RemoteProtocolError as exc:
            s.error(exc)
            continue
        if info is None:
            continue
        replies: list[tuple[str, ...]] = []
        if info["topic"]:
            replies.append((N.RPL_TOPIC, info["name"], info["topic"]))
            replies.append((N.RPL_TOPICWHOTIME, info["name"], info["topic_by"], str(int(info["topic_at"]))))
        replies += names_replies(s, info)
        s.numerics(replies)
        if info.get("history"):
            replay_on_join(s, casefold(info["name"]), info["name"], info["history_upto"])


def names_replies(s: Client, info: dict[str, Any]) -> list[tuple[str, ...]]:
    multi = "multi-prefix" in s.caps
    uhnames = "userhost-in-names" in s.caps
    entries = []
    for nick_, user_, host_, modes, _away in info["members"]:
        marks = ("@" if "o" in modes else "") + ("+" if "v" in modes else "")
        if not multi:
            marks = marks[:1]
        entries.append(f"{marks}{nick_}!{user_}@{host_}" if uhnames else f"{marks}{nick_}")
    symbol = "@" if info.get("secret") else "="
    name = info["name"]
    out: list[tuple[str, ...]] = []
    # Keep each 353 within the 512-byte line limit.
    room = 400 - len(s.config.server_name) - len(s.nick) - len(name)
    line: list[str] = []
    size = 0
    for entry in entries:
        if line and size + len(entry) + 1 > room:
            out.append((N.RPL_NAMREPLY, symbol, name, " ".join(line)))
            line, size = [], 0
        line.append(entry)
        size += len(entry) + 1
    if line:
        out.append((N.RPL_NAMREPLY, symbol, name, " ".join(line)))
    out.append((N.RPL_ENDOFNAMES, name, "End of /NAMES list"))
    return out


@command("PART", 1)
def part(s: Client, msg: Message) -> None:
    """PART <channel>{,<channel>} [<reason>]
    Leaves the channels."""
    reason = msg.params[1] if len(msg.params) > 1 else ""
    for name in msg.params[0].split(","):
        if name:
            try:
                s.request("part", s.sid, name, reason[: s.config.kick_len])
            except RemoteProtocolError as exc:
                s.error(exc)


@command("NAMES")
def names(s: Client, msg: Message) -> None:
    """NAMES [<channel>{,<channel>}]
    Lists who is in a channel (@ for operators, + for voiced users)."""
    if not msg.params:
        s.numeric(N.RPL_ENDOFNAMES, "*", "End of /NAMES list")
        return
    for name in msg.params[0].split(","):
        info = s.request("names", s.sid, name)
        if info is None:
            s.numeric(N.RPL_ENDOFNAMES, name, "End of /NAMES list")
        else:
            s.numerics(names_replies(s, info))


@command("TOPIC", 1)
def topic(s: Client, msg: Message) -> None:
    """TOPIC <channel> [<topic>]
    Shows the channel's topic, or sets it ("" clears it). With +t only channel operators set it."""
    name = msg.params[0]
    if len(msg.params) < 2:
        info = s.request("topic", s.sid, name, None, 0.0)
        if info["topic"]:
            s.numerics([(N.RPL_TOPIC, info["name"], info["topic"]),
                        (N.RPL_TOPICWHOTIME, info["name"], info["topic_by"], str(int(info["topic_at"])))])
        else:
            s.numeric(N.RPL_NOTOPIC, info["name"], "No topic is set")
        return
    s.request("topic", s.sid, name, msg.params[1][: s.config.topic_len], time.time())


@command("LIST")
def list_(s: Client, msg: Message) -> None:
    """LIST [<mask>|!<mask>|>n|<n]{,...}
    Lists channels with their user counts and topics; !<mask> leaves matching ones out,
    >n and <n filter by size."""
    masks: list[str] = []
    exclude: list[str] = []
    min_users, max_users = 0, -1
    for param in msg.params[:2]:
        for item in param.split(","):
            if item[:1] in "<>":
                n = parse_int(item[1:])
                if n is None:
                    raise RemoteProtocolError(N.ERR_UNKNOWNERROR, "LIST", text=f"Invalid user count in {item}")
                if item[0] == ">":
                    min_users = max(min_users, n + 1)
                else:
                    max_users = n - 1 if max_users < 0 else min(max_users, n - 1)
            elif item.startswith("!") and len(item) > 1:
                exclude.append(item[1:])
            elif item and item[0] in "#*?":
                masks.append(item)
    rows = s.request("list_channels", s.sid, masks, min_users, max_users, exclude)
    r: list[tuple[str, ...]] = [(N.RPL_LISTSTART, "Channel", "Users  Name")]
    r += [(N.RPL_LIST, name, str(n), topic_) for name, n, topic_ in rows]
    r.append((N.RPL_LISTEND, "End of /LIST"))
    s.numerics(r)


@command("MODE", 1)
def mode(s: Client, msg: Message) -> None:
    """MODE <channel> [<modes> [<arguments>]] | MODE <nick> [<modes>]
    Shows or changes modes. Channel: +b/+e/+I masks, +k key, +l limit, +i +m +n +s +t, +o/+v users.
    User: +i invisible, +w wallops, +B marks you as a bot (shown in WHOIS and WHO, tagged on your messages)."""
    target = msg.params[0]
    if is_channel(target, "#"):
        channel_mode(s, target, msg.params[1:])
        return
    if casefold(target) != casefold(s.nick):
        if s.request("ison", [target]):
            raise RemoteProtocolError(N.ERR_USERSDONTMATCH, text="Cant change mode for other users")
        raise RemoteProtocolError(N.ERR_NOSUCHNICK, target, text="No such nick/channel")
    if len(msg.params) == 1:
        s.numeric(N.RPL_UMODEIS, "+" + "".join(sorted(s.modes)))
        return
    on = True
    changed: list[str] = []
    unknown = False
    for c in msg.params[1]:
        if c in "+-":
            on = c == "+"
        elif c in "Biw" or (c == "o" and not on):
            if (c in s.modes) != on:
                s.modes = toggled(s.modes, c, on)
                s.notify("set_user_mode", s.sid, c, on)
                changed.append(("+" if on else "-") + c)
        elif c != "o":  # +o only through OPER; silently ignored, as elsewhere
            unknown = True
    if unknown:
        s.numeric(N.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
    if changed:
        modestr, sign = "", ""
        for change in changed:  # "+i", "+w" -> "+iw"
            modestr += change[1] if change[0] == sign else change
            sign = change[0]
        s.send(Message("MODE", (s.nick, modestr), s.prefix))


def channel_mode(s: Client, name: str, args: tuple[str, ...]) -> None:
    if not args:
        info = s.request("mode_info", s.sid, name)
        s.numerics([(N.RPL_CHANNELMODEIS, info["name"], info["modes"], *info["args"]),
                    (N.RPL_CREATIONTIME, info["name"], str(int(info["created"])))])
        return
    modestr, params = args[0], list(args[1:])
    changes: list[tuple[bool, str, str | None]] = []
    queries: list[str] = []
    unknown: list[str] = []
    on = True
    for c in modestr:
        if c in "+-":
            on = c == "+"
            continue
        if c in LIST_MODES:
            if params:
                changes.append((on, c, params.pop(0)))
            else:
                queries.append(c)
        elif c in PREFIX_MODES or c in PARAM_MODES:
            if params:
                changes.append((on, c, params.pop(0)))
            elif c in PARAM_MODES and not on:
                changes.append((on, c, None))
            else:
                s.numeric(N.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
        elif c in SET_PARAM_MODES:
            if on and not params:
                s.numeric(N.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
                continue
            changes.append((on, c, params.pop(0) if on else None))
        elif c in FLAG_MODES:
            changes.append((on, c, None))
        else:
            unknown.append(c)
    for c in unknown:
        s.numeric(N.ERR_UNKNOWNMODE, c, "is unknown mode char to me")
    for c in dict.fromkeys(queries):
        show_list(s, name, c)
    if changes:
        errors = s.request("mode", s.sid, name, changes[: s.config.max_modes], time.time())
        for numeric, params_, text in errors:
            s.error(RemoteProtocolError(numeric, *params_, text=text))


def show_list(s: Client, name: str, letter: str) -> None:
    info = s.request("mode_list", s.sid, name, letter)
    item, end, label = {
        "b": (N.RPL_BANLIST, N.RPL_ENDOFBANLIST, "End of channel ban list"),
        "e": (N.RPL_EXCEPTLIST, N.RPL_ENDOFEXCEPTLIST, "End of channel exception list"),
        "I": (N.RPL_INVEXLIST, N.RPL_ENDOFINVEXLIST, "End of channel invite list"),
    }[letter]
    r: list[tuple[str, ...]] = [(item, info["name"], mask, who_, str(int(when)))
                                for mask, who_, when in info["entries"]]
    r.append((end, info["name"], label))
    s.numerics(r)


@command("KICK", 2)
def kick(s: Client, msg: Message) -> None:
    """KICK <channel> <nick> [<reason>]
    Removes someone from a channel (channel operators only)."""
    reason = msg.params[2][: s.config.kick_len] if len(msg.params) > 2 and msg.params[2] else s.nick
    for nick_ in msg.params[1].split(",")[:4]:
        if nick_:
            try:
                s.request("kick", s.sid, msg.params[0], nick_, reason)
            except RemoteProtocolError as exc:
                s.error(exc)


@command("INVITE")
def invite(s: Client, msg: Message) -> None:
    """INVITE <nick> <channel>
    Invites someone to a channel (to a +i channel: channel operators only)."""
    if len(msg.params) < 2:
        # no parameters: the list of channels one is invited to (not kept past use)
        s.numeric(N.RPL_ENDOFINVITELIST, "End of /INVITE list")
        return
    nick_ = s.request("invite", s.sid, msg.params[0], msg.params[1])
    s.numeric(N.RPL_INVITING, nick_, msg.params[1])


