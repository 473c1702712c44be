"""IRC commands as a table: ``COMMANDS[verb] = Command(handler, min_params, pre_registration)``.

:func:`dispatch` makes the checks once (registered? enough parameters?); each
handler then does its job and raises ``RemoteProtocolError`` for the client's
mistakes instead of building error lines.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from server.protocol import (
    LocalProtocolError,
    Message,
    RemoteProtocolError,
    casefold,
    format_tags,
    is_channel,
    is_valid_nick,
)
from server.protocol import (
    numerics as N,
)

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

VERSION = "chatroom-0.1.0"
CREATED = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
CAPS = ("account-notify", "account-tag", "away-notify", "batch", "cap-notify", "draft/account-registration",
        "draft/chathistory", "echo-message", "extended-join", "invite-notify", "labeled-response", "message-tags",
        "multi-prefix", "sasl", "server-time", "setname", "standard-replies", "userhost-in-names")
CAP_VALUES = {"sasl": "PLAIN", "draft/account-registration": "custom-account-name"}
USER_MODES = "iow"
CHANNEL_MODES = "beIiklmnostv"
# CHANMODES types: A (lists), B (always a parameter), C (parameter when set), D (flags)
LIST_MODES, PARAM_MODES, SET_PARAM_MODES, FLAG_MODES, PREFIX_MODES = "beI", "k", "l", "imnst", "ov"

Handler = Callable[["Session", Message], None]


class Command(NamedTuple):
    handler: Handler
    min_params: int = 0
    pre_registration: bool = False


COMMANDS: dict[str, Command] = {}


def command(verb: str, min_params: int = 0, pre_registration: bool = False) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[verb] = Command(fn, min_params, pre_registration)
        return fn
    return register


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
        s.error(exc)
    except LocalProtocolError:
        # A reply we could not put on the wire (our bug, or input the codec let
        # through): answer, never drop the client for it.
        log.exception("%s: reply to %s could not be formatted", s.ip, verb)
        s.error(RemoteProtocolError(N.ERR_UNKNOWNERROR, verb, text="Could not process that command"))


def _run(cmd: Command, s: Session, msg: Message) -> None:
    try:
        cmd.handler(s, msg)
    except RemoteProtocolError as exc:
        s.error(exc)


# -- time and ids for relayed messages -------------------------------------------
_msg_counter = itertools.count(1)


_second: tuple[int, str] = (-1, "")


def server_time(now: float | None = None) -> str:
    """IRCv3 server-time: ``2026-01-02T03:04:05.678Z``. The part up to the
    second is formatted once per second (this runs for every relayed message)."""
    global _second
    now = time.time() if now is None else now
    whole = int(now)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int(now * 1000) % 1000:03d}Z"


def isupport(s: Session) -> list[str]:
    c = s.config
    return [
        f"AWAYLEN={c.away_len}", "CASEMAPPING=rfc1459", f"CHANLIMIT=#:{c.max_channels or ''}",
        "CHANMODES=beI,k,l,imnst", f"CHANNELLEN={c.channel_len}", "CHANTYPES=#", "ELIST=MNU", "EXCEPTS=e",
        "INVEX=I", f"KICKLEN={c.kick_len}", f"MAXLIST=beI:{c.max_list}", f"MAXTARGETS={c.max_targets}",
        f"MODES={c.max_modes}", f"NETWORK={c.network}", f"NICKLEN={c.nick_len}", "PREFIX=(ov)@+",
        "SAFELIST", "STATUSMSG=@+", f"CHATHISTORY={c.chathistory_max}", "MSGREFTYPES=msgid,timestamp",
        f"TARGMAX=PRIVMSG:{c.max_targets},NOTICE:{c.max_targets},TAGMSG:{c.max_targets},JOIN:,PART:,KICK:1,WHOIS:1",
        f"TOPICLEN={c.topic_len}", f"USERLEN={c.user_len}", "UTF8ONLY", "WHOX",
    ]


# -- registration ---------------------------------------------------------------
@command("CAP", 1, pre_registration=True)
def cap(s: Session, msg: Message) -> None:
    sub = msg.params[0].upper()
    nick = s.nick
    src = s.config.server_name
    if sub == "LS":
        if not s.registered:
            s.cap_negotiating = True
        if len(msg.params) > 1 and msg.params[1].isdigit():
            s.cap_version = max(s.cap_version, int(msg.params[1]))
        if s.cap_version >= 302:
            s.caps.add("cap-notify")
        if s.cap_version >= 302:
            offered = " ".join(f"{c}={CAP_VALUES[c]}" if c in CAP_VALUES else c for c in CAPS)
        else:
            offered = " ".join(CAPS)
        s.send(Message("CAP", (nick, "LS", offered), src))
    elif sub == "LIST":
        s.send(Message("CAP", (nick, "LIST", " ".join(sorted(s.caps))), src))
    elif sub == "REQ":
        if not s.registered:
            s.cap_negotiating = True
        wanted = msg.params[1].split() if len(msg.params) > 1 else []
        names = [w.lstrip("-") for w in wanted]
        ok = all(n in CAPS for n in names)
        s.send(Message("CAP", (nick, "ACK" if ok else "NAK", " ".join(wanted)), src))
        if ok:
            for w in wanted:
                if w.startswith("-"):
                    s.caps.discard(w[1:])
                else:
                    s.caps.add(w)
            s.caps_changed()
    elif sub == "END":
        if not s.registered:
            s.cap_negotiating = False
            try_register(s)
    else:
        raise RemoteProtocolError(N.ERR_INVALIDCAPCMD, msg.params[0], text="Invalid CAP command")


@command("PASS", 1, pre_registration=True)
def pass_(s: Session, msg: Message) -> None:
    if s.registered:
        raise RemoteProtocolError(N.ERR_ALREADYREGISTERED, text="You may not reregister")
    s.password = msg.params[0]


@command("NICK", 0, pre_registration=True)
def nick(s: Session, msg: Message) -> None:
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


def _claim_nick(s: Session, new: str) -> None:
    _, _, protected = s.request("claim_nick", s.sid, new)
    s.nick = new
    s.nick_claimed = True
    if not s.registered:
        try_register(s)
    else:
        from .accounts import protect_nick

        protect_nick(s, protected)


def flush_nick(s: Session) -> None:
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
def user(s: Session, msg: Message) -> None:
    if s.registered:
        raise RemoteProtocolError(N.ERR_ALREADYREGISTERED, text="You may not reregister")
    username = "".join(c for c in msg.params[0] if c.isalnum() or c in "-_.[]{}|^`")[: s.config.user_len - 1]
    if not username or not msg.params[3]:
        raise RemoteProtocolError(N.ERR_NEEDMOREPARAMS, "USER", text="Not enough parameters")
    s.user = "~" + username
    s.realname = msg.params[3]
    try_register(s)


def try_register(s: Session) -> None:
    if s.registered or not s.user or s.cap_negotiating:
        return
    pending = s.nick_pending
    if not s.nick_claimed and pending is None:
        return
    cfg = s.config
    if cfg.password and s.password != cfg.password:
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
    from .accounts import protect_nick

    protect_nick(s, lusers_data["protected"])


def lusers_replies(s: Session, d: dict[str, Any]) -> list[tuple[str, ...]]:
    users = d["users"]
    return [
        (N.RPL_LUSERCLIENT, f"There are {users - d['invisible']} users and {d['invisible']} invisible on 1 servers"),
        (N.RPL_LUSEROP, str(d["operators"]), "operator(s) online"),
        (N.RPL_LUSERUNKNOWN, str(d["unknown"]), "unknown connection(s)"),
        (N.RPL_LUSERCHANNELS, str(d["channels"]), "channels formed"),
        (N.RPL_LUSERME, f"I have {users} clients and 0 servers"),
        (N.RPL_LOCALUSERS, str(users), str(d["max_users"]), f"Current local users {users}, max {d['max_users']}"),
        (N.RPL_GLOBALUSERS, str(users), str(d["max_users"]), f"Current global users {users}, max {d['max_users']}"),
    ]


def motd_replies(s: Session) -> list[tuple[str, ...]]:
    lines = s.config.motd_lines()
    if lines is None:
        return [(N.ERR_NOMOTD, "MOTD File is missing")]
    out: list[tuple[str, ...]] = [(N.RPL_MOTDSTART, f"- {s.config.server_name} Message of the day - ")]
    out += [(N.RPL_MOTD, f"- {line}") for line in lines]
    out.append((N.RPL_ENDOFMOTD, "End of /MOTD command."))
    return out


# -- connection -----------------------------------------------------------------
@command("PING", 1, pre_registration=True)
def ping(s: Session, msg: Message) -> None:
    src = s.config.server_name
    s.send(Message("PONG", (src, msg.params[0]), src))


@command("PONG", 0, pre_registration=True)
def pong(s: Session, msg: Message) -> None:
    s.ping_sent = None


@command("QUIT", 0, pre_registration=True)
def quit_(s: Session, msg: Message) -> None:
    reason = msg.params[0] if msg.params else ""
    reason = f"Quit: {reason}" if reason else "Quit"
    # Forget the client before the socket closes: once a client sees its
    # connection end after QUIT, its nick is free again.
    s.request("disconnect", s.sid, reason)
    s.forgotten = True
    s.close(reason)


@command("LUSERS")
def lusers(s: Session, msg: Message) -> None:
    s.numerics(lusers_replies(s, s.request("lusers")))


@command("MOTD")
def motd(s: Session, msg: Message) -> None:
    s.numerics(motd_replies(s))


@command("VERSION")
def version(s: Session, msg: Message) -> None:
    s.numerics([(N.RPL_VERSION, VERSION, s.config.server_name, "Chat-room IRC server"), *[
        (N.RPL_ISUPPORT, *isupport(s)[i:i + 12], "are supported by this server") for i in range(0, 24, 12)]])


@command("TIME")
def time_(s: Session, msg: Message) -> None:
    s.numeric(N.RPL_TIME, s.config.server_name, time.strftime("%A %B %d %Y -- %H:%M:%S +00:00", time.gmtime()))


# -- channels -------------------------------------------------------------------
@command("JOIN", 1)
def join(s: Session, msg: Message) -> None:
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
            from .history import replay_on_join

            replay_on_join(s, casefold(info["name"]), info["name"], info["history_upto"])


def names_replies(s: Session, info: dict[str, Any]) -> list[tuple[str, ...]]:
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
def part(s: Session, msg: Message) -> None:
    reason = msg.params[1] if len(msg.params) > 1 else ""
    for name in msg.params[0].split(","):
        if name:
            try:
                s.request("part", s.sid, name, reason[: s.config.kick_len])
            except RemoteProtocolError as exc:
                s.error(exc)


@command("NAMES")
def names(s: Session, msg: Message) -> None:
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
def topic(s: Session, msg: Message) -> None:
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


# -- messages (the hot path) ----------------------------------------------------
def relay(s: Session, msg: Message, kind: str) -> None:
    verb = msg.verb
    if not msg.params or not msg.params[0]:
        raise RemoteProtocolError(N.ERR_NORECIPIENT, text=f"No recipient given ({verb})")
    if kind != "T" and (len(msg.params) < 2 or not msg.params[1]):
        raise RemoteProtocolError(N.ERR_NOTEXTTOSEND, text="No text to send")
    targets = msg.params[0].split(",")
    cfg = s.config
    if len(targets) > cfg.max_targets:
        raise RemoteProtocolError(N.ERR_TOOMANYTARGETS, msg.params[0], text="Too many targets")
    worker = s.worker
    now = int(time.time() * 1000) / 1000  # the time tag's millisecond precision
    msgid = f"{worker.msgid_prefix}{next(_msg_counter):x}"
    tags = {"time": server_time(now), "msgid": msgid}
    if s.account:
        tags["account"] = s.account
    tags_time = f"@time={tags['time']} ".encode()
    for key, value in msg.tags.items():
        if key.startswith("+"):
            tags[key] = value
    tags_full = f"@{format_tags(tags)} ".encode()
    prefix = s.prefix
    for target in targets:
        if not target:
            continue
        chan = is_channel(target, "#")
        fold = casefold(target)
        if not chan and fold in SERVICES:
            if kind == "P":
                SERVICES[fold](s, msg.params[1])
            continue
        shown = worker.channel_names.get(fold, target) if chan else target
        params = (shown,) if kind == "T" else (shown, msg.params[1])
        body = Message(verb, params, prefix).to_bytes()
        worker.publish(("m", s.sid, fold, chan, kind, tags_full, tags_time, body, msgid, now))


@command("PRIVMSG")
def privmsg(s: Session, msg: Message) -> None:
    relay(s, msg, "P")


@command("NOTICE")
def notice(s: Session, msg: Message) -> None:
    try:
        relay(s, msg, "N")
    except RemoteProtocolError:
        pass  # NOTICE never gets an automatic reply


@command("TAGMSG")
def tagmsg(s: Session, msg: Message) -> None:
    relay(s, msg, "T")


# -- users ----------------------------------------------------------------------
@command("WHOIS", 1)
def whois(s: Session, msg: Message) -> None:
    target = msg.params[-1].split(",")[0]
    try:
        d = s.request("whois", s.sid, target)
    except RemoteProtocolError as exc:
        s.error(exc)
        s.numeric(N.RPL_ENDOFWHOIS, target, "End of /WHOIS list")
        return
    cfg = s.config
    nick_ = d["nick"]
    r: list[tuple[str, ...]] = [(N.RPL_WHOISUSER, nick_, d["user"], d["host"], "*", d["realname"])]
    if d["channels"]:
        r.append((N.RPL_WHOISCHANNELS, nick_, " ".join(p + n for p, n in d["channels"])))
    r.append((N.RPL_WHOISSERVER, nick_, cfg.server_name, cfg.network))
    if d["away"]:
        r.append((N.RPL_AWAY, nick_, d["away"]))
    if d["operator"]:
        r.append((N.RPL_WHOISOPERATOR, nick_, "is an IRC operator"))
    if d["account"]:
        r.append((N.RPL_WHOISACCOUNT, nick_, d["account"], "is logged in as"))
    if d["tls"]:
        r.append((N.RPL_WHOISSECURE, nick_, "is using a secure connection"))
    if "o" in s.modes or d["sid"] == s.sid:
        r.append((N.RPL_WHOISMODES, nick_, f"is using modes +{d['modes']}"))
        r.append((N.RPL_WHOISACTUALLY, nick_, f"{d['user']}@{d['ip']}", d["ip"], "Actual user@host, Actual IP"))
    idle = max(0, int(time.time() - (d["last_active"] or d["signon"])))
    r.append((N.RPL_WHOISIDLE, nick_, str(idle), str(int(d["signon"])), "seconds idle, signon time"))
    r.append((N.RPL_ENDOFWHOIS, nick_, "End of /WHOIS list"))
    s.numerics(r)


@command("WHOWAS", 1)
def whowas(s: Session, msg: Message) -> None:
    target = msg.params[0]
    entries = s.request("whowas", target)
    if not entries:
        s.numeric(N.ERR_WASNOSUCHNICK, target, "There was no such nickname")
    r: list[tuple[str, ...]] = [(N.RPL_WHOWASUSER, n, u, h, "*", real) for n, u, h, real, _ in entries]
    r.append((N.RPL_ENDOFWHOWAS, target, "End of WHOWAS"))
    s.numerics(r)


WHOX_ORDER = "tcuihsnfdlaor"


@command("WHO")
def who(s: Session, msg: Message) -> None:
    mask = msg.params[0] if msg.params else "*"
    fields, token = "", ""
    if len(msg.params) > 1 and msg.params[1].startswith("%"):
        fields, _, token = msg.params[1][1:].partition(",")
    rows = s.request("who", s.sid, mask)
    cfg = s.config
    r: list[tuple[str, ...]] = []
    now = time.time()
    for row in rows:
        flags = ("G" if row["away"] else "H") + ("*" if row["oper"] else "")
        prefix = ("@" if "o" in row["modes"] else "") + ("+" if "v" in row["modes"] else "")
        flags += prefix if "multi-prefix" in s.caps else prefix[:1]
        if not fields:
            r.append((N.RPL_WHOREPLY, row["channel"], row["user"], row["host"], cfg.server_name, row["nick"],
                      flags, f"0 {row['realname']}"))
            continue
        values = {
            "t": token or "0", "c": row["channel"], "u": row["user"],
            "i": row["ip"] if "o" in s.modes else "255.255.255.255", "h": row["host"], "s": cfg.server_name,
            "n": row["nick"], "f": flags, "d": "0", "l": str(max(0, int(now - row["idle"]))) if row["idle"] else "0",
            "a": row["account"] or "0", "o": "n/a", "r": row["realname"],
        }
        out = [values[f] for f in WHOX_ORDER if f in fields] or [""]
        # only the last field (the realname, when asked for) may be empty or hold spaces
        r.append((N.RPL_WHOSPCRPL, *[v.replace(" ", "_") or "*" for v in out[:-1]], out[-1]))
    r.append((N.RPL_ENDOFWHO, mask, "End of /WHO list"))
    s.numerics(r)


@command("LIST")
def list_(s: Session, msg: Message) -> None:
    masks: list[str] = []
    min_users, max_users = 0, -1
    for param in msg.params[:2]:
        for item in param.split(","):
            if item.startswith(">") and item[1:].isdigit():
                min_users = int(item[1:]) + 1
            elif item.startswith("<") and item[1:].isdigit():
                max_users = int(item[1:]) - 1
            elif item:
                masks.append(item)
    rows = s.request("list_channels", s.sid, masks, min_users, max_users)
    r: list[tuple[str, ...]] = [(N.RPL_LISTSTART, "Channel", "Users  Name")]
    r += [(N.RPL_LIST, name, str(n), topic_) for name, n, topic_ in rows]
    r.append((N.RPL_LISTEND, "End of /LIST"))
    s.numerics(r)


@command("ISON", 1)
def ison(s: Session, msg: Message) -> None:
    nicks = " ".join(msg.params).split()
    s.numeric(N.RPL_ISON, " ".join(s.request("ison", nicks)))


@command("USERHOST", 1)
def userhost(s: Session, msg: Message) -> None:
    found = s.request("userhost", list(msg.params))
    s.numeric(N.RPL_USERHOST, " ".join(
        f"{n}{'*' if op else ''}={'-' if away else '+'}{u}@{h}" for n, op, away, u, h in found))


@command("AWAY")
def away(s: Session, msg: Message) -> None:
    text = msg.params[0][: s.config.away_len] if msg.params and msg.params[0] else None
    s.request("set_away", s.sid, text)
    s.away = text
    if text is None:
        s.numeric(N.RPL_UNAWAY, "You are no longer marked as being away")
    else:
        s.numeric(N.RPL_NOWAWAY, "You have been marked as being away")


@command("MODE", 1)
def mode(s: Session, msg: Message) -> None:
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
        elif c in "iw" or (c == "o" and not on):
            if (c in s.modes) != on:
                (s.modes.add if on else s.modes.discard)(c)
                s.notify("set_user_mode", s.sid, c, on)
                changed.append(("+" if on else "-") + c)
        elif c != "o":  # +o only through OPER; silently ignored, as elsewhere
            unknown = True
    if unknown:
        s.numeric(N.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
    if changed:
        s.send(Message("MODE", (s.nick, "".join(changed)), s.nick))


def channel_mode(s: Session, name: str, args: tuple[str, ...]) -> None:
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


def show_list(s: Session, name: str, letter: str) -> None:
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
def kick(s: Session, msg: Message) -> None:
    reason = msg.params[2][: s.config.kick_len] if len(msg.params) > 2 and msg.params[2] else s.nick
    for nick_ in msg.params[1].split(",")[:4]:
        if nick_:
            try:
                s.request("kick", s.sid, msg.params[0], nick_, reason)
            except RemoteProtocolError as exc:
                s.error(exc)


@command("INVITE")
def invite(s: Session, msg: Message) -> None:
    if len(msg.params) < 2:
        # no parameters: the list of channels one is invited to (not kept past use)
        s.numeric(N.RPL_ENDOFINVITELIST, "End of /INVITE list")
        return
    nick_ = s.request("invite", s.sid, msg.params[0], msg.params[1])
    s.numeric(N.RPL_INVITING, nick_, msg.params[1])


@command("SETNAME", 1)
def setname(s: Session, msg: Message) -> None:
    realname = msg.params[0]
    if not realname or len(realname) > 100:
        raise RemoteProtocolError.fail("SETNAME", "INVALID_REALNAME", text="Realname is not valid")
    s.request("set_realname", s.sid, realname)
    s.realname = realname


@command("ADMIN")
def admin(s: Session, msg: Message) -> None:
    cfg = s.config
    s.numerics([(N.RPL_ADMINME, cfg.server_name, "Administrative info"),
                (N.RPL_ADMINLOC1, cfg.admin_location or cfg.network),
                (N.RPL_ADMINLOC2, "Chat-room IRC server"),
                (N.RPL_ADMINEMAIL, cfg.admin_email or "(not set)")])


@command("INFO")
def info(s: Session, msg: Message) -> None:
    lines = [f"{VERSION}: a self-hosted IRC server written in Python.", f"Running since {CREATED}.",
             "Acceptor -> workers (thread per client) -> Manager bus; see docs/architecture.md."]
    s.numerics([*[(N.RPL_INFO, line) for line in lines], (N.RPL_ENDOFINFO, "End of /INFO list")])


# -- operators ------------------------------------------------------------------
def require_oper(s: Session) -> None:
    if "o" not in s.modes:
        raise RemoteProtocolError(N.ERR_NOPRIVILEGES, text="Permission Denied- You're not an IRC operator")


@command("OPER", 2)
def oper(s: Session, msg: Message) -> None:
    from server.protocol import mask_match

    from .passwords import verify_password

    name, password = msg.params[0], msg.params[1]
    block = next((b for b in s.config.opers if b.get("name") == name), None)
    if block is None or not verify_password(password, str(block.get("password", ""))):
        log.warning("failed OPER attempt as %r from %s", name, s.ip)
        raise RemoteProtocolError(N.ERR_PASSWDMISMATCH, text="Password incorrect")
    hostmask = str(block.get("hostmask", "*@*"))
    if not any(mask_match(hostmask, f"{s.user}@{h}") for h in (s.host, s.ip)):
        log.warning("OPER %r from %s refused by its host mask", name, s.ip)
        raise RemoteProtocolError(N.ERR_NOOPERHOST, text="No O-lines for your host")
    s.modes.update("ow")
    s.notify("set_user_mode", s.sid, "o", True)
    log.info("%s (%s) is now an operator (%s)", s.nick, s.ip, name)
    s.numeric(N.RPL_YOUREOPER, "You are now an IRC operator")
    s.send(Message("MODE", (s.nick, "+ow"), s.nick))


@command("KILL", 1)
def kill(s: Session, msg: Message) -> None:
    require_oper(s)
    reason = msg.params[1] if len(msg.params) > 1 and msg.params[1] else "No reason"
    s.request("kill", s.sid, msg.params[0], reason)


@command("WALLOPS", 1)
def wallops(s: Session, msg: Message) -> None:
    require_oper(s)
    s.request("wallops", s.sid, msg.params[0])


@command("KLINE")
def kline(s: Session, msg: Message) -> None:
    """``KLINE [minutes] user@host [:reason]``; no argument lists the bans."""
    require_oper(s)
    params = list(msg.params)
    if not params:
        now = time.time()
        for mask, reason, by, _, expires in s.request("list_klines", s.sid):
            left = f"{int((expires - now) // 60)} more minutes" if expires else "permanent"
            s.send(Message("NOTICE", (s.nick, f"K-Line {mask} by {by} ({left}): {reason}"), s.config.server_name))
        s.send(Message("NOTICE", (s.nick, "End of K-Lines"), s.config.server_name))
        return
    minutes = 0.0
    if params and params[0].isdigit() and len(params) > 1:
        minutes = float(params.pop(0))
    mask = params[0]
    reason = params[1] if len(params) > 1 and params[1] else "No reason"
    hit = s.request("kline", s.sid, mask, minutes * 60, reason, time.time())
    until = f"for {int(minutes)} minutes" if minutes else "permanently"
    s.send(Message("NOTICE", (s.nick, f"K-Line for {mask} added {until} ({hit} clients disconnected)"),
                   s.config.server_name))


@command("UNKLINE", 1)
def unkline(s: Session, msg: Message) -> None:
    require_oper(s)
    removed = s.request("unkline", s.sid, msg.params[0])
    text = f"K-Line for {msg.params[0]} removed" if removed else f"No K-Line for {msg.params[0]}"
    s.send(Message("NOTICE", (s.nick, text), s.config.server_name))


@command("REHASH")
def rehash(s: Session, msg: Message) -> None:
    import os
    import signal

    require_oper(s)
    path = s.config.config or "(no configuration file)"
    s.numeric(N.RPL_REHASHING, path, "Rehashing")
    log.info("REHASH by %s", s.nick)
    os.kill(os.getppid(), signal.SIGHUP)


# Commands defined in their own modules register themselves on import.
from . import history  # noqa: E402, F401
from .accounts import SERVICES  # noqa: E402
