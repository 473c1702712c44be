"""The sans-I/O IRC codec shared by the server, the GUI and the load tests.

Standard library only: no sockets, threads or clocks. Modules:

* :mod:`.message`  -- the message model, ``parse`` and formatting, tag escaping
* :mod:`.framing`  -- the stream ``Decoder`` and every input limit
* :mod:`.errors`   -- ``LocalProtocolError`` / ``RemoteProtocolError`` and kin
* :mod:`.casemap`  -- casemapping, nick and channel validation
* :mod:`.hostmask` -- ``nick!user@host`` splitting, wildcard masks, hostnames
* :mod:`.numerics` -- numeric replies by their Modern IRC names
* :mod:`.numbers`  -- ``parse_int``: the one parser for numbers in parameters
"""

from __future__ import annotations

from . import numerics
from .casemap import casefold, is_channel, is_valid_channel, is_valid_nick, is_valid_user
from .errors import (
    InputTooLong,
    InvalidUtf8,
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
)
from .framing import MAX_BODY, MAX_CLIENT_TAGS, MAX_TAGS, Decoder
from .hostmask import Hostmask, is_valid_hostname, mask_match, normalize_mask, split_userhost
from .message import Message, as_middle, build, error_reply, escape_tag_value, format_tags, parse, unescape_tag_value
from .numbers import parse_int

__all__ = [
    "MAX_BODY",
    "MAX_CLIENT_TAGS",
    "MAX_TAGS",
    "Decoder",
    "Hostmask",
    "InputTooLong",
    "InvalidUtf8",
    "LocalProtocolError",
    "MalformedMessage",
    "Message",
    "ProtocolError",
    "RemoteProtocolError",
    "as_middle",
    "build",
    "casefold",
    "error_reply",
    "escape_tag_value",
    "format_tags",
    "is_channel",
    "is_valid_channel",
    "is_valid_hostname",
    "is_valid_nick",
    "is_valid_user",
    "mask_match",
    "normalize_mask",
    "numerics",
    "parse",
    "parse_int",
    "split_userhost",
    "unescape_tag_value",
]
