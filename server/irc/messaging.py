"""PRIVMSG, NOTICE and TAGMSG: the hot path. A message is encoded once here and published
to the bus, which checks and routes it (server/bus/local/bus.py)."""

from __future__ import annotations

import functools
import itertools
import logging
import time
from typing import TYPE_CHECKING

from server.irc.accounts import SERVICES
from server.irc.commands import command
from server.irc.features import STATUSMSG
from server.protocol import (
    MAX_BODY,
    Message,
    RemoteProtocolError,
    casefold,
    format_tags,
    is_channel,
)
from server.protocol import (
    numerics as N,
)

if TYPE_CHECKING:
    from server.irc.client import Client


log = logging.getLogger(__name__)

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


def msgid_for(prefix: str) -> str:
    """A fresh msgid: the worker's ``msgid_prefix`` and a per-process counter."""
    return f"{prefix}{next(_msg_counter):x}"


@functools.lru_cache(maxsize=64)
def _some_tags(tags_full: bytes, with_time: bool) -> bytes:
    kept = [t for t in tags_full[1:-1].split(b";")
            if t.startswith(b"account=") or (with_time and t.startswith(b"time="))]
    return b"@" + b";".join(kept) + b" " if kept else b""


def some_tags(caps: frozenset[str], tags_full: bytes) -> bytes:
    """The tag section for a client with ``account-tag`` but not ``message-tags``:
    the account (and the time, with ``server-time``), nothing else. Cached, as one
    message reaches many such clients in a row."""
    return _some_tags(tags_full, "server-time" in caps)


# -- messages (the hot path) ----------------------------------------------------
def relay(s: Client, msg: Message, kind: str) -> None:
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
    tags = {"time": server_time(now), "msgid": ""}
    if s.account:
        tags["account"] = s.account
    if "B" in s.modes:
        tags["bot"] = ""  # IRCv3 bot-mode: sent bare, to message-tags clients only
    tags_time = f"@time={tags['time']} ".encode()
    for key, value in msg.tags.items():
        if key.startswith("+"):
            tags[key] = value
    prefix = s.prefix
    for target in targets:
        if not target:
            continue
        # STATUSMSG (``@#chan``, ``+#chan``): the bus sends it to the members with
        # at least that prefix; the status mark stays in front of the folded name
        status = target[0] if target[0] in STATUSMSG and is_channel(target[1:], "#") else ""
        name = target[len(status):]
        chan = is_channel(name, "#")
        fold = casefold(name)
        if not chan and fold in SERVICES:
            if kind == "P":
                SERVICES[fold](s, msg.params[1])
            continue
        # one msgid per target: each copy is its own message (and its own history row)
        msgid = tags["msgid"] = msgid_for(worker.msgid_prefix)
        tags_full = f"@{format_tags(tags)} ".encode()
        shown = status + worker.channel_names.get(fold, name) if chan else target
        fold = status + fold
        params = (shown,) if kind == "T" else (shown, msg.params[1])
        body = Message(verb, params, prefix).to_bytes()
        if len(body) > MAX_BODY and kind != "T":
            body = Message(verb, (shown, _fit(msg.params[1], len(body) - MAX_BODY)), prefix).to_bytes()
        s.send_message(fold, chan, kind, tags_full, tags_time, body, msgid, now)


def _fit(text: str, excess: int) -> str:
    """``text`` less ``excess`` bytes at its end, cut on a character boundary:
    the relayed line (with the sender's prefix) stays within 512 bytes, as a
    client's own line must (what the sender's echo shows is what was sent)."""
    data = text.encode()
    return data[:max(0, len(data) - excess)].decode("utf-8", "ignore")


@command("PRIVMSG")
def privmsg(s: Client, msg: Message) -> None:
    """PRIVMSG <target>{,<target>} <text>
    Sends a message to a channel or a nick (@#channel or +#channel: its operators or voiced users)."""
    relay(s, msg, "P")


@command("NOTICE")
def notice(s: Client, msg: Message) -> None:
    """NOTICE <target>{,<target>} <text>
    Like PRIVMSG, but never answered automatically (not even with an error)."""
    try:
        relay(s, msg, "N")
    except RemoteProtocolError:
        pass  # NOTICE never gets an automatic reply


@command("TAGMSG")
def tagmsg(s: Client, msg: Message) -> None:
    """TAGMSG <target>{,<target>}
    Sends only client tags (such as +typing) to clients that asked for message-tags."""
    relay(s, msg, "T")


