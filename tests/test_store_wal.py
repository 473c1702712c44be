"""The bus's WAL stays bounded under commits that never pause (server/bus/local/bus.py,
``Committer.checkpoints``): SQLite starts it over only after a checkpoint that
copied every frame, which steady traffic never let a PASSIVE checkpoint do."""

from __future__ import annotations

import struct
import time
from pathlib import Path

from server.bus.local.bus import Bus


def restarts(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: +1 each time the log starts over."""
    with wal.open("rb") as fh:
        header = fh.read(32)
    return int(struct.unpack(">I", header[12:16])[0]) if len(header) == 32 else 0


def commit_rows(bus: Bus, first: int, n: int) -> None:
    """One group commit of ``n`` history rows, as ``Bus.publish`` makes it."""
    with bus.lock:
        for i in range(first, first + n):
            bus.job.rows.append((i, f"#c{i % 50}", f"id{i}", time.time(), "P", b"@time=x ",
                                 f":n!u@h PRIVMSG #c{i % 50} :line {i}\r\n".encode()))
        bus._queue(bus.job)
        jobs = bus.take_jobs()
    if jobs:
        bus.commit(jobs)


def test_wal_starts_over_under_steady_commits(tmp_path: Path) -> None:
    bus = Bus({"data_dir": str(tmp_path)})
    wal = tmp_path / "chatroom.db-wal"
    row = bus.history_id + 1
    commit_rows(bus, row, 10)
    row += 10
    seen = restarts(wal)
    deadline = time.monotonic() + 8.0  # the checkpointer runs once a second
    while restarts(wal) < seen + 2 and time.monotonic() < deadline:
        commit_rows(bus, row, 10)  # 500 commits a second: one always lands during a checkpoint
        row += 10
        time.sleep(0.002)  # (pacing the load, as publishers' round trips do; not a wait)
    assert restarts(wal) >= seen + 2, "the WAL never started over while commits kept coming"
    bus.flush_history()  # (the last rows may still be in the journal only)
    assert bus.store.last_history_id() == row - 1  # nothing lost on the way
