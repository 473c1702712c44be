"""The stream decoder: bytes in, messages (or typed errors) out.

This is the one place where line limits and odd input are decided:

* lines end in CRLF or a bare LF (a lone CR before LF is dropped); empty lines
  are skipped; a NUL, or a CR anywhere else, makes the line malformed;
* the message body (everything after the tag section) may take ``max_body``
  bytes including the CRLF (512, RFC 1459); the tag section, its '@' and the
  space after it, ``max_tags`` bytes (8191 from a server, IRCv3 message-tags;
  a server decodes what clients send with ``MAX_CLIENT_TAGS``, 4094, the most a
  client may send); a line past either limit is answered with 417 and dropped;
* at most ``max_tags + max_body`` bytes are buffered without a newline; past
  that the partial line is thrown away up to the next newline;
* undecodable UTF-8 is refused (``strict`` mode, for a UTF8ONLY server) or
  decoded as Latin-1 (lenient mode, for a client talking to any server). One
  exception in strict mode: a ``USER`` line is decoded with U+FFFD for the bad
  bytes, because refusing it would leave the client unable ever to register
  (the username keeps only ASCII characters anyway, server/irc/registration.py).

Each problem is reported in-stream as a :class:`RemoteProtocolError` subclass that
carries the reply to give; the decoder goes on with the next line, and never
raises on any input.
"""

from __future__ import annotations

from .errors import InputTooLong, InvalidUtf8, MalformedMessage, RemoteProtocolError
from .message import Message, parse

__all__ = ["MAX_BODY", "MAX_CLIENT_TAGS", "MAX_TAGS", "Decoder"]

MAX_BODY = 512
MAX_TAGS = 8191
MAX_CLIENT_TAGS = 4094


class Decoder:
    """Incremental IRC line decoder (sans-I/O).

    >>> d = Decoder()
    >>> d.feed(b"PING :x\\r\\nPRIV")
    [Message(command='PING', params=('x',), source=None, tags={})]
    >>> d.feed(b"MSG #a :hi\\n")[0].params
    ('#a', 'hi')
    """

    __slots__ = ("_buf", "_discarding", "max_body", "max_tags", "strict")

    def __init__(self, *, max_body: int = MAX_BODY, max_tags: int = MAX_TAGS, strict: bool = True) -> None:
        self.max_body = max_body
        self.max_tags = max_tags
        self.strict = strict
        self._buf = b""
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for a newline."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message | RemoteProtocolError]:
        """Take more bytes; return the complete messages and errors, in order."""
        out: list[Message | RemoteProtocolError] = []
        buf = self._buf + data if self._buf else data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            raw = buf[start:end]
            start = end + 1
            if self._discarding:
                # The tail of a line that already overflowed the buffer.
                self._discarding = False
                continue
            item = self._decode(raw)
            if item is not None:
                out.append(item)
        rest = buf[start:]
        if len(rest) > self.max_tags + self.max_body:
            if not self._discarding:
                out.append(InputTooLong())
            self._discarding = True
            rest = b""
        self._buf = rest
        return out

    def _decode(self, raw: bytes) -> Message | RemoteProtocolError | None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip(b" "):
            return None
        # Limits: the body counts its CRLF, the tag section its '@' and space.
        body_len = len(raw)
        if raw[:1] == b"@":
            space = raw.find(b" ")
            tag_len = len(raw) if space < 0 else space + 1
            if tag_len > self.max_tags:
                return InputTooLong()
            body_len -= tag_len
        if body_len + 2 > self.max_body:
            return InputTooLong()
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            if not self.strict:
                line = raw.decode("latin-1")
            elif _command_of(raw) == "USER":
                line = raw.decode("utf-8", "replace")
            else:
                return InvalidUtf8(_command_of(raw))
        if "\0" in line:
            return MalformedMessage("NUL character", _command_of(raw))
        if "\r" in line:
            # A CR inside the line would end up in a parameter that to_line() refuses
            # to send on (and that other software takes for a line break).
            return MalformedMessage("CR character", _command_of(raw))
        try:
            return parse(line)
        except MalformedMessage as exc:
            return exc


def _command_of(raw: bytes) -> str:
    """Best-effort command of an unparseable line, for the error reply."""
    words = raw.split()
    while words and words[0][:1] in (b"@", b":"):
        words.pop(0)
    if not words:
        return "*"
    word = words[0].decode("ascii", "replace").upper()
    return word if word.isalnum() and len(word) <= 32 else "*"
