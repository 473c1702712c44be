"""IRC commands as a table: ``COMMANDS[verb] = Command(handler, min_params, pre_registration, help)``.

:func:`dispatch` makes the checks once (registered? enough parameters?); each
handler then does its job and raises ``RemoteProtocolError`` for the client's
mistakes instead of building error lines.

A handler's docstring is its user-facing help text (what ``HELP <verb>``
answers, :mod:`server.irc.help`): the first line is the syntax, the others
say what the command does, in words for users. Every command has one
(tests/test_help.py), so the help cannot fall behind the table.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from server.protocol import (
    Message,
)

if TYPE_CHECKING:
    from server.irc.client import Client

log = logging.getLogger(__name__)

Handler = Callable[["Client", Message], None]


class Command(NamedTuple):
    handler: Handler
    min_params: int = 0
    pre_registration: bool = False
    help: str = ""  # the handler's docstring: syntax line, then what it does


COMMANDS: dict[str, Command] = {}


def command(verb: str, min_params: int = 0, pre_registration: bool = False) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[verb] = Command(fn, min_params, pre_registration, inspect.cleandoc(fn.__doc__ or ""))
        return fn
    return register


_batch_refs = itertools.count(1)


def batch_ref(kind: str) -> str:
    """A fresh reference tag for a ``BATCH`` this process opens (``kind`` is a
    letter that tells batches apart when reading a capture)."""
    return f"{kind}{next(_batch_refs):x}"
