"""What the server tells about itself: LUSERS, MOTD, VERSION, TIME, ADMIN, INFO."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from server.irc.commands import command
from server.irc.features import CREATED, VERSION, isupport
from server.protocol import (
    Message,
)
from server.protocol import (
    numerics as N,
)

if TYPE_CHECKING:
    from server.irc.client import Client


log = logging.getLogger(__name__)


def lusers_replies(s: Client, d: dict[str, Any]) -> list[tuple[str, ...]]:
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


def motd_replies(s: Client) -> list[tuple[str, ...]]:
    lines = s.config.motd_lines()
    if lines is None:
        return [(N.ERR_NOMOTD, "MOTD File is missing")]
    out: list[tuple[str, ...]] = [(N.RPL_MOTDSTART, f"- {s.config.server_name} Message of the day - ")]
    out += [(N.RPL_MOTD, f"- {line}") for line in lines]
    out.append((N.RPL_ENDOFMOTD, "End of /MOTD command."))
    return out



@command("LUSERS")
def lusers(s: Client, msg: Message) -> None:
    """LUSERS
    Counts users, operators, unregistered connections and channels."""
    s.numerics(lusers_replies(s, s.request("lusers")))


@command("MOTD")
def motd(s: Client, msg: Message) -> None:
    """MOTD
    Shows the message of the day."""
    s.numerics(motd_replies(s))


@command("VERSION")
def version(s: Client, msg: Message) -> None:
    """VERSION
    Shows the server's version and the features it advertises (ISUPPORT)."""
    tokens = isupport(s)
    s.numerics([(N.RPL_VERSION, VERSION, s.config.server_name, "Chat-room IRC server"), *[
        (N.RPL_ISUPPORT, *tokens[i:i + 12], "are supported by this server") for i in range(0, len(tokens), 12)]])


@command("TIME")
def time_(s: Client, msg: Message) -> None:
    """TIME
    Shows the server's time."""
    s.numeric(N.RPL_TIME, s.config.server_name, time.strftime("%A %B %d %Y -- %H:%M:%S +00:00", time.gmtime()))


@command("ADMIN")
def admin(s: Client, msg: Message) -> None:
    """ADMIN
    Shows who runs this server and how to reach them."""
    cfg = s.config
    s.numerics([(N.RPL_ADMINME, cfg.server_name, "Administrative info"),
                (N.RPL_ADMINLOC1, cfg.admin_location or cfg.network),
                (N.RPL_ADMINLOC2, "Chat-room IRC server"),
                (N.RPL_ADMINEMAIL, cfg.admin_email or "(not set)")])


@command("INFO")
def info(s: Client, msg: Message) -> None:
    """INFO
    Shows information about the server software."""
    lines = [f"{VERSION}: a self-hosted IRC server written in Python.", f"Running since {CREATED}.",
             "Acceptor -> workers (thread per client) -> Manager bus; see docs/architecture.md."]
    s.numerics([*[(N.RPL_INFO, line) for line in lines], (N.RPL_ENDOFINFO, "End of /INFO list")])


