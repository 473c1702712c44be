"""IRCv3 ``draft/multiline``: one message of several lines, sent as a client batch.

The client sends ``BATCH +ref draft/multiline <target>``, then PRIVMSG (or
NOTICE) lines tagged ``batch=ref`` (``draft/multiline-concat`` on a line that
continues the one before), then ``BATCH -ref``. The lines are collected in the
client's session (:class:`MultilineBatch`), checked as they arrive against
``multiline_max_lines`` and ``multiline_max_bytes`` (so an oversized batch is
refused at the line that overflows it, and nothing is buffered past the limits),
and published as **one** message: one ``Send``, one msgid, one history row. The
bus checks and routes it like any PRIVMSG; each receiving worker gives clients
with ``draft/multiline`` and ``batch`` the batch, others the fallback lines.

A mistake ends the batch with ``FAIL BATCH <code>`` (``MULTILINE_MAX_BYTES``,
``MULTILINE_MAX_LINES``, ``MULTILINE_INVALID_TARGET``, ``MULTILINE_INVALID``);
the rest of that batch's lines are then ignored without further replies.
The opener's label moves to the closing line, so a labeled batch's echo (or
error) carries it (labeled-response: on the echo's BATCH opener).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from server.bus.records import Multiline
from server.irc.accounts import SERVICES
from server.irc.commands import command
from server.irc.features import STATUSMSG, multiline_value
from server.irc.messaging import msgid_for, server_time
from server.protocol import MAX_BODY, Message, RemoteProtocolError, casefold, format_tags, is_channel

if TYPE_CHECKING:
    from server.irc.client import Client

BATCH_TYPE = "draft/multiline"
CONCAT = "draft/multiline-concat"
_REF = re.compile(r"[A-Za-z0-9-]+")
_TARGET = re.compile(r"[^\s,:\x00-\x1f][^\s,\x00-\x1f]*")  # one nick or channel, a valid middle parameter


class MultilineBatch:
    """A batch being received: its lines so far and their size (as the spec counts it)."""

    __slots__ = ("kind", "label", "lines", "ref", "size", "tags", "target")

    def __init__(self, ref: str, target: str, label: str | None, tags: dict[str, str]) -> None:
        self.ref = ref
        self.target = target
        self.label = label  # the opener's, given to the closing line's output
        self.tags = tags  # the client-only tags of the opener: the message's
        self.kind = ""  # "P" or "N", set by the first line
        self.lines: list[tuple[str, bool]] = []  # (text, concatenated to the line before)
        self.size = 0  # bytes of text, plus one per line feed joining two lines


def fail(code: str, *context: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError.fail("BATCH", code, *context, text=text)


def _drop(s: Client, exc: RemoteProtocolError) -> RemoteProtocolError:
    """End the open batch with ``exc``: its later lines are ignored, and the
    error carries the opener's label when the failing line has none."""
    b = s.multiline
    if b is not None:
        s.multiline = None
        s.multiline_dropped = b.ref
        if b.label is not None:
            own = s.relabel(b.label)
            if own is not None:
                s.relabel(own)
    return exc


@command("BATCH", 1)
def batch(s: Client, msg: Message) -> None:
    """BATCH +<ref> draft/multiline <target> ... BATCH -<ref>
    Sends one message of several lines (IRCv3 draft/multiline): the PRIVMSG or NOTICE lines between
    the two, tagged batch=<ref>, to <target>. Needs the draft/multiline and batch capabilities."""
    if "batch" in msg.tags:
        raise _drop(s, fail("MULTILINE_INVALID", text="Client batches may not be nested"))
    ref = msg.params[0]
    if ref.startswith("-"):
        close(s, ref[1:])
        return
    if not ref.startswith("+") or not _REF.fullmatch(ref[1:]):
        raise fail("MULTILINE_INVALID", text="Invalid batch reference")
    if len(msg.params) < 2 or msg.params[1] != BATCH_TYPE:
        raise fail("MULTILINE_INVALID", text="Unknown batch type")
    if multiline_value(s.config) is None or "draft/multiline" not in s.caps or "batch" not in s.caps:
        raise fail("MULTILINE_INVALID", text="Multiline batches need the draft/multiline and batch capabilities")
    if s.multiline is not None:  # the one before was never closed: refused, and this one starts
        s.error(_drop(s, fail("MULTILINE_INVALID", text="Unterminated multiline batch")))
    if len(msg.params) != 3 or not _TARGET.fullmatch(msg.params[2]):
        raise fail("MULTILINE_INVALID", text="A multiline batch needs exactly one target")
    target = msg.params[2]
    if casefold(target) in SERVICES:
        raise fail("MULTILINE_INVALID", text="Services take single lines, not multiline batches")
    label = s.relabel(None)  # nothing is said for the opener: its label goes to the message
    if s.multiline_dropped == ref[1:]:
        s.multiline_dropped = None  # the reference is used again, for a new batch
    s.multiline = MultilineBatch(ref[1:], target, label,
                                 {k: v for k, v in msg.tags.items() if k.startswith("+")})


def collect(s: Client, msg: Message) -> None:
    """A line tagged ``batch=``: added to the open batch, or refused."""
    ref = msg.tags["batch"]
    b = s.multiline
    if b is None or b.ref != ref:
        if ref == s.multiline_dropped:
            return  # the rest of a batch already refused
        raise _drop(s, fail("MULTILINE_INVALID", text="No such open batch"))
    verb = msg.verb
    if verb not in ("PRIVMSG", "NOTICE"):
        raise _drop(s, fail("MULTILINE_INVALID", text="Only PRIVMSG or NOTICE lines may be in a multiline batch"))
    kind = "P" if verb == "PRIVMSG" else "N"
    if b.kind and b.kind != kind:
        raise _drop(s, fail("MULTILINE_INVALID", text="A multiline batch may not mix PRIVMSG and NOTICE"))
    b.kind = kind
    target = msg.params[0] if msg.params else ""
    if casefold(target) != casefold(b.target):
        raise _drop(s, fail("MULTILINE_INVALID_TARGET", b.target, target or "*", text="Invalid multiline target"))
    text = msg.params[1] if len(msg.params) > 1 else ""
    concat = CONCAT in msg.tags and bool(b.lines)  # the first line has nothing to continue
    if CONCAT in msg.tags and not text:
        raise _drop(s, fail("MULTILINE_INVALID", text="A concatenated line may not be blank"))
    cfg = s.config
    if cfg.multiline_max_lines > 0 and len(b.lines) >= cfg.multiline_max_lines:
        raise _drop(s, fail("MULTILINE_MAX_LINES", str(cfg.multiline_max_lines),
                            text="Multiline batch max-lines exceeded"))
    b.size += len(text.encode()) + (1 if b.lines and not concat else 0)
    if b.size > cfg.multiline_max_bytes:
        raise _drop(s, fail("MULTILINE_MAX_BYTES", str(cfg.multiline_max_bytes),
                            text="Multiline batch max-bytes exceeded"))
    b.lines.append((text, concat))


def close(s: Client, ref: str) -> None:
    """``BATCH -ref``: the message is complete; check it and publish it."""
    b = s.multiline
    if b is None or b.ref != ref:
        if ref == s.multiline_dropped:
            s.multiline_dropped = None  # the end of a batch already refused
            return
        raise _drop(s, fail("MULTILINE_INVALID", text="No such open batch"))
    if b.label is not None:
        s.relabel(b.label)
    if not b.lines:
        raise _drop(s, fail("MULTILINE_INVALID", text="Empty multiline batch"))
    if not any(text for text, _ in b.lines):
        raise _drop(s, fail("MULTILINE_INVALID", text="Invalid multiline batch with blank lines only"))
    s.multiline = None
    publish(s, b)


def split(text: str, room: int) -> list[str]:
    """``text`` in pieces of at most ``room`` UTF-8 bytes, never inside a character."""
    data = text.encode()
    if len(data) <= room:
        return [text]
    out: list[str] = []
    while data:
        cut = min(room, len(data))
        while cut < len(data) and cut > 0 and (data[cut] & 0xC0) == 0x80:
            cut -= 1  # back to the start of the character
        out.append(data[:cut].decode())
        data = data[cut:]
    return out


def publish(s: Client, b: MultilineBatch) -> None:
    """Encode the message once in every form and publish it (one Send)."""
    worker = s.worker
    target = b.target
    status = target[0] if target[0] in STATUSMSG and is_channel(target[1:], "#") else ""
    name = target[len(status):]
    chan = is_channel(name, "#")
    fold = casefold(name)
    shown = status + worker.channel_names.get(fold, name) if chan else target
    now = int(time.time() * 1000) / 1000
    msgid = msgid_for(worker.msgid_prefix)
    tags = {"time": server_time(now), "msgid": msgid}
    if s.account:
        tags["account"] = s.account
    if "B" in s.modes:
        tags["bot"] = ""
    tags.update(b.tags)
    rest = {k: v for k, v in tags.items() if k != "msgid"}
    verb = "PRIVMSG" if b.kind == "P" else "NOTICE"
    prefix = s.prefix
    # A line the client could send may be too long once the server puts its
    # source in front: it is split (the pieces after the first continue it).
    room = MAX_BODY - len(f":{prefix} {verb} {shown} :\r\n".encode())
    pieces: list[tuple[str, bool]] = []
    for text, concat in b.lines:
        for i, part in enumerate(split(text, max(room, 64))):
            pieces.append((part, concat or i > 0))
    ref = "m" + msgid
    inner = [Message(verb, (shown, text), prefix, {"batch": ref, CONCAT: ""} if concat else {"batch": ref}).to_bytes()
             for text, concat in pieces]
    fallback = tuple(Message(verb, (shown, text), prefix).to_bytes() for text, _ in pieces if text)
    stored = b"\n".join(Message(verb, (shown, text), prefix, {CONCAT if concat else BATCH_TYPE: ""}).to_bytes()[:-2]
                        for text, concat in pieces)
    multi = Multiline(
        opener=Message("BATCH", ("+" + ref, BATCH_TYPE, shown), prefix).to_bytes(),
        inner=b"".join(inner) + Message("BATCH", ("-" + ref,)).to_bytes(),
        lines=fallback,
        tags_rest=f"@{format_tags(rest)} ".encode(),
        stored=stored + b"\r\n",
    )
    s.send_message(status + fold, chan, b.kind, f"@{format_tags(tags)} ".encode(), f"@time={tags['time']} ".encode(),
                   fallback[0], msgid, now, multi)
