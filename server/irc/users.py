"""Users: WHOIS, WHOWAS, WHO/WHOX, ISON, USERHOST, AWAY, SETNAME."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from server.irc.commands import command
from server.protocol import (
    Message,
    RemoteProtocolError,
    parse_int,
)
from server.protocol import (
    numerics as N,
)

if TYPE_CHECKING:
    from server.irc.client import Client


log = logging.getLogger(__name__)

# -- users ----------------------------------------------------------------------
@command("WHOIS", 1)
def whois(s: Client, msg: Message) -> None:
    """WHOIS <nick>
    Shows who someone is: user and host, channels, away message, account, idle time, and whether
    they are an operator, use TLS or are a bot."""
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
    if "B" in d["modes"]:
        r.append((N.RPL_WHOISBOT, nick_, "is a bot"))
    if d["account"]:
        r.append((N.RPL_WHOISACCOUNT, nick_, d["account"], "is logged in as"))
    if d["tls"]:
        r.append((N.RPL_WHOISSECURE, nick_, "is using a secure connection"))
    if "o" in s.modes or d["sid"] == s.sid:
        if d["modes"]:  # no "is using modes +" for a user without modes
            r.append((N.RPL_WHOISMODES, nick_, f"is using modes +{d['modes']}"))
        r.append((N.RPL_WHOISACTUALLY, nick_, f"{d['user']}@{d['ip']}", d["ip"], "Actual user@host, Actual IP"))
    idle = max(0, int(time.time() - (d["last_active"] or d["signon"])))
    r.append((N.RPL_WHOISIDLE, nick_, str(idle), str(int(d["signon"])), "seconds idle, signon time"))
    r.append((N.RPL_ENDOFWHOIS, nick_, "End of /WHOIS list"))
    s.numerics(r)


@command("WHOWAS", 1)
def whowas(s: Client, msg: Message) -> None:
    """WHOWAS <nick> [<count>]
    Shows who recently used a nick that is gone (the newest <count> entries)."""
    target = msg.params[0]
    count = parse_int(msg.params[1], 0) if len(msg.params) > 1 else None
    entries = s.request("whowas", target)
    if count:
        entries = entries[:count]
    if not entries:
        s.numeric(N.ERR_WASNOSUCHNICK, target, "There was no such nickname")
    r: list[tuple[str, ...]] = [(N.RPL_WHOWASUSER, n, u, h, "*", real) for n, u, h, real, _ in entries]
    r.append((N.RPL_ENDOFWHOWAS, target, "End of WHOWAS"))
    s.numerics(r)


WHOX_ORDER = "tcuihsnfdlaor"


@command("WHO")
def who(s: Client, msg: Message) -> None:
    """WHO <channel>|<mask> [%<fields>[,<token>]]
    Lists a channel's members or the users matching a mask (flags: H here, G away, * operator,
    B bot, @ and + channel status). With %fields: WHOX, the fields chosen from tcuihsnfdlaor."""
    mask = msg.params[0] if msg.params else "*"
    fields, token = "", ""
    if len(msg.params) > 1 and "%" in msg.params[1]:
        # WHOX: ``[flags]%fields[,token]``; the flags before '%' (e.g. ``n``,
        # match on nick) are accepted and the mask is matched as usual
        fields, _, token = msg.params[1].partition("%")[2].partition(",")
    rows = s.request("who", s.sid, mask)
    cfg = s.config
    r: list[tuple[str, ...]] = []
    now = time.time()
    for row in rows:
        flags = ("G" if row["away"] else "H") + ("*" if row["oper"] else "") + ("B" if row.get("bot") else "")
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


@command("ISON", 1)
def ison(s: Client, msg: Message) -> None:
    """ISON <nick>{ <nick>}
    Tells which of these nicks are online."""
    nicks = " ".join(msg.params).split()
    s.numeric(N.RPL_ISON, " ".join(s.request("ison", nicks)))


@command("USERHOST", 1)
def userhost(s: Client, msg: Message) -> None:
    """USERHOST <nick>{ <nick>}
    Shows the user@host of up to five nicks."""
    found = s.request("userhost", list(msg.params))
    s.numeric(N.RPL_USERHOST, " ".join(
        f"{n}{'*' if op else ''}={'-' if away else '+'}{u}@{h}" for n, op, away, u, h in found))


@command("AWAY")
def away(s: Client, msg: Message) -> None:
    """AWAY [<message>]
    Marks you as away with that message; AWAY alone marks you as back."""
    text = msg.params[0][: s.config.away_len] if msg.params and msg.params[0] else None
    s.request("set_away", s.sid, text)
    s.away = text
    if text is None:
        s.numeric(N.RPL_UNAWAY, "You are no longer marked as being away")
    else:
        s.numeric(N.RPL_NOWAWAY, "You have been marked as being away")


@command("SETNAME", 1)
def setname(s: Client, msg: Message) -> None:
    """SETNAME <realname>
    Changes your real name (IRCv3 setname)."""
    realname = msg.params[0]
    if not realname or len(realname) > 100:
        raise RemoteProtocolError.fail("SETNAME", "INVALID_REALNAME", text="Realname is not valid")
    s.request("set_realname", s.sid, realname)
    s.realname = realname


