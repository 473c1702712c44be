"""``nick!user@host`` sources, wildcard masks and hostnames."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from .casemap import casefold

__all__ = ["Hostmask", "split_userhost", "mask_match", "normalize_mask", "is_valid_hostname"]


class Hostmask(NamedTuple):
    nick: str | None
    user: str | None
    host: str | None


def split_userhost(source: str) -> Hostmask:
    """Split ``nick!user@host``; a missing or empty part is None."""
    rest, at, host = source.partition("@")
    if not at:
        rest, host = source, ""
    nick, bang, user = rest.partition("!")
    return Hostmask(nick or None, (user or None) if bang else None, host or None)


@lru_cache(maxsize=4096)
def _compile(mask: str) -> re.Pattern[str]:
    out = []
    for c in mask:
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out), re.DOTALL)


def mask_match(mask: str, subject: str, casemapping: str = "rfc1459") -> bool:
    """Whether ``subject`` matches the wildcard ``mask`` (``*`` any run, ``?`` one
    character), compared under the casemapping."""
    return _compile(casefold(mask, casemapping)).fullmatch(casefold(subject, casemapping)) is not None


def normalize_mask(mask: str) -> str:
    """Complete a partial ban mask: ``nick`` -> ``nick!*@*``, ``user@host`` ->
    ``*!user@host``, ``nick!user`` -> ``nick!user@*``."""
    if "!" not in mask and "@" not in mask:
        if "." in mask or ":" in mask:
            return f"*!*@{mask}"
        return f"{mask}!*@*"
    if "!" not in mask:
        return f"*!{mask}"
    if "@" not in mask:
        return f"{mask}@*"
    return mask


_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_valid_hostname(host: str) -> bool:
    """A DNS hostname with at least two labels, none starting or ending with '-'."""
    if not host or len(host) > 253:
        return False
    labels = host.rstrip(".").split(".")
    return len(labels) >= 2 and all(_LABEL_RE.fullmatch(label) for label in labels)
