"""Durable data in SQLite (WAL): accounts, registered channels, history.

One file, ``<data_dir>/chatroom.db``. Schema changes are numbered migrations
applied in order on open (``PRAGMA user_version`` says which ran). The manager
process writes history (moved in large groups from its journal,
server/state/journal.py) and registered-channel changes; workers read history and read/write accounts, each
through its own connection guarded by a lock. WAL lets all of them share the
file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

MIGRATIONS: list[str] = [
    # 1: accounts, registered channels, history
    """
    CREATE TABLE accounts (
        fold TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        password TEXT NOT NULL,
        email TEXT,
        created REAL NOT NULL
    );
    CREATE TABLE channels (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        founder TEXT NOT NULL,
        topic TEXT NOT NULL DEFAULT '',
        topic_by TEXT NOT NULL DEFAULT '',
        topic_at REAL NOT NULL DEFAULT 0,
        modes TEXT NOT NULL DEFAULT 'nt',
        history INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL
    );
    CREATE TABLE channel_access (
        key TEXT NOT NULL,
        account TEXT NOT NULL,
        level TEXT NOT NULL,
        PRIMARY KEY (key, account)
    );
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        target TEXT NOT NULL,
        msgid TEXT NOT NULL,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        tags TEXT NOT NULL,
        line TEXT NOT NULL
    );
    CREATE INDEX history_target_id ON history (target, id);
    CREATE INDEX history_target_time ON history (target, time);
    CREATE UNIQUE INDEX history_msgid ON history (msgid);
    """,
    # 2: draft/read-marker, per account and target
    """
    CREATE TABLE read_markers (
        account TEXT NOT NULL,
        target TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        PRIMARY KEY (account, target)
    );
    """,
    # 3: history's time order is its id order (the bus stores a time that never
    # goes back, Store.last_history_time), so time lookups search the
    # (target, id) index and a second per-target index is not kept up: it was
    # about half of each commit's cost (one more leaf page per target written
    # to the WAL on every commit)
    """
    DROP INDEX IF EXISTS history_target_time;
    """,
]


def connect(path: Path | str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; return its version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < number:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a reused WAL file is truncated to (journal_size_limit)


class Store:
    """Thread-safe access to the database for one process."""

    def __init__(self, data_dir: Path | str) -> None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(data_dir) / "chatroom.db"
        self.conn = connect(self.path)
        self.lock = threading.Lock()
        with self.lock:
            migrate(self.conn)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def defer_checkpoints(self) -> None:
        """Never checkpoint the WAL from this connection's commits: an automatic
        checkpoint runs inside the COMMIT that crosses the threshold, with its
        fsyncs, and stalls whatever waits for that commit (the bus's deliveries:
        up to a quarter of a second measured here, and half the cost of a small
        commit). :meth:`checkpoint`, from another connection and thread, does it.
        A WAL that grew past 64 MiB (a long reader held it) is cut back to that
        size when it is next reused."""
        with self.lock:
            self.conn.execute("PRAGMA wal_autocheckpoint=0")
            self.conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")

    def checkpoint(self, restart: bool = False) -> bool:
        """Copy the WAL into the database as far as readers allow (PASSIVE: it
        blocks neither readers nor writers). True when every frame was copied.
        ``restart``: also make the next write start the WAL over from its
        beginning, waiting at most 20 ms for readers (and so for nobody
        long: the caller holds the writer off)."""
        with self.lock:
            if not restart:
                row = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
            else:
                self.conn.execute("PRAGMA busy_timeout=20")
                try:
                    row = self.conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()[0]
                finally:
                    self.conn.execute("PRAGMA busy_timeout=30000")
        busy, frames, copied = row
        return not busy and copied >= frames

    # -- accounts -------------------------------------------------------------
    def create_account(self, fold: str, name: str, password_hash: str, email: str | None) -> bool:
        """False when the name is taken."""
        with self.lock:
            try:
                self.conn.execute("INSERT INTO accounts (fold, name, password, email, created) VALUES (?,?,?,?,?)",
                                  (fold, name, password_hash, email, time.time()))
            except sqlite3.IntegrityError:
                return False
            return True

    def account(self, fold: str) -> tuple[str, str] | None:
        """(name, password hash) of an account."""
        with self.lock:
            row = self.conn.execute("SELECT name, password FROM accounts WHERE fold=?", (fold,)).fetchone()
        return (row[0], row[1]) if row else None

    def set_password(self, fold: str, password_hash: str) -> None:
        with self.lock:
            self.conn.execute("UPDATE accounts SET password=? WHERE fold=?", (password_hash, fold))

    def drop_account(self, fold: str) -> None:
        with self.lock:
            self.conn.execute("DELETE FROM accounts WHERE fold=?", (fold,))
            self.conn.execute("DELETE FROM channel_access WHERE account=?", (fold,))

    def account_names(self) -> set[str]:
        with self.lock:
            return {row[0] for row in self.conn.execute("SELECT fold FROM accounts")}

    # -- registered channels ----------------------------------------------------
    def channels(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute("SELECT key, name, founder, topic, topic_by, topic_at, modes, history, created"
                                     " FROM channels").fetchall()
            access = self.conn.execute("SELECT key, account, level FROM channel_access").fetchall()
        out = {r[0]: {"name": r[1], "founder": r[2], "topic": r[3], "topic_by": r[4], "topic_at": r[5],
                      "modes": r[6], "history": bool(r[7]), "created": r[8], "access": {}} for r in rows}
        for key, account, level in access:
            if key in out:
                out[key]["access"][account] = level
        return out

    def last_history_id(self) -> int:
        with self.lock:
            return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()[0])

    def last_history_time(self) -> float:
        """The time of the newest history row (0: none)."""
        with self.lock:
            row = self.conn.execute("SELECT time FROM history ORDER BY id DESC LIMIT 1").fetchone()
        return float(row[0]) if row is not None else 0.0

    def read_markers(self) -> dict[tuple[str, str], str]:
        with self.lock:
            return {(a, t): ts for a, t, ts in self.conn.execute("SELECT account, target, timestamp FROM read_markers")}

    def commit(self, rows: Sequence[tuple[int, str, str, float, str, str, str]],
               channels: Sequence[tuple[str, dict[str, Any] | None]],
               markers: Sequence[tuple[str, str, str]] = (),
               redactions: Sequence[tuple[str, str]] = ()) -> None:
        """One transaction for what a group of bus batches stored: history rows
        (id, target, msgid, time, kind, tags, line; the ids are the bus order),
        registered channels' records (``None``: dropped), read markers
        (account, target, timestamp) and redactions (target, msgid: the row is
        deleted, after the rows of the same group went in), in order."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    self.conn.executemany(
                        "INSERT OR IGNORE INTO history (id, target, msgid, time, kind, tags, line)"
                        " VALUES (?,?,?,?,?,?,?)", rows)
                for key, info in channels:
                    self.conn.execute("DELETE FROM channel_access WHERE key=?", (key,))
                    if info is None:
                        self.conn.execute("DELETE FROM channels WHERE key=?", (key,))
                        continue
                    self.conn.execute(
                        "INSERT OR REPLACE INTO channels (key, name, founder, topic, topic_by, topic_at, modes,"
                        " history, created) VALUES (?,?,?,?,?,?,?,?,?)",
                        (key, info["name"], info["founder"], info["topic"], info["topic_by"], info["topic_at"],
                         info["modes"], int(info["history"]), info["created"]))
                    self.conn.executemany("INSERT INTO channel_access (key, account, level) VALUES (?,?,?)",
                                          [(key, a, lvl) for a, lvl in info["access"].items()])
                if markers:
                    self.conn.executemany(
                        "INSERT OR REPLACE INTO read_markers (account, target, timestamp) VALUES (?,?,?)", markers)
                if redactions:
                    self.conn.executemany("DELETE FROM history WHERE target=? AND msgid=?", redactions)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def history_row(self, target: str, msgid: str) -> tuple[float, str, str] | None:
        """(time, tags, line) of one stored message, for REDACT."""
        with self.lock:
            row = self.conn.execute("SELECT time, tags, line FROM history WHERE msgid=? AND target=?",
                                    (msgid, target)).fetchone()
        return None if row is None else (float(row[0]), str(row[1]), str(row[2]))

    def history_position(self, target: str, msgid: str | None = None, ts: float | None = None) -> int | None:
        """The row id a selector points at (for msgid) or just before (timestamp)."""
        with self.lock:
            if msgid is not None:
                row = self.conn.execute("SELECT id FROM history WHERE msgid=? AND target=?", (msgid, target)).fetchone()
            else:
                assert ts is not None
                found = self._last_before(target, ts)
                row = (found[0] if found is not None else 0,)
        return None if row is None else int(row[0])

    def _last_before(self, target: str, ts: float) -> tuple[int, float] | None:
        """(id, time) of the last row of ``target`` older than ``ts`` (lock held).

        A binary search over the (target, id) index: the bus stores rows with
        times that never go back in id order (see migration 3), so "older than
        ts" holds for a prefix of a target's rows. About 2 log2(rows) index
        probes, whatever the size of the history."""
        last = "SELECT id, time FROM history WHERE target=? AND id<=? ORDER BY id DESC LIMIT 1"
        newest = self.conn.execute(last, (target, 1 << 62)).fetchone()
        if newest is None:
            return None
        if newest[1] < ts:
            return int(newest[0]), float(newest[1])
        # lo: an id bound whose last row (if any) is older than ts; hi: one whose last row is not
        lo, hi = 0, int(newest[0])
        best: tuple[int, float] | None = None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            row = self.conn.execute(last, (target, mid)).fetchone()
            if row is None:
                lo = mid
            elif row[1] < ts:
                lo, best = mid, (int(row[0]), float(row[1]))
            else:
                hi = int(row[0])  # every bound from this row's id to mid has this same last row
        return best

    def history(self, target: str, *, before: int | None = None, after: int | None = None,
                limit: int = 100, newest: bool = True) -> list[tuple[int, str, float, str, str]]:
        """(id, msgid, time, tags, line) rows in chronological order. ``newest``
        picks the last ``limit`` rows of the range, else the first."""
        # TAGMSGs (typing notifications and the like) are not history: never
        # returned, so they never count against a replay or a LIMIT
        where = ["target=?", "kind!='T'"]
        args: list[str | int] = [target]
        if before is not None:
            where.append("id<?")
            args.append(before)
        if after is not None:
            where.append("id>?")
            args.append(after)
        order = "DESC" if newest else "ASC"
        sql = f"SELECT id, msgid, time, tags, line FROM history WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?"
        with self.lock:
            rows = self.conn.execute(sql, (*args, limit)).fetchall()
        return sorted(rows)

    def targets(self, targets: Iterable[str], start: float, end: float, limit: int,
                newest: bool = False) -> list[tuple[str, float]]:
        """(target, latest time) of the given targets with messages strictly
        between ``start`` and ``end``: the ``limit`` earliest such targets (by
        that time), or with ``newest`` the latest."""
        found: list[tuple[str, float]] = []
        with self.lock:
            for key in dict.fromkeys(targets):
                last = self._last_before(key, end)
                if last is not None and last[1] > start:
                    found.append((key, last[1]))
        found.sort(key=lambda kt: (kt[1], kt[0]), reverse=newest)
        return found[:limit]

    def dm_targets(self, me: str, start: float, end: float, limit: int,
                   newest: bool = False) -> list[tuple[str, float]]:
        """As :meth:`targets`, for the conversations of ``me`` (a folded identity)."""
        head, tail = f"@{me} ", f" {me}"  # compared exactly: no LIKE wildcards from nicks
        order = "DESC" if newest else "ASC"
        with self.lock:
            rows = self.conn.execute(
                "SELECT target, max(time) FROM history WHERE substr(target, 1, 1) = '@'"
                " AND (substr(target, 1, ?) = ? OR substr(target, -?) = ?) AND time>? AND time<?"
                f" AND kind!='T' GROUP BY target ORDER BY max(time) {order} LIMIT ?",
                (len(head), head, len(tail), tail, start, end, limit)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def expire(self, max_age: float, max_per_target: int, now: float) -> int:
        """Retention: drop rows older than ``max_age`` seconds (0: keep) and all but
        the newest ``max_per_target`` of each target (0: keep). Returns rows removed."""
        removed = 0
        with self.lock:
            if max_age:
                removed += self.conn.execute("DELETE FROM history WHERE time<?", (now - max_age,)).rowcount
            if max_per_target:
                for (target,) in self.conn.execute(
                        "SELECT target FROM history GROUP BY target HAVING count(*)>?", (max_per_target,)).fetchall():
                    removed += self.conn.execute(
                        "DELETE FROM history WHERE target=? AND id<=(SELECT id FROM history WHERE target=?"
                        " ORDER BY id DESC LIMIT 1 OFFSET ?)", (target, target, max_per_target)).rowcount
        return removed


def dm_key(a: str, b: str) -> str:
    """The history target of a private conversation between two folded names
    (a space cannot occur in a nick, so the pair splits back unambiguously)."""
    x, y = sorted((a, b))
    return f"@{x} {y}"
