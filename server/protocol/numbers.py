"""Numbers in IRC parameters: one parser for every count, limit and version.

IRC numbers are ASCII digits. ``str.isdigit`` and ``int`` accept much more
(``"²"``, ``"٣"``, ``"-1"``, ``" 7"``, ``"1_000"``, a thousand digits), so every
numeric parameter a client sends goes through :func:`parse_int`, which takes
ASCII digits only, within a range, and gives ``None`` for anything else: the
caller answers with its command's error reply.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]{1,18}")


def parse_int(text: str, minimum: int = 0, maximum: int = 2**31 - 1) -> int | None:
    """``text`` as an int in ``[minimum, maximum]``, or ``None``.

    Accepts one to 18 ASCII digits and nothing else (no sign, no spaces, no
    other Unicode digits), so the value is never huge and never negative.
    Leading zeros are allowed (``"007"`` is 7)."""
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    if value < minimum or value > maximum:
        return None
    return value


__all__ = ["parse_int"]
