"""One object for each distinct small set of names, shared by everyone who has it.

Capabilities and user modes are sets per connection (in the worker) and per
user (in the registry); most clients have one of a few combinations, and an
empty ``set`` alone is 216 bytes of every connection. These are frozensets:
a change makes a new one, through :func:`shared`.
"""

from __future__ import annotations

_SHARED: dict[frozenset[str], frozenset[str]] = {}
SHARED_MAX = 4096  # distinct sets kept; past that a set is its holder's own


def shared(names: frozenset[str]) -> frozenset[str]:
    """The one shared object equal to ``names`` (``names`` itself once the table is full)."""
    got = _SHARED.get(names)
    if got is None:
        if len(_SHARED) >= SHARED_MAX:
            return names
        got = _SHARED.setdefault(names, names)  # two threads may intern the same set at once
    return got


def toggled(names: frozenset[str], name: str, on: bool) -> frozenset[str]:
    """The shared set of ``names`` with ``name`` added (``on``) or removed."""
    return shared(names | {name} if on else names - {name})


NO_NAMES = shared(frozenset())
