"""What the server advertises: version, capabilities, modes and the ISUPPORT tokens (005)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from server.state import extban

if TYPE_CHECKING:
    from server.irc.client import Client
    from server.ops.config import Config


log = logging.getLogger(__name__)

VERSION = "chatroom-0.1.0"
CREATED = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
CAPS = ("account-notify", "account-tag", "away-notify", "batch", "cap-notify", "draft/account-registration",
        "draft/chathistory", "draft/multiline", "echo-message", "extended-join", "invite-notify", "labeled-response",
        "message-tags", "multi-prefix", "sasl", "server-time", "setname", "standard-replies", "userhost-in-names",
        "extended-monitor", "draft/read-marker", "draft/message-redaction")
CAP_VALUES = {"sasl": "PLAIN"}  # draft/account-registration: from the settings (accounts.registration_keys)
USER_MODES = "Biow"  # B: a bot (IRCv3 bot-mode)
STATUSMSG = "@+"  # PRIVMSG @#chan reaches the ops, +#chan the voiced and ops
CHANNEL_MODES = "beIiklmnostv"
# CHANMODES types: A (lists), B (always a parameter), C (parameter when set), D (flags)
LIST_MODES, PARAM_MODES, SET_PARAM_MODES, FLAG_MODES, PREFIX_MODES = "beI", "k", "l", "imnst", "ov"


def multiline_value(c: Config) -> str | None:
    """The ``draft/multiline`` cap value from the settings; None when it is off
    (``multiline_max_bytes`` 0): then the cap is neither offered nor granted."""
    if c.multiline_max_bytes <= 0:
        return None
    value = f"max-bytes={c.multiline_max_bytes}"
    return value + f",max-lines={c.multiline_max_lines}" if c.multiline_max_lines > 0 else value


def offered_caps(c: Config) -> tuple[str, ...]:
    """The capabilities this configuration offers (CAPS minus those turned off)."""
    return CAPS if multiline_value(c) is not None else tuple(x for x in CAPS if x != "draft/multiline")


def isupport(s: Client) -> list[str]:
    c = s.config
    return [
        f"AWAYLEN={c.away_len}", "BOT=B", "CASEMAPPING=rfc1459", f"CHANLIMIT=#:{c.max_channels or ''}",
        "CHANMODES=beI,k,l,imnst", f"CHANNELLEN={c.channel_len}", "CHANTYPES=#", "ELIST=MNU", "EXCEPTS=e",
        "INVEX=I", f"KICKLEN={c.kick_len}", f"MAXLIST=beI:{c.max_list}", f"MAXTARGETS={c.max_targets}",
        f"MODES={c.max_modes}", f"NETWORK={c.network}", f"NICKLEN={c.nick_len}", "PREFIX=(ov)@+",
        "SAFELIST", f"STATUSMSG={STATUSMSG}", f"CHATHISTORY={c.chathistory_max}", "MSGREFTYPES=msgid,timestamp",
        f"TARGMAX=PRIVMSG:{c.max_targets},NOTICE:{c.max_targets},TAGMSG:{c.max_targets},JOIN:,PART:,KICK:1,WHOIS:1",
        f"TOPICLEN={c.topic_len}", f"USERLEN={c.user_len}", "UTF8ONLY", "WHOX",
        f"MONITOR={c.monitor_max}", *extban.ISUPPORT,
    ]


