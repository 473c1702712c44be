"""What the client knows: conversations, their lines, members, topics, unread counts.

This module never imports tkinter and does no I/O (habit 12: mantaray's backend
"does not depend on the GUI in any way"). :meth:`ChatModel.handle` takes one
:class:`~server.protocol.Message` from the server and returns a list of small
*updates* telling the controller what changed (a line to draw, a sidebar to
refresh, a line to send back, someone to notify). Tests feed it lines and check
the updates, without a display or a socket.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from server.protocol import Message, casefold, is_channel, numerics, parse, split_userhost

__all__ = [
    "SERVER_KEY",
    "ChatModel",
    "Conversation",
    "InputHistory",
    "Line",
    "Member",
    "bmp_safe",
    "nick_colour_index",
    "split_links",
]

SERVER_KEY = "*server*"
MAX_LINES = 2000  # per conversation; older lines are dropped from memory
TYPING_ACTIVE_SECONDS = 6.0  # IRCv3 +typing: "active" lapses after 6 s
TYPING_PAUSED_SECONDS = 30.0
URL_RE = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"']+")
_URL_TRAILING = ".,;:!?'\""
_URL_PAIRS = {")": "(", "]": "[", "}": "{"}
HISTORY_PAGE = 100  # lines per CHATHISTORY request
TARGETS_DAYS = 30  # how far back CHATHISTORY TARGETS looks for private conversations
GROUP_SECONDS = 300  # consecutive lines of one person within this time share one nick


# -- lines and conversations ----------------------------------------------------------


@dataclass(slots=True)
class Line:
    """One line of a conversation.

    ``kind`` is ``message``, ``action`` (/me), ``notice``, ``event`` (join, part,
    quit, nick, mode, topic, kick: drawn subdued), ``info`` (from the server or
    the client) or ``error``.
    """

    time: datetime
    kind: str
    nick: str
    text: str
    own: bool = False
    mention: bool = False  # drawn highlighted: the text names us (or a highlight word)
    msgid: str | None = None
    history: bool = False
    alert: bool = False  # counts as a mention (badge, bell, notification): a mention, or a private message
    action: str | None = None  # a clickable action drawn after the text ("reconnect")
    styled: str | None = None  # the text with its mIRC formatting codes, when it had any
    reply_to: str | None = None  # +draft/reply: the msgid this line answers
    quote: str | None = None  # "nick: text" of the line it answers, when we have it
    reactions: dict[str, list[str]] = field(default_factory=dict)  # +draft/react: emoji -> nicks


@dataclass(slots=True)
class Member:
    nick: str
    modes: str = ""  # mode letters, e.g. "ov"
    away: bool = False


@dataclass
class Conversation:
    """A channel, a private conversation (``query``) or the server buffer."""

    name: str
    kind: str  # "channel", "query" or "server"
    lines: list[Line] = field(default_factory=list)
    unread: int = 0
    mentions: int = 0
    topic: str = ""
    topic_by: str = ""
    members: dict[str, Member] = field(default_factory=dict)  # casefolded nick -> Member
    joined: bool = False
    typing: dict[str, tuple[str, float]] = field(default_factory=dict)  # folded nick -> (state, since)
    first_unread: int | None = None  # index of the first line not seen, for the "new messages" marker
    msgids: set[str] = field(default_factory=set)
    older_pending: bool = False  # a CHATHISTORY BEFORE is on its way
    older_done: bool = False  # the server has nothing older

    @property
    def last_time(self) -> datetime | None:
        live = [ln.time for ln in self.lines if ln.kind in ("message", "action", "notice")]
        return max(live) if live else None


# -- updates handed to the controller ------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineAdded:
    key: str
    line: Line


@dataclass(frozen=True, slots=True)
class Redraw:
    """Lines were inserted out of order (history): draw the conversation again.

    ``anchor``: older lines came in above it; keep it where the reader sees it."""

    key: str
    anchor: Line | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ChannelListChanged:
    """LIST replies arrived; ``done`` once the list is complete (323)."""

    done: bool


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    """The connection's state line changed (lost, reconnecting, back)."""

    online: bool


@dataclass(frozen=True, slots=True)
class SidebarChanged:
    pass


@dataclass(frozen=True, slots=True)
class MembersChanged:
    key: str


@dataclass(frozen=True, slots=True)
class TopicChanged:
    key: str


@dataclass(frozen=True, slots=True)
class TypingChanged:
    key: str


@dataclass(frozen=True, slots=True)
class Opened:
    """A conversation appeared; ``focus`` when the user asked for it."""

    key: str
    focus: bool


@dataclass(frozen=True, slots=True)
class Mention:
    key: str
    line: Line


@dataclass(frozen=True, slots=True)
class NickInUse:
    nick: str
    registered: bool


@dataclass(frozen=True, slots=True)
class PasswordRejected:
    text: str


@dataclass(frozen=True, slots=True)
class Registered:
    nick: str


@dataclass(frozen=True, slots=True)
class OwnNickChanged:
    nick: str


@dataclass(frozen=True, slots=True)
class AwayChanged:
    away: bool


@dataclass(frozen=True, slots=True)
class Send:
    """A line the model wants sent (rejoin, history request)."""

    message: Message


Update = (
    LineAdded | Redraw | SidebarChanged | MembersChanged | TopicChanged | TypingChanged | Opened | Mention
    | NickInUse | PasswordRejected | Registered | OwnNickChanged | AwayChanged | Send | ChannelListChanged
    | ConnectionChanged
)


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One row of the channel browser (RPL_LIST)."""

    name: str
    users: int
    topic: str


# -- text helpers -------------------------------------------------------------------


def bmp_safe(text: str) -> str:
    """``text`` with characters outside the Basic Multilingual Plane spelled out.

    Only for display, and only on Tk builds that cannot draw them (see
    ``view.tk_handles_astral``); the model and the wire keep the original.
    """
    if all(ord(c) <= 0xFFFF for c in text):
        return text
    out = []
    for c in text:
        if ord(c) > 0xFFFF:
            name = unicodedata.name(c, f"U+{ord(c):X}").lower()
            out.append(f"[{name}]")
        else:
            out.append(c)
    return "".join(out)


def split_links(text: str) -> Iterator[tuple[str, str | None]]:
    """``(chunk, url)`` pieces of ``text``: ``url`` is None for plain text."""
    pos = 0
    for m in URL_RE.finditer(text):
        url = _trim_url(m.group(0))
        if not url or url.lower() in ("www.", "http://", "https://"):
            continue
        if m.start() > pos:
            yield text[pos:m.start()], None
        yield url, url if "://" in url else "http://" + url
        pos = m.start() + len(url)
    if pos < len(text):
        yield text[pos:], None


def _trim_url(url: str) -> str:
    """A URL without the punctuation that ends the sentence around it; a closing bracket
    stays when the URL opened it (``https://en.wikipedia.org/wiki/Tk_(software)``)."""
    while url:
        last = url[-1]
        if last in _URL_TRAILING or (last in _URL_PAIRS and url.count(_URL_PAIRS[last]) < url.count(last)):
            url = url[:-1]
        else:
            break
    return url


def strip_formatting(text: str) -> str:
    """mIRC colours and bold/italic/underline codes removed (drawn as plain text)."""
    return _CODE_RE.sub("", text)


def nick_colour_index(nick: str, colours: int) -> int:
    """A stable colour for a nick (same on every run: no ``hash()`` salt)."""
    h = 0
    for c in casefold(nick):
        h = (h * 31 + ord(c)) & 0xFFFFFFFF
    return h % colours


def parse_time(tags: dict[str, str], now: datetime) -> datetime:
    """The IRCv3 ``server-time`` tag, or ``now`` when absent or unreadable."""
    value = tags.get("time")
    if value:
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return t if t.tzinfo else t.replace(tzinfo=UTC)
        except ValueError:
            pass
    return now


def format_time(t: datetime) -> str:
    """``2024-01-02T03:04:05.678Z`` as CHATHISTORY's ``timestamp=`` wants it."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"



# -- mIRC formatting ---------------------------------------------------------------------

MIRC_COLOURS = (
    "#ffffff", "#000000", "#00007f", "#009300", "#ff0000", "#7f0000", "#9c009c", "#fc7f00",
    "#ffff00", "#00fc00", "#009393", "#00ffff", "#0000fc", "#ff00ff", "#7f7f7f", "#d2d2d2",
)


@dataclass(frozen=True, slots=True)
class Style:
    """How a run of text is drawn: the state of the mIRC formatting codes before it."""

    bold: bool = False
    italic: bool = False
    underline: bool = False
    strike: bool = False
    mono: bool = False
    reverse: bool = False
    fg: str | None = None  # "#rrggbb"
    bg: str | None = None

    @property
    def plain(self) -> bool:
        return self == _PLAIN


_PLAIN = Style()
_CODE_RE = re.compile(r"\x03(\d{1,2})?(?:,(\d{1,2}))?|\x04([0-9a-fA-F]{6})?(?:,([0-9a-fA-F]{6}))?"
                      r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]")
_TOGGLES = {"\x02": "bold", "\x1d": "italic", "\x1f": "underline", "\x1e": "strike", "\x11": "mono",
            "\x16": "reverse"}


def _mirc(code: str | None) -> str | None:
    if code is None:
        return None
    n = int(code)
    return MIRC_COLOURS[n] if n < len(MIRC_COLOURS) else None


def parse_formatting(text: str) -> list[tuple[str, Style]]:
    """``text`` as runs of (chunk, style): bold ``\x02``, italic ``\x1d``, underline ``\x1f``,
    strike ``\x1e``, monospace ``\x11``, reverse ``\x16``, colours ``\x03fg,bg`` and ``\x04rrggbb``,
    reset ``\x0f``. The chunks joined are :func:`strip_formatting` of ``text``."""
    out: list[tuple[str, Style]] = []
    style = _PLAIN
    pos = 0
    for m in _CODE_RE.finditer(text):
        if m.start() > pos:
            out.append((text[pos:m.start()], style))
        pos = m.end()
        code = m.group(0)[0]
        if code == "\x0f":
            style = _PLAIN
        elif code in _TOGGLES:
            name = _TOGGLES[code]
            flags = {name: not getattr(style, name)}
            style = replace(style, **flags)  # type: ignore[arg-type]
        elif code == "\x03":
            if m.group(1) is None:
                style = replace(style, fg=None, bg=None)
            else:
                style = replace(style, fg=_mirc(m.group(1)), bg=_mirc(m.group(2)) if m.group(2) else style.bg)
        else:  # \x04 hex colours
            if m.group(3) is None:
                style = replace(style, fg=None, bg=None)
            else:
                style = replace(style, fg="#" + m.group(3).lower(),
                                bg="#" + m.group(4).lower() if m.group(4) else style.bg)
    if pos < len(text):
        out.append((text[pos:], style))
    merged: list[tuple[str, Style]] = []
    for chunk, st in out:
        if merged and merged[-1][1] == st:
            merged[-1] = (merged[-1][0] + chunk, st)
        else:
            merged.append((chunk, st))
    return merged


# -- how lines are laid out ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Breaks:
    """What the view draws before a line: a day separator, the end of history, or nothing;
    ``grouped`` when the line continues the previous one's speaker (no nick drawn)."""

    day: str | None = None
    history_end: bool = False
    grouped: bool = False


def day_label(t: datetime) -> str:
    return t.astimezone().strftime("%A %d %B %Y").replace(" 0", " ")


def breaks(prev: Line | None, line: Line) -> Breaks:
    """How ``line`` joins the line drawn before it."""
    here = line.time.astimezone()
    day = None
    if prev is None or prev.time.astimezone().date() != here.date():
        day = day_label(line.time)
    history_end = prev is not None and prev.history and not line.history
    grouped = (prev is not None and day is None and not history_end and line.kind == "message"
               and prev.kind == "message" and prev.nick == line.nick and prev.own == line.own
               and abs((line.time - prev.time).total_seconds()) <= GROUP_SECONDS)
    return Breaks(day, history_end, grouped)


# -- numerics in words -----------------------------------------------------------------------

def _duration(seconds: int) -> str:
    parts: list[str] = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2])


def _when(value: str) -> str:
    try:
        return datetime.fromtimestamp(int(value), UTC).astimezone().strftime("%Y-%m-%d %H:%M")
    except (ValueError, OverflowError, OSError):
        return value


def describe_numeric(msg: Message) -> str | None:
    """A server reply in words for people, or None to show its parameters as they are."""
    p = msg.params
    v = msg.verb

    def at(i: int) -> str:
        return p[i] if len(p) > i else ""

    if v == numerics.RPL_WHOISUSER:  # <me> <nick> <user> <host> * :<realname>
        return f"{at(1)} is {at(2)}@{at(3)} ({at(5)})"
    if v == numerics.RPL_WHOWASUSER:
        return f"{at(1)} was {at(2)}@{at(3)} ({at(5)})"
    if v == numerics.RPL_WHOISSERVER:  # <me> <nick> <server> :<info>
        return f"{at(1)} is connected to {at(2)}" + (f" ({at(3)})" if at(3) else "")
    if v == numerics.RPL_WHOISIDLE:  # <me> <nick> <idle> <signon> :seconds idle, signon time
        idle = int(at(2)) if at(2).isdigit() else 0
        text = f"{at(1)} has been idle {_duration(idle)}"
        if at(3).isdigit() and len(p) > 4:
            text += f", signed on {_when(at(3))}"
        return text
    if v == numerics.RPL_WHOISCHANNELS:
        return f"{at(1)} is in {p[-1].strip()}"
    if v == numerics.RPL_WHOISACCOUNT:  # <me> <nick> <account> :is logged in as
        return f"{at(1)} is logged in as {at(2)}"
    if v == numerics.RPL_WHOISSECURE:
        return f"{at(1)} is using a secure connection (TLS)"
    if v == numerics.RPL_WHOISOPERATOR:
        return f"{at(1)} is a server operator"
    if v in (numerics.RPL_ENDOFWHOIS, numerics.RPL_ENDOFWHOWAS, numerics.RPL_ENDOFBANLIST,
             numerics.RPL_ENDOFINFO, numerics.RPL_ENDOFHELP):
        return ""
    if v == numerics.RPL_CHANNELMODEIS:  # <me> <channel> <modes> [args]
        return f"{at(1)} has modes {' '.join(p[2:])}"
    if v == numerics.RPL_CREATIONTIME:
        return f"{at(1)} was created on {_when(at(2))}"
    if v == numerics.RPL_TOPICWHOTIME:  # <me> <channel> <who> <when>
        who = split_userhost(at(2)).nick or at(2)
        return f"Topic set by {who} on {_when(at(3))}"
    if v == numerics.RPL_INVITING:  # <me> <nick> <channel>
        return f"You invited {at(1)} to {at(2)}"
    if v == numerics.RPL_BANLIST:  # <me> <channel> <mask> [<who> <when>]
        by = f" by {split_userhost(at(3)).nick or at(3)} on {_when(at(4))}" if len(p) > 4 else ""
        return f"{at(1)} bans {at(2)}{by}"
    if v == numerics.RPL_UMODEIS:
        return f"Your modes: {' '.join(p[1:])}"
    if v in (numerics.RPL_LUSEROP, numerics.RPL_LUSERUNKNOWN, numerics.RPL_LUSERCHANNELS):
        return f"{at(1)} {p[-1]}"  # <me> <count> :operator(s) online
    if v in (numerics.RPL_LOCALUSERS, numerics.RPL_GLOBALUSERS) and len(p) >= 4:
        return p[-1] if any(ch.isdigit() for ch in p[-1]) else f"{p[-1]}: {at(1)} (at most {at(2)})"
    if v == numerics.RPL_TIME:
        return f"Server time: {p[-1]}"
    if v == numerics.RPL_VERSION:
        return f"Server version: {' '.join(x for x in p[1:] if x)}"
    if v == numerics.RPL_AWAY:
        return f"{at(1)} is away: {p[-1]}"
    return None


class InputHistory:
    """Up/Down through what was typed, like a shell: a draft survives browsing."""

    def __init__(self, limit: int = 200) -> None:
        self.items: list[str] = []
        self.limit = limit
        self.pos = 0
        self.draft = ""

    def add(self, text: str) -> None:
        if text and (not self.items or self.items[-1] != text):
            self.items.append(text)
            del self.items[:-self.limit]
        self.pos = len(self.items)
        self.draft = ""

    def older(self, current: str) -> str:
        if self.pos == len(self.items):
            self.draft = current
        if self.pos > 0:
            self.pos -= 1
            return self.items[self.pos]
        return current

    def newer(self, current: str) -> str:
        if self.pos < len(self.items):
            self.pos += 1
            return self.items[self.pos] if self.pos < len(self.items) else self.draft
        return current


# -- the model ------------------------------------------------------------------------

# Numerics drawn as plain information in the server buffer (welcome, MOTD, counts).
_SERVER_INFO = {
    numerics.RPL_WELCOME, numerics.RPL_YOURHOST, numerics.RPL_CREATED, numerics.RPL_LUSERCLIENT,
    numerics.RPL_LUSEROP, numerics.RPL_LUSERUNKNOWN, numerics.RPL_LUSERCHANNELS, numerics.RPL_LUSERME,
    numerics.RPL_LOCALUSERS, numerics.RPL_GLOBALUSERS, numerics.RPL_MOTD, numerics.RPL_MOTDSTART,
    numerics.RPL_ENDOFMOTD, numerics.ERR_NOMOTD,
}
# Replies to something the user asked for: drawn where the user is looking.
_ACTIVE_INFO = {
    numerics.RPL_WHOISUSER, numerics.RPL_WHOISSERVER, numerics.RPL_WHOISOPERATOR, numerics.RPL_WHOISIDLE,
    numerics.RPL_ENDOFWHOIS, numerics.RPL_WHOISCHANNELS, numerics.RPL_WHOISACCOUNT, numerics.RPL_WHOISSECURE,
    numerics.RPL_WHOISHOST, numerics.RPL_WHOISMODES, numerics.RPL_WHOISSPECIAL, numerics.RPL_WHOISACTUALLY,
    numerics.RPL_WHOWASUSER, numerics.RPL_ENDOFWHOWAS, numerics.RPL_CHANNELMODEIS, numerics.RPL_CREATIONTIME,
    numerics.RPL_INVITING, numerics.RPL_BANLIST, numerics.RPL_ENDOFBANLIST, numerics.RPL_UMODEIS, numerics.RPL_TIME,
    numerics.RPL_VERSION, numerics.RPL_ISON,
    numerics.RPL_USERHOST, numerics.RPL_HELPSTART, numerics.RPL_HELPTXT, numerics.RPL_ENDOFHELP,
    numerics.RPL_INFO, numerics.RPL_ENDOFINFO, numerics.RPL_YOUREOPER,
}
_QUIET = {
    numerics.RPL_MYINFO, numerics.RPL_ISUPPORT, numerics.RPL_ENDOFNAMES, numerics.RPL_ENDOFWHO,
    numerics.RPL_LISTSTART, numerics.RPL_TOPICWHOTIME,
}


class ChatModel:
    """The client's state, changed only by :meth:`handle` and a few user actions."""

    def __init__(self, nick: str = "") -> None:
        self.nick = nick
        self.registered = False
        self.away = False
        self.caps: set[str] = set()
        self.isupport: dict[str, str] = {}
        self.casemapping = "rfc1459"
        self.chantypes = "#&"
        self.prefix_modes = "ov"  # from PREFIX=(ov)@+
        self.prefix_chars = "@+"
        self.chanmodes = ("beI", "k", "l", "imnst")
        self.conversations: dict[str, Conversation] = {SERVER_KEY: Conversation("Server", "server")}
        self.active = SERVER_KEY
        self.wanted: dict[str, str] = {}  # channels to be in: folded name -> name (kept across reconnects)
        self._names_open: set[str] = set()
        self._batches: dict[str, tuple[str, list[str], list[Message]]] = {}  # ref -> (type, params, messages)
        self._history_asked: set[str] = set()
        self._now = datetime.now(UTC)  # arrival time of the message being handled
        self.away_message: str | None = None  # what we said with /away, set again after a reconnect
        self.connection_line: Line | None = None  # the one line in the server tab about a lost connection
        self.lost_at: datetime | None = None
        self.seen_until: datetime | None = None  # when this user was last here (the app closed)
        self.channel_list: list[ChannelInfo] = []
        self._listing = False
        self.ignored: set[str] = set()  # folded nicks whose messages are not shown
        self.highlights: list[str] = []  # words that count as mentions
        self.muted: set[str] = set()  # conversation keys that never alert

    # -- names and lookups ------------------------------------------------------------
    def fold(self, name: str) -> str:
        return casefold(name, self.casemapping if self.casemapping in ("ascii", "rfc1459") else "rfc1459")

    def is_channel(self, name: str) -> bool:
        return is_channel(name, self.chantypes)

    def conversation(self, name: str) -> Conversation | None:
        return self.conversations.get(self.key(name))

    def key(self, name: str) -> str:
        return SERVER_KEY if name == SERVER_KEY else self.fold(name)

    def ordered(self) -> list[tuple[str, Conversation]]:
        """The sidebar's order: the server, channels, then private conversations."""
        rank = {"server": 0, "channel": 1, "query": 2}
        return sorted(self.conversations.items(), key=lambda kv: (rank[kv[1].kind], kv[0]))

    def is_mine(self, nick: str | None) -> bool:
        return nick is not None and self.fold(nick) == self.fold(self.nick)

    def has_history(self) -> bool:
        return "draft/chathistory" in self.caps or "chathistory" in self.caps

    def sorted_members(self, key: str) -> list[Member]:
        conv = self.conversations.get(key)
        if conv is None:
            return []
        order = self.prefix_modes

        def rank(m: Member) -> tuple[int, str]:
            best = min((order.index(c) for c in m.modes if c in order), default=len(order))
            return best, self.fold(m.nick)

        return sorted(conv.members.values(), key=rank)

    def prefix_of(self, member: Member) -> str:
        """The highest prefix character (``@`` or ``+``) of a member, or ''."""
        for mode, char in zip(self.prefix_modes, self.prefix_chars, strict=False):
            if mode in member.modes:
                return char
        return ""

    def typing_names(self, key: str) -> list[str]:
        conv = self.conversations.get(key)
        if conv is None:
            return []
        return [conv.members[k].nick if k in conv.members else k for k, (state, _) in conv.typing.items()
                if state == "active"]

    # -- user actions --------------------------------------------------------------------
    def open(self, name: str, focus: bool = True) -> tuple[str, list[Update]]:
        """Open (or find) a conversation by name; channels only once joined."""
        key = self.key(name)
        updates: list[Update] = []
        if key not in self.conversations:
            kind = "channel" if self.is_channel(name) else "query"
            self.conversations[key] = Conversation(name, kind)
            updates += [Opened(key, focus), SidebarChanged()]
        elif focus:
            updates.append(Opened(key, True))
        return key, updates

    def close(self, key: str) -> list[Update]:
        if key == SERVER_KEY or key not in self.conversations:
            return []
        del self.conversations[key]
        self.wanted.pop(key, None)
        if self.active == key:
            self.active = SERVER_KEY
        return [SidebarChanged()]

    def select(self, key: str) -> None:
        """The user looks at ``key``: its unread lines become read; the one looked at
        before keeps a marker where its new lines will start."""
        old = self.conversations.get(self.active)
        if old is not None and self.active != key:
            old.first_unread = len(old.lines)
        conv = self.conversations.get(key)
        if conv is None:
            return
        self.active = key
        conv.unread = 0
        conv.mentions = 0

    def mark_read(self, key: str) -> None:
        conv = self.conversations.get(key)
        if conv is not None:
            conv.unread = conv.mentions = 0

    def add_own(self, target: str, kind: str, text: str, now: datetime) -> list[Update]:
        """Our own line, drawn at once when the server will not echo it back."""
        key, updates = self.open(target, focus=False)
        return updates + self._add(key, Line(now, kind, self.nick, text, own=True))

    def add_info(self, key: str | None, text: str, now: datetime, kind: str = "info") -> list[Update]:
        key = key if key in self.conversations else self.active if key is None else SERVER_KEY
        return self._add(key, Line(now, kind, "", text))

    def disconnected(self, reason: str, now: datetime, retry_in: float | None = None) -> list[Update]:
        """The connection is gone (or a try to get it back failed): everyone is forgotten,
        channels stay wanted. One line in the server tab says so, updated at each try,
        instead of a line per try in every conversation."""
        updates: list[Update] = []
        self.registered = False
        self._names_open.clear()
        self._batches.clear()
        self._history_asked.clear()
        self._listing = False
        for key, conv in self.conversations.items():
            conv.older_pending = False
            if conv.kind == "channel" and conv.joined:
                conv.joined = False
                conv.members.clear()
                conv.typing.clear()
                updates.append(MembersChanged(key))
        if self.lost_at is None:
            self.lost_at = now
        if retry_in is not None:
            text = f"Connection lost ({reason}). Reconnecting in {max(1, round(retry_in))} s\u2026"
        else:
            text = f"Disconnected ({reason})."
        return updates + self._connection_line(text, now, "error", "reconnect")

    def _connection_line(self, text: str, now: datetime, kind: str, action: str | None) -> list[Update]:
        line = self.connection_line
        server = self.conversations[SERVER_KEY]
        online = action is None
        if line is not None and server.lines and server.lines[-1] is line:
            line.text, line.kind, line.action, line.time = text, kind, action, now
            return [Redraw(SERVER_KEY), ConnectionChanged(online)]
        line = Line(now, kind, "", text, action=action)
        self.connection_line = None if online else line
        return [*self._add(SERVER_KEY, line, count=False), ConnectionChanged(online)]

    def expire_typing(self, when: datetime) -> list[Update]:
        now = when.timestamp()
        updates: list[Update] = []
        for key, conv in self.conversations.items():
            stale = [n for n, (state, since) in conv.typing.items()
                     if now - since > (TYPING_ACTIVE_SECONDS if state == "active" else TYPING_PAUSED_SECONDS)]
            for n in stale:
                del conv.typing[n]
            if stale:
                updates.append(TypingChanged(key))
        return updates

    def complete(self, key: str, word: str, at_start: bool, commands: Iterable[str]) -> list[str]:
        """Completions for ``word`` in conversation ``key``: commands after a '/',
        channels after a channel type, nicks otherwise (with ': ' at line start)."""
        if word.startswith("/") and at_start:
            return sorted("/" + c for c in commands if c.startswith(word[1:].lower()))
        folded = self.fold(word)
        if word and word[0] in self.chantypes:
            return sorted(c.name for c in self.conversations.values()
                          if c.kind == "channel" and self.fold(c.name).startswith(folded))
        conv = self.conversations.get(key)
        names = [m.nick for m in conv.members.values()] if conv else []
        if conv is not None and conv.kind == "query":
            names.append(conv.name)
        found = sorted((n for n in names if self.fold(n).startswith(folded) and not self.is_mine(n)), key=self.fold)
        return [n + ": " for n in found] if at_start else found

    # -- the protocol ------------------------------------------------------------------
    def handle(self, msg: Message, now: datetime | None = None) -> list[Update]:
        """Apply one message from the server; return what changed."""
        now = now or datetime.now(UTC)
        self._now = now
        batch = msg.tags.get("batch")
        if batch and batch in self._batches and msg.verb != "BATCH":
            self._batches[batch][2].append(msg)
            return []
        handler: Callable[[Message, datetime], list[Update]] | None = getattr(self, "_on_" + msg.verb, None)
        if handler is not None:
            return handler(msg, parse_time(msg.tags, now))
        return self._on_numeric(msg, parse_time(msg.tags, now))

    def _add(self, key: str, line: Line, count: bool = True) -> list[Update]:
        conv = self.conversations[key]
        if line.msgid:
            if line.msgid in conv.msgids:
                return []
            conv.msgids.add(line.msgid)
        conv.lines.append(line)
        if len(conv.lines) > MAX_LINES:
            drop = len(conv.lines) - MAX_LINES
            del conv.lines[:drop]
            if conv.first_unread is not None:
                conv.first_unread = max(0, conv.first_unread - drop)
        updates: list[Update] = [LineAdded(key, line)]
        alert = line.alert and key not in self.muted
        if count and key != self.active and not line.own and line.kind in ("message", "action", "notice"):
            conv.unread += 1
            if alert:
                conv.mentions += 1
            updates.append(SidebarChanged())
        if alert and not line.own and not line.history:
            updates.append(Mention(key, line))
        return updates

    def _mentions_me(self, text: str) -> bool:
        folded = self.fold(text)
        for word in [self.nick, *self.highlights]:
            if not word:
                continue
            me = re.escape(self.fold(word))
            if re.search(rf"(?<![\w\[\]\\`^{{|}}-]){me}(?![\w\[\]\\`^{{|}}-])", folded) is not None:
                return True
        return False

    def _member_line(self, key: str, text: str, t: datetime, msg: Message) -> list[Update]:
        return self._add(key, Line(t, "event", "", text, msgid=msg.tags.get("msgid")))

    # registration -------------------------------------------------------------------
    def _on_001(self, msg: Message, t: datetime) -> list[Update]:
        self.nick = msg.params[0]
        self.registered = True
        updates: list[Update] = [Registered(self.nick)]
        lost = self.lost_at
        if lost is not None:
            local = self._now.astimezone().strftime("%H:%M")
            updates += self._connection_line(
                f"Reconnected at {local} (offline since {lost.astimezone().strftime('%H:%M')}).", self._now, "info",
                None)
            self.connection_line = None
        updates += self._add(SERVER_KEY, Line(t, "info", "", msg.params[-1]), count=False)
        updates += self._rejoin()
        self.lost_at = None
        return updates

    def _rejoin(self) -> list[Update]:
        """After 001: channels again, away again, and the history of private conversations."""
        updates: list[Update] = []
        if self.wanted:
            names = sorted(self.wanted.values(), key=self.fold)
            updates.append(Send(Message("JOIN", (",".join(names),))))
        if self.away_message:
            updates.append(Send(Message("AWAY", (self.away_message,))))
        if self.has_history():
            for key, conv in self.conversations.items():
                if conv.kind == "query" and key not in self._history_asked:
                    self._history_asked.add(key)
                    updates.append(Send(self.history_request(key)))
            # Private conversations that moved since we last looked: since the connection
            # was lost, since the app last closed, or over the last weeks on a first run.
            start = self.lost_at or self.seen_until or self._now - timedelta(days=TARGETS_DAYS)
            since = format_time(min(start, self._now - timedelta(minutes=2)))  # a margin for clock skew
            updates.append(Send(Message("CHATHISTORY", ("TARGETS", "timestamp=" + since,
                                                        "timestamp=" + format_time(self._now), "50"))))
        return updates

    def note_sent(self, msg: Message) -> None:
        """The user sent ``msg``: remember what must survive a reconnect (the away message)."""
        if msg.verb == "AWAY":
            self.away_message = msg.params[0] if msg.params and msg.params[0] else None

    def restore_queries(self, names: Iterable[str]) -> list[Update]:
        """Private conversations open when the app last closed, opened again (their history
        is asked for once signed in)."""
        updates: list[Update] = []
        for name in names:
            if name and not self.is_channel(name):
                updates += self.open(name, focus=False)[1]
        return updates

    def older_request(self, key: str) -> Message | None:
        """CHATHISTORY BEFORE the oldest line of ``key``, when the user scrolled to its top;
        None when one is on its way, the server has nothing older, or offers no history."""
        conv = self.conversations.get(key)
        if conv is None or conv.kind == "server" or conv.older_pending or conv.older_done:
            return None
        if not self.has_history() or not self.registered:
            return None
        spoken = [ln for ln in conv.lines if ln.kind in ("message", "action", "notice")]
        if not spoken:
            return None
        with_id = next((ln for ln in spoken if ln.msgid), None)
        if with_id is not None and with_id.time <= spoken[0].time:
            selector = f"msgid={with_id.msgid}"
        else:
            selector = "timestamp=" + format_time(spoken[0].time)
        conv.older_pending = True
        return Message("CHATHISTORY", ("BEFORE", conv.name, selector, str(self._history_page())))

    def _history_page(self) -> int:
        limit = self.isupport.get("CHATHISTORY", "")
        return min(HISTORY_PAGE, int(limit)) if limit.isdigit() and int(limit) > 0 else HISTORY_PAGE

    def _on_005(self, msg: Message, t: datetime) -> list[Update]:
        for token in msg.params[1:-1]:
            name, _, value = token.partition("=")
            if name.startswith("-"):
                self.isupport.pop(name[1:], None)
                continue
            self.isupport[name] = value
            if name == "CASEMAPPING" and value in ("ascii", "rfc1459"):
                self.casemapping = value
            elif name == "CHANTYPES" and value:
                self.chantypes = value
            elif name == "PREFIX" and (m := re.fullmatch(r"\(([^)]*)\)(.*)", value)) and len(m[1]) == len(m[2]):
                self.prefix_modes, self.prefix_chars = m[1], m[2]
            elif name == "CHANMODES":
                parts = ([*value.split(","), "", "", "", ""])[:4]
                self.chanmodes = (parts[0], parts[1], parts[2], parts[3])
        return []

    def _on_433(self, msg: Message, t: datetime) -> list[Update]:
        nick = msg.params[1] if len(msg.params) > 2 else self.nick
        updates: list[Update] = [NickInUse(nick, self.registered)]
        if self.registered:
            updates += self.add_info(None, f"The nickname {nick} is already taken.", t, "error")
        return updates

    _on_432 = _on_433

    def _on_464(self, msg: Message, t: datetime) -> list[Update]:
        return [PasswordRejected(msg.params[-1]),
                *self._add(SERVER_KEY, Line(t, "error", "", "The server password was not accepted."), count=False)]

    def _on_ERROR(self, msg: Message, t: datetime) -> list[Update]:
        text = msg.params[-1] if msg.params else "closing link"
        return self._add(SERVER_KEY, Line(t, "error", "", f"Server closed the connection: {text}"), count=False)

    def _on_CAP(self, msg: Message, t: datetime) -> list[Update]:
        return []  # negotiation is the network client's; it reports the result in set_caps

    def _on_PING(self, msg: Message, t: datetime) -> list[Update]:
        return []

    _on_PONG = _on_PING

    # channels -------------------------------------------------------------------------
    def _on_JOIN(self, msg: Message, t: datetime) -> list[Update]:
        if not msg.params or not msg.source:
            return []
        nick = split_userhost(msg.source).nick or msg.source
        channel = msg.params[0]
        if self.is_mine(nick):
            key, updates = self.open(channel, focus=self.fold(channel) not in self.wanted)
            conv = self.conversations[key]
            conv.name = channel
            conv.joined = True
            conv.members.clear()
            conv.topic = conv.topic_by = ""  # a 332 follows when the channel has one
            updates.append(TopicChanged(key))
            self.wanted[key] = channel
            updates += [SidebarChanged(), MembersChanged(key)]
            updates += self._member_line(key, f"You joined {channel}", t, msg)
            if self.has_history() and key not in self._history_asked:
                self._history_asked.add(key)
                updates.append(Send(self.history_request(key)))
            return updates
        key = self.key(channel)
        other = self.conversations.get(key)
        if other is None:
            return []
        other.members[self.fold(nick)] = Member(nick)
        return [MembersChanged(key), *self._member_line(key, f"{nick} joined", t, msg)]

    def history_request(self, key: str) -> Message:
        """CHATHISTORY for a channel: what came after the last line we have (the gap
        of a reconnect), or the latest lines when we have none."""
        conv = self.conversations[key]
        last = conv.last_time
        n = str(self._history_page())
        if last is None:
            return Message("CHATHISTORY", ("LATEST", conv.name, "*", n))
        return Message("CHATHISTORY", ("AFTER", conv.name, "timestamp=" + format_time(last), n))

    def _on_PART(self, msg: Message, t: datetime) -> list[Update]:
        if not msg.params or not msg.source:
            return []
        nick = split_userhost(msg.source).nick or msg.source
        key = self.key(msg.params[0])
        conv = self.conversations.get(key)
        if conv is None:
            return []
        reason = f" ({msg.params[1]})" if len(msg.params) > 1 and msg.params[1] else ""
        if self.is_mine(nick):
            conv.joined = False
            conv.members.clear()
            self.wanted.pop(key, None)
            left = self._member_line(key, f"You left {conv.name}{reason}", t, msg)
            return [MembersChanged(key), SidebarChanged(), *left]
        conv.members.pop(self.fold(nick), None)
        conv.typing.pop(self.fold(nick), None)
        return [MembersChanged(key), *self._member_line(key, f"{nick} left{reason}", t, msg)]

    def _on_KICK(self, msg: Message, t: datetime) -> list[Update]:
        if len(msg.params) < 2:
            return []
        by = split_userhost(msg.source or "").nick or "server"
        key = self.key(msg.params[0])
        conv = self.conversations.get(key)
        if conv is None:
            return []
        victim = msg.params[1]
        reason = f" ({msg.params[2]})" if len(msg.params) > 2 and msg.params[2] else ""
        conv.members.pop(self.fold(victim), None)
        if self.is_mine(victim):
            conv.joined = False
            conv.members.clear()
            self.wanted.pop(key, None)
            line = Line(t, "error", "", f"You were kicked from {conv.name} by {by}{reason}", mention=True)
            return [MembersChanged(key), SidebarChanged(), *self._add(key, line)]
        return [MembersChanged(key), *self._member_line(key, f"{by} kicked {victim}{reason}", t, msg)]

    def _on_QUIT(self, msg: Message, t: datetime) -> list[Update]:
        nick = split_userhost(msg.source or "").nick
        if not nick:
            return []
        folded = self.fold(nick)
        reason = f" ({msg.params[0]})" if msg.params and msg.params[0] else ""
        updates: list[Update] = []
        for key, conv in self.conversations.items():
            if folded in conv.members or (conv.kind == "query" and key == folded):
                conv.members.pop(folded, None)
                conv.typing.pop(folded, None)
                updates += [MembersChanged(key), *self._member_line(key, f"{nick} quit{reason}", t, msg)]
        return updates

    def _on_NICK(self, msg: Message, t: datetime) -> list[Update]:
        old = split_userhost(msg.source or "").nick
        if not old or not msg.params:
            return []
        new = msg.params[0]
        updates: list[Update] = []
        mine = self.is_mine(old)
        if mine:
            self.nick = new
            updates.append(OwnNickChanged(new))
        fold_old, fold_new = self.fold(old), self.fold(new)
        for key, conv in list(self.conversations.items()):
            member = conv.members.pop(fold_old, None)
            if member is not None:
                member.nick = new
                conv.members[fold_new] = member
            if member is not None or (mine and conv.kind == "server"):
                text = f"You are now known as {new}" if mine else f"{old} is now known as {new}"
                updates += [MembersChanged(key), *self._member_line(key, text, t, msg)]
            if conv.kind == "query" and key == fold_old and fold_new not in self.conversations:
                del self.conversations[key]
                conv.name = new
                self.conversations[fold_new] = conv
                if self.active == key:
                    self.active = fold_new
                updates += [SidebarChanged(), *self._member_line(fold_new, f"{old} is now known as {new}", t, msg)]
        return updates

    def _on_MODE(self, msg: Message, t: datetime) -> list[Update]:
        if len(msg.params) < 2:
            return []
        target = msg.params[0]
        by = split_userhost(msg.source or "").nick or msg.source or "server"
        text = " ".join(msg.params[1:])
        if not self.is_channel(target):
            return self.add_info(SERVER_KEY, f"Your modes: {text}", t)
        key = self.key(target)
        conv = self.conversations.get(key)
        if conv is None:
            return []
        always, set_only = self.chanmodes[0] + self.chanmodes[1] + self.prefix_modes, self.chanmodes[2]
        args = list(msg.params[2:])
        adding = True
        for c in msg.params[1]:
            if c in "+-":
                adding = c == "+"
                continue
            arg = args.pop(0) if (c in always or (c in set_only and adding)) and args else None
            if c in self.prefix_modes and arg is not None:
                member = conv.members.get(self.fold(arg))
                if member is not None:
                    member.modes = (member.modes + c) if adding and c not in member.modes else (
                        member.modes if adding else member.modes.replace(c, ""))
        return [MembersChanged(key), *self._member_line(key, f"{by} sets mode {text}", t, msg)]

    def _on_TOPIC(self, msg: Message, t: datetime) -> list[Update]:
        if not msg.params:
            return []
        key = self.key(msg.params[0])
        conv = self.conversations.get(key)
        if conv is None:
            return []
        by = split_userhost(msg.source or "").nick or "server"
        conv.topic = msg.params[1] if len(msg.params) > 1 else ""
        conv.topic_by = by
        text = f"{by} changed the topic to: {conv.topic}" if conv.topic else f"{by} cleared the topic"
        return [TopicChanged(key), *self._member_line(key, text, t, msg)]

    def _on_332(self, msg: Message, t: datetime) -> list[Update]:
        key = self.key(msg.params[1])
        conv = self.conversations.get(key)
        if conv is None:
            return []
        conv.topic = msg.params[-1]
        return [TopicChanged(key)]

    def _on_331(self, msg: Message, t: datetime) -> list[Update]:
        conv = self.conversations.get(self.key(msg.params[1]))
        if conv is None:
            return []
        conv.topic = ""
        return [TopicChanged(self.key(msg.params[1]))]

    def _on_353(self, msg: Message, t: datetime) -> list[Update]:
        if len(msg.params) < 4:
            return []
        key = self.key(msg.params[2])
        conv = self.conversations.get(key)
        if conv is None:
            return []
        if key not in self._names_open:
            self._names_open.add(key)
            conv.members.clear()
        for item in msg.params[3].split():
            modes = ""
            while item and item[0] in self.prefix_chars:
                modes += self.prefix_modes[self.prefix_chars.index(item[0])]
                item = item[1:]
            nick = split_userhost(item).nick or item
            if nick:
                old = conv.members.get(self.fold(nick))
                conv.members[self.fold(nick)] = Member(nick, modes, old.away if old else False)
        return [MembersChanged(key)]

    def _on_366(self, msg: Message, t: datetime) -> list[Update]:
        if len(msg.params) > 1:
            self._names_open.discard(self.key(msg.params[1]))
        return []

    def _on_352(self, msg: Message, t: datetime) -> list[Update]:
        # RPL_WHOREPLY <me> <channel> <user> <host> <server> <nick> <flags> :<hops> <realname>
        if len(msg.params) < 7:
            return []
        return self._set_away(msg.params[5], msg.params[6].startswith("G"))

    def _set_away(self, nick: str, away: bool) -> list[Update]:
        folded = self.fold(nick)
        updates: list[Update] = []
        for key, conv in self.conversations.items():
            member = conv.members.get(folded)
            if member is not None and member.away != away:
                member.away = away
                updates.append(MembersChanged(key))
        return updates

    def _on_AWAY(self, msg: Message, t: datetime) -> list[Update]:  # away-notify
        nick = split_userhost(msg.source or "").nick
        return self._set_away(nick, bool(msg.params and msg.params[0])) if nick else []

    def _on_301(self, msg: Message, t: datetime) -> list[Update]:
        nick = msg.params[1]
        updates = self._set_away(nick, True)
        key = self.key(nick)
        where = key if key in self.conversations else None
        return updates + self.add_info(where, f"{nick} is away: {msg.params[-1]}", t)

    def _on_305(self, msg: Message, t: datetime) -> list[Update]:
        self.away = False
        return [AwayChanged(False), *self._set_away(self.nick, False),
                *self.add_info(None, "You are no longer marked as away.", t)]

    def _on_306(self, msg: Message, t: datetime) -> list[Update]:
        self.away = True
        return [AwayChanged(True), *self._set_away(self.nick, True),
                *self.add_info(None, "You are now marked as away.", t)]

    # messages ---------------------------------------------------------------------------
    def _on_PRIVMSG(self, msg: Message, t: datetime) -> list[Update]:
        return self._message(msg, t, "message")

    def _on_NOTICE(self, msg: Message, t: datetime) -> list[Update]:
        return self._message(msg, t, "notice")

    def _message(self, msg: Message, t: datetime, kind: str) -> list[Update]:
        found = self._line_for(msg, t, kind)
        if found is None:
            return []
        key, line, updates = found
        self._quote(key, line)
        if line.kind == "info":  # a CTCP request: shown, never counted
            return updates + self._add(key, line, count=False)
        return updates + self._add(key, line)

    def _line_for(self, msg: Message, t: datetime, kind: str) -> tuple[str, Line, list[Update]] | None:
        """Where a PRIVMSG or NOTICE belongs and the line to draw for it."""
        if len(msg.params) < 2:
            return None
        target, text = msg.params[0], msg.params[1]
        hm = split_userhost(msg.source or "")
        nick = hm.nick or ""
        msgid = msg.tags.get("msgid")
        from_server = msg.source is None or (hm.user is None and hm.host is None and "." in nick)
        if kind == "notice" and (from_server or not self.registered or target == "*"):
            return SERVER_KEY, Line(t, "notice", nick, text, msgid=msgid), []
        if text.startswith("\x01"):
            ctcp, _, rest = text.strip("\x01").partition(" ")
            if ctcp.upper() != "ACTION":
                where = self.key(nick) if self.key(nick) in self.conversations else SERVER_KEY
                return where, Line(t, "info", "", f"CTCP {ctcp.upper()} from {nick} {rest}".rstrip()), []
            kind, text = "action", rest
        own = self.is_mine(nick)
        bare = target.lstrip(self.prefix_chars)  # STATUSMSG: @#chan
        if self.is_channel(bare):
            name = bare
        elif own:
            name = target  # echo-message of what we sent privately
        else:
            name = nick
        if not own and self.fold(nick) in self.ignored:
            return None
        key, updates = self.open(name, focus=False)
        conv = self.conversations[key]
        if conv.typing.pop(self.fold(nick), None) is not None:
            updates.append(TypingChanged(key))
        mention = not own and self._mentions_me(text)
        alert = not own and (mention or (conv.kind == "query" and kind != "notice"))
        plain = strip_formatting(text)
        line = Line(t, kind, nick, plain, own=own, mention=mention, msgid=msgid, alert=alert,
                    styled=text if plain != text else None,
                    reply_to=msg.tags.get("+draft/reply") or msg.tags.get("+reply"))
        return key, line, updates

    def _on_TAGMSG(self, msg: Message, t: datetime) -> list[Update]:
        if "+draft/react" in msg.tags or "+react" in msg.tags:
            return self._reaction(msg)
        state = msg.tags.get("+typing") or msg.tags.get("+draft/typing")
        nick = split_userhost(msg.source or "").nick
        if not state or not nick or not msg.params or self.is_mine(nick):
            return []
        target = msg.params[0].lstrip(self.prefix_chars)
        key = self.key(target if self.is_channel(target) else nick)
        conv = self.conversations.get(key)
        if conv is None:
            return []
        if state == "done":
            conv.typing.pop(self.fold(nick), None)
        else:
            conv.typing[self.fold(nick)] = (state, self._now.timestamp())
        return [TypingChanged(key)]

    def _reaction(self, msg: Message) -> list[Update]:
        """``+draft/react`` on a TAGMSG that replies (``+draft/reply``) to a line we have."""
        emoji = msg.tags.get("+draft/react") or msg.tags.get("+react") or ""
        target_id = msg.tags.get("+draft/reply") or msg.tags.get("+reply")
        nick = split_userhost(msg.source or "").nick
        if not emoji or not target_id or not nick or not msg.params:
            return []
        if not self.is_mine(nick) and self.fold(nick) in self.ignored:
            return []
        target = msg.params[0].lstrip(self.prefix_chars)
        key = self.key(target if self.is_channel(target) or self.is_mine(nick) else nick)
        conv = self.conversations.get(key)
        line = self.line_by_msgid(key, target_id)
        if conv is None or line is None:
            return []
        who = line.reactions.setdefault(emoji[:16], [])
        if nick not in who:
            who.append(nick)
        return [Redraw(key)]

    def _quote(self, key: str, line: Line) -> None:
        if line.reply_to:
            original = self.line_by_msgid(key, line.reply_to)
            if original is not None:
                text = original.text if len(original.text) <= 60 else original.text[:59] + "\u2026"
                line.quote = f"{original.nick}: {text}"

    def line_by_msgid(self, key: str, msgid: str) -> Line | None:
        conv = self.conversations.get(key)
        if conv is None or msgid not in conv.msgids:
            return None
        return next((ln for ln in reversed(conv.lines) if ln.msgid == msgid), None)

    # batches (chathistory) ----------------------------------------------------------------
    def _on_BATCH(self, msg: Message, t: datetime) -> list[Update]:
        if not msg.params:
            return []
        ref = msg.params[0]
        if ref.startswith("+"):
            self._batches[ref[1:]] = (msg.params[1] if len(msg.params) > 1 else "", list(msg.params[2:]), [])
            return []
        kind, params, messages = self._batches.pop(ref[1:], ("", [], []))
        if kind in ("draft/chathistory-targets", "chathistory-targets"):
            return self._targets(messages)
        if kind == "draft/multiline" and messages:
            return self._multiline(messages, t)
        if kind not in ("chathistory", "draft/chathistory") or not params:
            updates: list[Update] = []
            for m in messages:  # a batch we don't know: its lines count as if unbatched
                m.tags.pop("batch", None)
                updates += self.handle(m, t)
            return updates
        return self.merge_history(params[0], messages, t)

    def _targets(self, messages: list[Message]) -> list[Update]:
        """CHATHISTORY TARGETS: private conversations we had lately are opened, and their
        history asked for (channels come back by being joined)."""
        updates: list[Update] = []
        for m in messages:
            if m.verb != "CHATHISTORY" or len(m.params) < 2 or m.params[0].upper() != "TARGETS":
                continue
            name = m.params[1]
            if self.is_channel(name) or self.is_mine(name) or self.fold(name) in self.ignored:
                continue
            key, opened = self.open(name, focus=False)
            updates += opened
            if key not in self._history_asked and self.has_history():
                self._history_asked.add(key)
                updates.append(Send(self.history_request(key)))
        return updates

    def _multiline(self, messages: list[Message], t: datetime) -> list[Update]:
        """A ``draft/multiline`` batch: one message of several lines."""
        first = messages[0]
        parts: list[str] = []
        for m in messages:
            if m.verb != first.verb or len(m.params) < 2:
                continue
            if "draft/multiline-concat" in m.tags and parts:
                parts[-1] += m.params[1]
            else:
                parts.append(m.params[1])
        tags = {k: v for k, v in first.tags.items() if k != "batch"}
        combined = Message(first.verb, (first.params[0], "\n".join(parts)), first.source, tags)
        return self._message(combined, parse_time(tags, t), "message" if first.verb == "PRIVMSG" else "notice")

    def merge_history(self, target: str, messages: list[Message], now: datetime) -> list[Update]:
        """Put history lines in their place by time, skipping msgids already shown. Mentions
        in them are highlighted but never alert or count."""
        key = self.key(target)
        if key not in self.conversations and not self.is_channel(target) and not messages:
            return []  # an empty answer about a private conversation we do not have open
        key, updates = self.open(target, focus=False)
        conv = self.conversations[key]
        older = conv.older_pending
        conv.older_pending = False
        anchor = next((ln for ln in conv.lines if ln.kind in ("message", "action", "notice")), None)
        page: list[Line] = []
        for m in messages:
            if m.verb not in ("PRIVMSG", "NOTICE"):
                if m.verb == "TAGMSG":
                    self._reaction(m)
                continue
            found = self._line_for(m, parse_time(m.tags, now), "message" if m.verb == "PRIVMSG" else "notice")
            if found is None:
                continue
            line = found[1]
            if line.msgid and line.msgid in conv.msgids:
                continue
            if line.msgid:
                conv.msgids.add(line.msgid)
            line.alert = False  # old news: no alerts, no counts
            line.history = True
            page.append(line)
        added = len(page)
        # An older page goes in front, a newer one behind; the stable sort by time then keeps
        # lines of the same millisecond in the order the server gave them.
        if older:
            conv.lines[:0] = page
            if conv.first_unread is not None:
                conv.first_unread += added
        else:
            conv.lines.extend(page)
        for line in page:
            self._quote(key, line)
        if older and added == 0:
            conv.older_done = True
        if added:
            # A stable sort keeps live lines with equal times in arrival order.
            conv.lines.sort(key=lambda ln: ln.time)
            if not older:
                del conv.lines[:-MAX_LINES]
            updates.append(Redraw(key, anchor if older else None))
        elif older:
            updates.append(Redraw(key, anchor))
        return updates

    # everything else --------------------------------------------------------------------
    def _on_321(self, msg: Message, t: datetime) -> list[Update]:
        self.channel_list = []
        self._listing = True
        return [ChannelListChanged(False)]

    def _on_322(self, msg: Message, t: datetime) -> list[Update]:  # <me> <channel> <users> :<topic>
        if len(msg.params) < 3:
            return []
        if not self._listing:
            self.channel_list = []
            self._listing = True
        users = int(msg.params[2]) if msg.params[2].isdigit() else 0
        topic = strip_formatting(msg.params[3]) if len(msg.params) > 3 else ""
        topic = re.sub(r"^\[\+[^\]]*\]\s*", "", topic)  # "[+nt] the topic": the modes some servers prefix
        self.channel_list.append(ChannelInfo(msg.params[1], users, topic))
        return [ChannelListChanged(False)] if len(self.channel_list) % 50 == 0 else []

    def _on_323(self, msg: Message, t: datetime) -> list[Update]:
        if not self._listing:
            self.channel_list = []
        self._listing = False
        return [ChannelListChanged(True)]

    def _on_numeric(self, msg: Message, t: datetime) -> list[Update]:
        verb = msg.verb
        if verb in _QUIET or not verb.isdigit():
            return []
        described = describe_numeric(msg)
        if described == "":
            return []
        text = described if described is not None else " ".join(p for p in msg.params[1:] if p)
        if verb in _SERVER_INFO:
            if described is None and verb not in (numerics.RPL_LUSERCLIENT, numerics.RPL_LUSERME):
                text = msg.params[-1]
            return self._add(SERVER_KEY, Line(t, "info", "", text), count=False)
        if verb in _ACTIVE_INFO:
            return self.add_info(None, text, t)
        if verb.startswith(("4", "5")):
            # An error about a channel or nick goes to that conversation if open.
            where = None
            if len(msg.params) > 2 and self.key(msg.params[1]) in self.conversations:
                where = self.key(msg.params[1])
            return self.add_info(where, text, t, "error")
        return self._add(SERVER_KEY, Line(t, "info", "", text), count=False)


def lines_of(raw: str) -> list[Message]:
    """Messages from a block of wire text (a helper for tests and demos)."""
    return [parse(line) for line in raw.strip().splitlines() if line.strip()]
