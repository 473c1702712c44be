"""Server bans (K-lines) kept across restarts: ``<data_dir>/klines.json``.

The manager's :class:`~server.bus.local.bus.Bus` loads the file at start and saves it
whenever ``KLINE``/``UNKLINE`` change the list. A save writes a temporary file
and renames it over the old one (``os.replace``), so a crash leaves either the
old list or the new one, never half a file. Expired bans are dropped on load.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "klines.json"

KLine = tuple[str, str, str, float, float]  # mask, reason, set by, set at, expires at (0: never)


def load(path: Path, now: float) -> list[KLine]:
    """The saved bans still in force; an unreadable file is logged and skipped."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.error("server bans not loaded from %s: %s", path, exc)
        return []
    out: list[KLine] = []
    for entry in raw.get("klines", []) if isinstance(raw, dict) else []:
        try:
            mask, reason, by = str(entry["mask"]), str(entry["reason"]), str(entry["by"])
            at, expires = float(entry["at"]), float(entry["expires"])
        except (KeyError, TypeError, ValueError):
            log.warning("server bans: skipping a malformed entry in %s", path)
            continue
        if not expires or expires > now:
            out.append((mask, reason, by, at, expires))
    return out


def save(path: Path, klines: list[KLine]) -> None:
    """Write the bans atomically (temporary file, fsync, rename)."""
    data = {"klines": [{"mask": m, "reason": r, "by": b, "at": a, "expires": e} for m, r, b, a, e in klines]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
