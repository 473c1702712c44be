"""History's time lookups (server/state/store.py, migration 3): time order is id
order, so a timestamp is found by a binary search over the (target, id) index,
and the bus stores a time that never goes back."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

from server.bus.local.bus import Bus
from server.bus.records import Done, Request, Send
from server.state.journal import Journal
from server.state.store import MIGRATIONS, Store


def fill(store: Store, n: int, targets: int, seed: int) -> list[tuple[int, str, float]]:
    """``n`` rows over ``targets`` targets, ids with gaps, times non-decreasing
    in id order (with runs of equal times); returns (id, target, time)."""
    rng = random.Random(seed)
    rows, hid, ts = [], 0, 1_000_000.0
    for _ in range(n):
        hid += rng.choice((1, 1, 2, 7))
        ts += rng.choice((0.0, 0.0, 0.001, 0.5, 3.0))
        rows.append((hid, f"#t{rng.randrange(targets)}", f"m{hid}", ts, "P", "", f"line {hid}"))
    store.commit(rows, [])
    return [(r[0], r[1], r[3]) for r in rows]


def test_position_by_timestamp_matches_a_scan(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rows = fill(store, 3000, 7, seed=1)
    rng = random.Random(2)
    probes = [t for _, _, t in rng.sample(rows, 150)] + [0.0, 1e12] + [rng.uniform(999_990, rows[-1][2] + 5)
                                                                       for _ in range(150)]
    for target in ["#t0", "#t3", "#t6", "#none"]:
        mine = [(i, t) for i, k, t in rows if k == target]
        for ts in probes:
            want = max((i for i, t in mine if t < ts), default=0)
            assert store.history_position(target, ts=ts) == want, (target, ts)


def test_targets_by_latest_time_in_range(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rows = fill(store, 2000, 5, seed=3)
    lo, hi = rows[300][2], rows[1500][2]
    want = {}
    for _, k, t in rows:
        if lo < t < hi:
            want[k] = t
    expected = sorted(want.items(), key=lambda kt: (kt[1], kt[0]))
    keys = [f"#t{i}" for i in range(5)] + ["#none"]
    assert store.targets(keys, lo, hi, 10) == expected
    assert store.targets(keys, lo, hi, 2, newest=True) == expected[::-1][:2]


def test_migration_drops_the_time_index_and_keeps_rows(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "chatroom.db")
    for number, script in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version={number}")
    conn.execute("INSERT INTO history (id, target, msgid, time, kind, tags, line) VALUES (5, '#a', 'x', 10.0,"
                 " 'P', '', 'hi')")
    conn.commit()
    conn.close()
    store = Store(tmp_path)
    indexes = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "history_target_time" not in indexes and "history_target_id" in indexes
    assert store.history_position("#a", ts=10.5) == 5 and store.history_position("#a", ts=10.0) == 0


def test_bus_stores_times_that_never_go_back(tmp_path: Path) -> None:
    bus = Bus({"data_dir": str(tmp_path)})
    bus.registry.channels.clear()
    stamps = [100.0, 100.5, 100.2, 99.0, 101.0]  # workers stamp, the bus orders: a later row may be stamped earlier
    with bus.lock:
        for n, ts in enumerate(stamps):
            bus._store_row("#a", Send(1, "#a", True, "P", b"", b"", b":n!u@h PRIVMSG #a :x\r\n", f"m{n}", ts, 0,
                                      None))
        rows = list(bus.job.rows)
    assert [r[3] for r in rows] == [100.0, 100.5, 100.5, 100.5, 101.0]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)


def test_rows_in_the_journal_reach_the_database_after_a_crash(tmp_path: Path) -> None:
    """Rows the bus stored only in the journal (server/state/journal.py) when its
    process died are in SQLite once a new bus opens the data directory; a torn
    last frame (a write the dying process did not finish) is dropped."""
    journal = Journal(tmp_path)
    journal.append([(1, "#a", "m1", 10.0, "P", "", ":n!u@h PRIVMSG #a :one"),
                    (2, "#a", "m2", 11.0, "P", "", ":n!u@h PRIVMSG #a :two")])
    journal.append([(3, "#b", "m3", 12.0, "P", "", ":n!u@h PRIVMSG #b :three")])
    with open(journal.path, "ab") as fh:  # a torn frame: header and half its payload
        fh.write(b"\x00\x00\x01\x00\x12\x34\x56\x78" + b"x" * 100)
    journal.close()
    store = Store(tmp_path)
    store.commit([(1, "#a", "m1", 10.0, "P", "", ":n!u@h PRIVMSG #a :one")], [])  # one already moved before the crash
    bus = Bus({"data_dir": str(tmp_path)})
    assert bus.history_id == 3
    assert [r[1] for r in bus.store.history("#a")] == ["m1", "m2"]
    assert [r[1] for r in bus.store.history("#b")] == ["m3"]
    assert Journal(tmp_path).read() == []  # emptied once in the database


def journaled(bus: Bus, msgid: str) -> None:
    """One history row through the bus's own path: routed, then stored in the journal."""
    with bus.lock:
        bus.job.rows.append((bus.history_id + 1, "#a", msgid, 5.0, "P", b"@x ", b":n!u@h PRIVMSG #a :hi\r\n"))
        bus.history_id += 1
        bus.job.box(1).append(Done(1, 0))  # a record for worker 1, released after the store
        bus._queue(bus.job)
        jobs = bus.take_jobs()
    if jobs:  # (as in Bus.publish: none while another thread commits)
        bus.commit(jobs)


def test_a_history_read_after_journaled_rows_sees_them(tmp_path: Path) -> None:
    """A job after whose result a worker reads history (a history barrier) is
    released only once the journal's rows are in SQLite."""
    bus = Bus({"data_dir": str(tmp_path)})
    bus.committer.last_ingest = time.monotonic() + 3600  # no periodic move during the test
    journaled(bus, "j1")
    assert bus.committer.unflushed  # in the journal, not yet in SQLite
    bus.publish(1, [Request(1, 7, "history_barrier", ())])
    assert [r[1] for r in bus.store.history("#a")] == ["j1"]
    assert not bus.committer.unflushed


def test_messages_are_released_while_the_journal_moves_into_sqlite(tmp_path: Path) -> None:
    """The move of the journal's rows into SQLite (Committer.ingest) holds no
    message back: while its transaction waits (here: on the store's lock, as on
    a slow disk), rows go into the journal's new file and their records are
    released; a history barrier waits until the moved rows are in SQLite."""
    bus = Bus({"data_dir": str(tmp_path)})
    committer = bus.committer
    committer.last_ingest = time.monotonic() + 3600  # no periodic move: the test starts it
    journaled(bus, "m1")
    assert [r[2] for r in committer.unflushed] == ["m1"]
    bus.fetch(1, 0.0)
    bus.store.lock.acquire()  # the move's SQLite transaction cannot start
    mover = threading.Thread(target=committer.ingest)
    mover.start()
    try:
        deadline = time.monotonic() + 10
        while not committer.moving and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r[2] for r in committer.moving] == ["m1"] and committer.unflushed == []
        assert Journal(tmp_path).previous.exists()
        journaled(bus, "m2")  # stored in the new file and released, the move still waiting
        assert len(bus.fetch(1, 0.0)) == 1
        assert [r[2] for r in committer.unflushed] == ["m2"]
        barrier = threading.Thread(target=bus.publish, args=(1, [Request(1, 7, "history_barrier", ())]))
        barrier.start()
        barrier.join(0.3)
        assert barrier.is_alive()  # its result waits for the rows on their way into SQLite
    finally:
        bus.store.lock.release()
    mover.join(10)
    barrier.join(10)
    assert [r[1] for r in bus.store.history("#a")] == ["m1", "m2"]
    assert not Journal(tmp_path).previous.exists() and not committer.unflushed and not committer.moving


def test_rows_of_both_journal_files_reach_the_database_after_a_crash(tmp_path: Path) -> None:
    """A manager that died during a move leaves the previous file and the new
    one: a new bus takes both, in order."""
    journal = Journal(tmp_path)
    journal.append([(1, "#a", "m1", 10.0, "P", "", ":n!u@h PRIVMSG #a :one")])
    journal.turn_over()
    journal.append([(2, "#a", "m2", 11.0, "P", "", ":n!u@h PRIVMSG #a :two")])
    journal.close()
    bus = Bus({"data_dir": str(tmp_path)})
    assert bus.history_id == 2
    assert [r[1] for r in bus.store.history("#a")] == ["m1", "m2"]
    assert Journal(tmp_path).read() == [] and not journal.previous.exists()
