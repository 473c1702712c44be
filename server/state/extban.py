"""Extended bans: list entries that match something other than a hostmask.

Advertised as ``EXTBAN=,am`` and ``ACCOUNTEXTBAN=a`` (no prefix character; a nick cannot hold ``:``, so
``letter:`` never reads as a hostmask):

* ``a:<account mask>`` matches users logged in to a matching account (``a:*``
  any logged-in user). In ``+b`` it bans from joining and speaking, in ``+e``
  it exempts, in ``+I`` it lets in.
* ``m:<mask>`` (mute) matches like ``<mask>`` (a hostmask or ``a:...``) but in
  ``+b`` only stops speaking: the user may join. In ``+e`` it exempts from
  mutes only. It has no meaning in ``+I`` and is refused there.
"""

from __future__ import annotations

from collections.abc import Callable

from server.protocol import mask_match, normalize_mask

TYPES = "am"
# EXTBAN: no prefix, these types; ACCOUNTEXTBAN (IRCv3 account-extban): the account type
ISUPPORT = (f"EXTBAN=,{TYPES}", "ACCOUNTEXTBAN=a")


def split(entry: str) -> tuple[str, str] | None:
    """(type, rest) when ``entry`` is an extended ban, else None."""
    if len(entry) >= 2 and entry[1] == ":" and entry[0].isalpha():
        return entry[0], entry[2:]
    return None


def normalize(entry: str, letter: str) -> str | None:
    """The entry as stored in list ``letter`` (b, e or I); None when it is not valid there."""
    ext = split(entry)
    if ext is None:
        return normalize_mask(entry)
    kind, rest = ext
    if kind == "a":
        return f"a:{rest}" if rest else None
    if kind == "m" and letter in "be" and rest:
        inner = normalize(rest, letter)
        return f"m:{inner}" if inner is not None and not inner.startswith("m:") else None
    return None


def matches(entry: str, account: str | None, casemapping: str, mute: bool,
            hostmask: Callable[[str], bool]) -> bool:
    """Whether ``entry`` matches a user logged in to ``account`` (None: not logged
    in) whose hostmask entries are tested by ``hostmask``. With ``mute`` only
    ``m:`` entries count (by what follows ``m:``), without it they never do."""
    ext = split(entry)
    if mute:
        if ext is None or ext[0] != "m":
            return False
        entry = ext[1]
        ext = split(entry)
    elif ext is not None and ext[0] == "m":
        return False
    if ext is None:
        return hostmask(entry)
    kind, rest = ext
    return kind == "a" and account is not None and mask_match(rest, account, casemapping)
