"""``nick!user@host`` sources, wildcard masks and hostnames."""

from __future__ import annotations

import re
from typing import NamedTuple

from .casemap import casefold

__all__ = ["Hostmask", "is_valid_hostname", "mask_match", "normalize_mask", "split_userhost"]


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


def _wildcard_match(mask: str, subject: str) -> bool:
    # Greedy matching that backtracks only to the last '*' seen: O(len(mask) *
    # len(subject)) at worst. A translated regex ('.*' per '*') backtracks over
    # every earlier star too: a peer-supplied mask like '*a*a*a*a*a*a*a*a*b' took
    # seconds against one 60-character nick!user@host, and grows exponentially.
    m = s = 0
    star = -1  # index in mask of the last '*' seen
    resume = 0  # index in subject that the last '*' is currently swallowing up to
    while s < len(subject):
        if m < len(mask) and mask[m] == "*":
            star, resume = m, s
            m += 1
        elif m < len(mask) and mask[m] in ("?", subject[s]):
            m += 1
            s += 1
        elif star >= 0:
            # Let the last '*' swallow one more character and retry after it.
            resume += 1
            m, s = star + 1, resume
        else:
            return False
    return not mask[m:].strip("*")


def mask_match(mask: str, subject: str, casemapping: str = "rfc1459") -> bool:
    """Whether ``subject`` matches the wildcard ``mask`` (``*`` any run, ``?`` one
    character), compared under the casemapping."""
    return _wildcard_match(casefold(mask, casemapping), casefold(subject, casemapping))


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
