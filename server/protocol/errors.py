"""Protocol errors.

Two kinds, as in h11: a :class:`LocalProtocolError` is *our* mistake (code tried
to format a message that cannot be put on the wire), a :class:`RemoteProtocolError`
is the *peer's* mistake and carries the reply that tells the peer what went wrong.
Command handlers raise ``RemoteProtocolError`` instead of building error lines.
"""

from __future__ import annotations

from . import numerics

__all__ = [
    "InputTooLong",
    "InvalidUtf8",
    "LocalProtocolError",
    "MalformedMessage",
    "ProtocolError",
    "RemoteProtocolError",
]

STANDARD_REPLIES = frozenset({"FAIL", "WARN", "NOTE"})


class ProtocolError(Exception):
    """Base class of every error this package raises or reports."""


class LocalProtocolError(ProtocolError, ValueError):
    """We were asked to produce something that is not a valid IRC line."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something we must refuse; :meth:`reply` says how.

    For a numeric, ``params`` are the parameters after the client's nick and
    before the human-readable ``text``. For a standard reply (``FAIL``, ``WARN``,
    ``NOTE``; IRCv3 standard-replies) ``params`` are the command, the code and
    any context, and the nick is not sent.
    """

    def __init__(self, numeric: str, *params: str, text: str = "") -> None:
        super().__init__(f"{numeric} {' '.join(params)} :{text}")
        self.numeric = numeric
        self.params = params
        self.text = text

    @classmethod
    def fail(cls, command: str, code: str, *context: str, text: str) -> RemoteProtocolError:
        return cls("FAIL", command, code, *context, text=text)


class InputTooLong(RemoteProtocolError):
    """A line (or its tags) went past the limits; the line was dropped."""

    def __init__(self) -> None:
        super().__init__(numerics.ERR_INPUTTOOLONG, text="Input line was too long")


class InvalidUtf8(RemoteProtocolError):
    """A line was not valid UTF-8 (the server is ``UTF8ONLY``); it was dropped."""

    def __init__(self, command: str = "*") -> None:
        super().__init__(
            "FAIL",
            command or "*",
            "INVALID_UTF8",
            text="Message rejected, your IRC software MUST use UTF-8 encoding on this network",
        )


class MalformedMessage(RemoteProtocolError):
    """A line could not be parsed into a message (no command, stray NUL, ...)."""

    def __init__(self, why: str, command: str = "*") -> None:
        super().__init__(numerics.ERR_UNKNOWNERROR, command or "*", text=f"Malformed message: {why}")
