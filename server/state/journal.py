"""The history journal: where a history row is stored first.

SQLite is where history is read from, but a commit costs per page it writes,
and a handful of rows spread over many channels writes a page per channel for
each index (about 14 us per row at 10 rows a commit). So the bus stores each
group of rows once in this append-only file (one ``write()``: it then survives
the death of any process, the page cache holds it) before their deliveries
leave, and moves them into SQLite in large groups (``Committer.ingest``), or at
once when something is about to read history.

Frames: a 4-byte length, a 4-byte CRC-32, a pickle of the rows. A process that
dies inside a ``write()`` leaves at most a torn last frame, whose rows were
never shown to anyone (a job is released after its write returns): reading
stops there. Before each move into SQLite the file is renamed to
``history.journal.1`` and a new one started, so appends go on while the move
runs; the old file is removed once its rows are in (and the current one is
emptied after a commit that took its rows in with it). Rows read back
after a crash are inserted with ``INSERT OR IGNORE`` (their ids are the bus
order), so a row moved just before the crash is not doubled.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FILE = "history.journal"
PREVIOUS = "history.journal.1"  # the file before the last turn-over, while its rows go into SQLite
_HEAD = struct.Struct(">II")

Row = tuple[Any, ...]


class Journal:
    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / FILE
        self.previous = Path(data_dir) / PREVIOUS
        self.fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def append(self, rows: Sequence[Row]) -> None:
        """Store ``rows`` (one write; raises OSError, e.g. a full disk)."""
        payload = pickle.dumps(list(rows), protocol=5)
        frame = _HEAD.pack(len(payload), zlib.crc32(payload)) + payload
        view = memoryview(frame)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def read(self) -> list[Row]:
        """Every row of the whole frames, the previous file's first, in order."""
        return self._read(self.previous) + self._read(self.path)

    @staticmethod
    def _read(path: Path) -> list[Row]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        rows: list[Row] = []
        at = 0
        while at + _HEAD.size <= len(data):
            size, crc = _HEAD.unpack_from(data, at)
            payload = data[at + _HEAD.size:at + _HEAD.size + size]
            if len(payload) < size or zlib.crc32(payload) != crc:
                break  # a torn last frame: never acknowledged
            rows.extend(pickle.loads(payload))
            at += _HEAD.size + size
        return rows

    def clear(self) -> None:
        """Everything in the file is in SQLite now."""
        os.ftruncate(self.fd, 0)

    def turn_over(self) -> None:
        """Start a new file; what the current one holds is the previous file's
        (a crash in between leaves both, and :meth:`read` reads both)."""
        os.replace(self.path, self.previous)
        fd = self._open()
        os.close(self.fd)
        self.fd = fd

    def drop_previous(self) -> None:
        """The previous file's rows are in SQLite now."""
        self.previous.unlink(missing_ok=True)

    def close(self) -> None:
        os.close(self.fd)
