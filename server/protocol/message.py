"""The IRC message model: parse a line into a :class:`Message`, format it back.

A line is ``['@' tags SPACE] [':' source SPACE] command {SPACE param}``; the last
parameter may be a "trailing" one that starts with ':' and may hold spaces.
Tags follow IRCv3 message-tags, with their value escaping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import STANDARD_REPLIES, LocalProtocolError, MalformedMessage, RemoteProtocolError

__all__ = ["Message", "build", "escape_tag_value", "format_tags", "parse", "unescape_tag_value"]

_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})
_UNESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)
_COMMAND_RE = re.compile(r"[A-Za-z]+|[0-9]{3}")
# A tag key: optional client prefix '+', optional vendor ending in '/', then the name.
_TAG_KEY_RE = re.compile(r"\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+")
_FORBIDDEN_RE = re.compile("[\r\n\0]")


def unescape_tag_value(value: str) -> str:
    """Undo IRCv3 tag value escaping; an unknown escape keeps its character, a lone
    trailing backslash is dropped."""
    if "\\" not in value:
        return value
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), value)


def escape_tag_value(value: str) -> str:
    """Escape a tag value for the wire."""
    return value.translate(_ESCAPES)


def format_tags(tags: Mapping[str, str]) -> str:
    """The tag section without the leading '@' (empty values are sent bare)."""
    parts = []
    for key, value in tags.items():
        if not _TAG_KEY_RE.fullmatch(key):
            raise LocalProtocolError(f"invalid tag key {key!r}")
        if value:
            if "\0" in value:
                raise LocalProtocolError("NUL in a tag value")
            parts.append(f"{key}={escape_tag_value(value)}")
        else:
            parts.append(key)
    return ";".join(parts)


def _parse_tags(section: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in section.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        tags[key] = unescape_tag_value(value) if sep else ""
    return tags


@dataclass(slots=True)
class Message:
    """One IRC message.

    ``command`` is a verb (kept as given; compare with ``.upper()``) or a
    three-digit numeric. ``params`` are the parameters, trailing one included.
    """

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Callers may pass a list; tuple() of a tuple returns it unchanged.
        self.params = tuple(self.params)

    @property
    def verb(self) -> str:
        """The command in upper case, for dispatch."""
        return self.command.upper()

    def to_line(self) -> str:
        """The message as a line without CRLF; raises LocalProtocolError when the
        message cannot be written as a valid line."""
        if not _COMMAND_RE.fullmatch(self.command):
            raise LocalProtocolError(f"invalid command {self.command!r}")
        out = []
        if self.tags:
            out.append("@" + format_tags(self.tags))
        if self.source is not None:
            if not self.source or " " in self.source or _FORBIDDEN_RE.search(self.source):
                raise LocalProtocolError(f"invalid source {self.source!r}")
            out.append(":" + self.source)
        out.append(self.command)
        params = self.params
        # one scan of all parameters (with a separator that is not forbidden)
        if params and _FORBIDDEN_RE.search(" ".join(params)):
            raise LocalProtocolError("CR, LF or NUL in a parameter")
        last = len(params) - 1
        for i, param in enumerate(params):
            if i == last:
                if not param or " " in param or param[0] == ":":
                    param = ":" + param
            elif not param or " " in param or param[0] == ":":
                raise LocalProtocolError(
                    f"only the last parameter may be empty, hold spaces or start with ':' ({param!r})"
                )
            out.append(param)
        return " ".join(out)

    def to_bytes(self) -> bytes:
        """The message as UTF-8 bytes with CRLF."""
        return self.to_line().encode("utf-8") + b"\r\n"

    def __str__(self) -> str:
        return self.to_line()


def as_middle(param: str) -> str:
    """``param`` made fit for a middle parameter (not empty, no space, no
    leading ``:``), for replies that echo what a client sent as a trailing one."""
    return param.replace(" ", "_").lstrip(":") or "*"


def error_reply(exc: RemoteProtocolError, server: str, nick: str) -> Message:
    """The message that tells ``nick`` about ``exc``, sent by ``server``.

    The parameters often echo what the client sent (a nick, a channel), which
    may be empty or hold spaces when it came as a trailing parameter: a reply
    must still go out, so those are made into valid middle ones."""
    echoed = tuple(as_middle(p) for p in exc.params)
    head = () if exc.numeric in STANDARD_REPLIES else (as_middle(nick),)
    return Message(exc.numeric, (*head, *echoed, exc.text), source=server)


def parse(line: str) -> Message:
    """Parse one line (without its line ending) into a Message.

    Atoms may be separated by several spaces (RFC 1459). Raises
    :class:`~server.protocol.errors.MalformedMessage` when there is no command.
    """
    tags: dict[str, str] = {}
    source: str | None = None
    rest = line.lstrip(" ")
    if rest.startswith("@"):
        section, _, rest = rest[1:].partition(" ")
        tags = _parse_tags(section)
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    trailing: str | None = None
    if " :" in rest:
        rest, _, trailing = rest.partition(" :")
    elif rest.startswith(":"):
        raise MalformedMessage("no command")
    # Split on SPACE only: str.split() would also split on TAB, FS, NBSP and other
    # whitespace that is an ordinary character in an IRC parameter.
    words = [word for word in rest.split(" ") if word]
    if not words:
        raise MalformedMessage("no command")
    command, *params = words
    if trailing is not None:
        params.append(trailing)
    return Message(command, tuple(params), source, tags)


def build(command: str, *params: str, source: str | None = None, tags: Mapping[str, str] | None = None) -> Message:
    """Shorthand constructor: ``build("PRIVMSG", "#chan", "hi", source=prefix)``."""
    return Message(command, params, source, dict(tags) if tags else {})
