"""IRCv3 ``MONITOR`` (and ``extended-monitor``): tell a client when nicks it
watches come and go.

The lists live in the registry (server/state/monitor.py), so a nick on any
worker notifies watchers on any other: the registry emits 730/731 as
:class:`~server.bus.records.MonitorStatus` records when a user registers,
changes nick or leaves, and away/account/realname changes as
:class:`~server.bus.records.MonitorChange` for extended-monitor clients. A
client's list is cleared when it disconnects. The size limit is
``monitor_max`` (``MONITOR=`` in 005). The session keeps a copy of its list
(``Session.monitoring``, from each answer) that its worker hands a new manager
with the rest of the session (``SessionImage.monitors``) after a manager death.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.irc.commands import command
from server.protocol import Message, RemoteProtocolError, is_valid_nick
from server.protocol import numerics as N

if TYPE_CHECKING:
    from server.irc.client import Client

RPL_MONONLINE, RPL_MONOFFLINE, RPL_MONLIST, RPL_ENDOFMONLIST, ERR_MONLISTFULL = "730", "731", "732", "733", "734"
CHUNK = 400  # bytes of targets per reply line (the line stays under 512 with source and nick)


def chunks(items: list[str]) -> list[str]:
    """Comma-joined runs of ``items``, each short enough for one line."""
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for item in items:
        if cur and size + len(item) + 1 > CHUNK:
            out.append(",".join(cur))
            cur, size = [], 0
        cur.append(item)
        size += len(item) + 1
    if cur:
        out.append(",".join(cur))
    return out


@command("MONITOR", 1)
def monitor(s: Client, msg: Message) -> None:
    """MONITOR + <nick>[,<nick>...] | - <nick>[,<nick>...] | C | L | S
    Tells you when people come online or leave (IRCv3 monitor): + adds nicks to your list and says
    which are online (730) or offline (731), - removes them, C clears the list, L lists it, S shows
    the status of every nick on it. With extended-monitor you also hear their AWAY, ACCOUNT and
    SETNAME changes. The list size is limited (MONITOR= in 005) and ends when you disconnect."""
    sub = msg.params[0].upper()
    if sub not in ("+", "-", "C", "L", "S"):
        raise RemoteProtocolError(N.ERR_UNKNOWNCOMMAND, "MONITOR", text="Unknown MONITOR subcommand")
    targets: list[str] = []
    if sub in ("+", "-"):
        if len(msg.params) < 2 or not msg.params[1]:
            raise RemoteProtocolError(N.ERR_NEEDMOREPARAMS, "MONITOR", text="Not enough parameters")
        targets = [t for t in msg.params[1].split(",") if t]
        if sub == "+":
            targets = [t for t in targets if is_valid_nick(t, s.config.nick_len)]
    limit = s.config.monitor_max
    result = s.request("monitor", s.sid, sub, targets, limit)
    s.monitoring = tuple(result["listing"])
    replies: list[tuple[str, ...]] = []
    replies += [(RPL_MONONLINE, part) for part in chunks(result["online"])]
    replies += [(RPL_MONOFFLINE, part) for part in chunks(result["offline"])]
    if result["full"]:
        replies.append((ERR_MONLISTFULL, str(limit), chunks(result["full"])[0], "Monitor list is full."))
    if sub == "L":
        replies += [(RPL_MONLIST, part) for part in chunks(result["listing"])]
        replies.append((RPL_ENDOFMONLIST, "End of MONITOR list"))
    if replies:
        s.numerics(replies)
