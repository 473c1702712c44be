"""The pub channel: one ordered stream of records, routed to per-worker inboxes.

A :class:`Bus` lives in the manager process (:mod:`server.bus.local.manager`).
Each worker's publisher thread hands it a batch of :mod:`server.bus.records`
in one ``publish()`` call; each worker's subscriber thread takes its whole
inbox with ``fetch()``.

The contract, and how this module keeps it:

* **One order per channel.** ``publish()`` applies a batch item by item under
  :attr:`Bus.lock`: registry operations, message checks and routing all happen
  in that one critical section, so every record lands in the inboxes in one
  order and every member of a channel, on any worker, sees that channel's lines
  in the same order. History row ids are given out in that order too.
* **One completion per token** (see :mod:`server.bus.records`): ``_message`` and
  ``_request`` put the record carrying the token last among what the item
  sends to the publishing worker, and an item that fails still gets a
  :class:`Done` or an error :class:`Result`.
* **Stored before shown; no disk I/O under the lock.** The locked section does
  not write to inboxes directly: it builds a :class:`_Job` (the records for
  each worker, the history rows, the effects such as a registered channel's
  record or the K-line file) and queues it. Then, off the lock, the publishing
  thread stores every queued job it finds (group commit: whoever comes first
  stores the rows of every job queued so far, others queue and return) and only
  then, under the lock again, appends the jobs' records to the inboxes, in
  queue order. History rows alone are stored with one ``write()`` to the
  journal (server/state/journal.py), which survives the death of any process;
  the :class:`Committer` thread moves them into SQLite in large groups, twice
  a second. Effects, and jobs after whose result a worker reads history
  (``READS_HISTORY``: a ``history_barrier``, a JOIN's replay), go into SQLite
  at once, in one transaction after the journal's rows. A job with nothing to
  store and nothing queued before it is released at once. The Committer also
  takes what publishers left over and applies retention. So no client receives
  a message (its echo or a member's copy) before it is stored, a slow commit
  stalls deliveries but never the routing of new batches, and a history read
  sees every row released before it.
* **A new manager can be rebuilt from the workers.** Whenever a channel's
  state changes (modes, topic, lists, a first local member) the bus pushes a
  :class:`ChannelState` to the workers holding its members, and a member's
  prefix modes to its own worker (:class:`MemberModes`), in the same job as
  the change. When the manager dies, the supervisor starts a new one at the
  same address; each worker calls :meth:`Bus.restore` with its clients and
  channels (:mod:`server.state.rebuild`) before it publishes anything else.
  Items whose completion the old manager never sent are failed by their
  worker (never re-published: another worker may have shown them already).
* **Storage that fails for good stops the server.** A commit that fails with
  a full disk, a read-only or vanished file or an I/O error is not retried
  forever: the manager logs why and exits with :data:`EXIT_STORAGE_ERROR`,
  and the supervisor stops instead of starting a new one (nothing unstored was
  shown to anyone). Other errors (a locked database) are retried.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from server.bus.records import (
    Begin,
    ChannelDelivery,
    ChannelImage,
    Delivered,
    Done,
    Effect,
    Event,
    MemberModes,
    PrivateDelivery,
    Published,
    RedactRow,
    Reply,
    Request,
    Result,
    SaveChannel,
    SaveKlines,
    SaveReadMarker,
    Send,
    SessionImage,
    Stamp,
    Wire,
    pack,
    unpack,
)
from server.protocol import RemoteProtocolError, numerics
from server.state import klines, rebuild
from server.state.journal import Journal
from server.state.registry import Channel, Registry
from server.state.store import Store, dm_key

log = logging.getLogger(__name__)

# Registry operations a worker may ask for, by name.
OPS = frozenset({
    "connect", "claim_nick", "register", "disconnect", "join", "part", "part_all", "topic",
    "names", "whois", "whowas", "ison", "userhost", "lusers", "set_away", "set_user_mode",
    "set_realname", "mode", "mode_info", "mode_list", "kick", "invite", "list_channels", "who",
    "kill", "wallops", "kline", "unkline", "list_klines", "login", "account_created", "account_dropped",
    "chan_register", "chan_drop", "chan_access", "chan_info", "set_history", "history_target", "banned",
    "login_attempt", "login_done",
    "monitor", "markread", "redact",
})

HistoryRow = tuple[int, str, str, float, str, bytes, bytes]  # id, target, msgid, time, kind, tags, line
MAX_QUEUED_JOBS = 256  # publishers wait (backpressure) while more jobs than this await their commit
EXIT_STORAGE_ERROR = 4  # the manager's exit code when the data directory cannot be written
# SQLite errors that no retry will cure
FATAL_STORAGE = ("disk is full", "disk i/o error", "readonly", "read-only", "unable to open", "no such table",
                 "not a database", "malformed")
# registry operations that may change a channel's state (pushed as ChannelState)
CHANNEL_OPS = frozenset({"join", "mode", "topic", "set_history"})
# registry operations after whose result the worker reads history from SQLite: the
# journal's rows go into the database before their job is released
READS_HISTORY = frozenset({"history_barrier", "join"})
JOURNAL_ROWS = 20000  # most rows kept in the journal (and memory) before they go into SQLite
INGEST_EVERY = 0.5  # seconds: the committer moves the journal's rows into SQLite at least this often


class _Job:
    """What one locked section produced: records per worker, rows and effects to
    store first."""

    __slots__ = ("effects", "out", "reads", "rows")

    def __init__(self) -> None:
        self.out: dict[int, list[Delivered]] = {}
        self.rows: list[HistoryRow] = []
        self.effects: list[Effect] = []
        self.reads = False  # a worker reads history after this job's result (READS_HISTORY)

    def box(self, worker: int) -> list[Delivered]:
        box = self.out.get(worker)
        if box is None:
            box = self.out[worker] = []
        return box


class Committer(threading.Thread):
    """Stores queued jobs (group commit), then releases their records to the inboxes."""

    def __init__(self, bus: Bus, max_age: float, max_per_target: int, expire_every: float) -> None:
        super().__init__(name="bus-committer", daemon=True)
        self.bus = bus
        self.max_age = max_age
        self.max_per_target = max_per_target
        self.expire_every = expire_every
        self.last_expire = time.time()
        self.written = 0  # history rows stored (journal or database) since start
        self.commits = 0
        self.commit_seconds = 0.0
        # rows in the journal, not yet in SQLite (only the committing thread touches it)
        self.unflushed: list[tuple[Any, ...]] = []
        # rows of the journal's previous file, on their way into SQLite (an ingest runs)
        self.moving: list[tuple[Any, ...]] = []
        self.last_ingest = time.monotonic()
        # Held while SQLite is written off the group commit (an ingest, a RESTART
        # checkpoint, retention) and by a group commit that writes SQLite: so
        # a job after whose result history is read commits after the rows an
        # ingest is moving, and journal appends never wait for either.
        self.sqlite_lock = threading.Lock()

    def run(self) -> None:
        """Commit what no publisher took (handed over, or queued by drop_worker),
        and apply retention when idle."""
        bus = self.bus
        while True:
            with bus.lock:
                if not bus.queue or bus.committing:
                    bus.idle.notify_all()
                    bus.queued.wait(INGEST_EVERY / 2)
                jobs = bus.take_jobs()
            if jobs:
                bus.commit(jobs)
            if self.unflushed and time.monotonic() - self.last_ingest >= INGEST_EVERY:
                self.ingest()
            self.expire()

    def store(self, jobs: list[_Job]) -> None:
        """Store what ``jobs`` carry before their records are released (the
        committing thread only): history rows alone go into the journal
        (server/state/journal.py); anything else, or a job after whose result a
        worker reads history, goes into SQLite at once, with the journal's rows
        before it."""
        rows = [(hid, key, msgid, ts, kind, tags[1:-1].decode(), line[:-2].decode())
                for job in jobs for hid, key, msgid, ts, kind, tags, line in job.rows]
        if (rows and len(self.unflushed) + len(rows) <= JOURNAL_ROWS
                and not any(job.effects or job.reads for job in jobs)):
            try:
                self.bus.journal.append(rows)
            except OSError:
                log.exception("history journal: write failed; storing in the database instead")
            else:
                self.unflushed.extend(rows)
                self.written += len(rows)
                return
        channels = [e for job in jobs for e in job.effects if isinstance(e, SaveChannel)]
        bans = [e for job in jobs for e in job.effects if isinstance(e, SaveKlines)]
        markers = [(e.account, e.target, e.timestamp) for job in jobs for e in job.effects
                   if isinstance(e, SaveReadMarker)]
        redactions = [(e.target, e.msgid) for job in jobs for e in job.effects if isinstance(e, RedactRow)]
        with self.sqlite_lock:
            self.commit(self.unflushed + rows, channels, markers, redactions, journal=True)
        self.written += len(rows)
        if bans:
            try:
                klines.save(self.bus.klines_path, bans[-1].klines)
            except OSError:
                log.exception("server bans not saved to %s", self.bus.klines_path)

    def ingest(self) -> None:
        """Move the journal's rows into SQLite, in one transaction.

        Commits are held off only while the journal turns over to a new file
        (a rename): the rows go into SQLite while publishers append to the new
        file, so a message is not held for the length of this transaction
        (30-120 ms for the 4000 rows of half a second at 8000 msgs/s, during
        which every delivery of the server waited when it was taken under the
        hold). The previous file is removed once its rows are in."""
        self.last_ingest = time.monotonic()
        with self.bus.hold_commits():
            if not self.unflushed:
                return
            self.sqlite_lock.acquire()  # (lock order: commits held, then this lock, as in store())
            try:
                self.bus.journal.turn_over()
            except OSError:  # the rows stay in the one file, emptied after this commit
                log.exception("history journal: not turned over")
                try:
                    self.commit(self.unflushed, [], [], [], journal=True)
                finally:
                    self.sqlite_lock.release()
                return
            rows, self.moving, self.unflushed = self.unflushed, self.unflushed, []
        try:
            self.commit(rows, [], [], [])
        finally:
            self.moving = []
            self.sqlite_lock.release()
        try:
            self.bus.journal.drop_previous()
        except OSError:  # its rows are in SQLite; read again after a crash, they are ignored
            log.exception("history journal: previous file not removed")

    def commit(self, rows: list[tuple[Any, ...]], channels: list[SaveChannel], markers: list[tuple[str, str, str]],
               redactions: list[tuple[str, str]], journal: bool = False) -> None:
        """One SQLite transaction (retried until it lands, or the process stops).
        ``journal``: the current journal file's rows are in it (the committing
        thread), so that file starts over."""
        delay = 0.05
        while rows or channels or markers or redactions:
            try:
                started = time.perf_counter()
                self.bus.store.commit(rows, [(e.key, e.record) for e in channels], markers, redactions)
                self.commit_seconds += time.perf_counter() - started
                self.commits += 1
                break
            except Exception as exc:
                # Nothing of these jobs may be shown before it is stored: retry
                # (deliveries wait; the publishers feel it as backpressure),
                # unless no retry can help.
                if is_fatal(exc):
                    log.critical("store: cannot write to %s (%s): stopping; nothing unstored was shown",
                                 self.bus.store.path, exc)
                    logging.shutdown()
                    os._exit(EXIT_STORAGE_ERROR)
                log.exception("store: %d history rows not committed; retrying", len(rows))
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if journal and self.unflushed:
            self.unflushed = []
            try:
                self.bus.journal.clear()
            except OSError:  # its rows are in SQLite; read again after a crash, they are ignored
                log.exception("history journal: not emptied")

    def checkpoints(self) -> None:
        """The WAL checkpoints the committing connection does not do (Store.defer_checkpoints),
        once a second from a connection of its own, off every delivery path.

        Under steady traffic a commit lands while every checkpoint runs, and
        SQLite starts the WAL over only after a checkpoint that copied every
        frame and while no reader holds it: the file grew without end (500 MB
        in 15 s of the rooms benchmark; each small commit writes a page per
        index leaf it touches) and every commit paid for extending it (ext4
        allocating and zeroing new blocks, 18 % of the manager's CPU). So a
        PASSIVE pass copies the bulk alongside the commits, then a RESTART pass
        runs with this process's SQLite writers held off (``sqlite_lock``;
        journal appends go on): it copies only what came during the first, so
        the hold is short, and the next commit writes the WAL from its start
        again, over pages already in memory."""
        store = Store(self.bus.data_dir)
        while True:
            time.sleep(1.0)
            try:
                store.checkpoint()
                with self.sqlite_lock:
                    store.checkpoint(restart=True)
            except Exception:
                log.exception("store: WAL checkpoint failed")

    def expire(self) -> None:
        """Retention, every ``expire_every`` seconds (in this thread, off the lock)."""
        now = time.time()
        if now - self.last_expire < self.expire_every:
            return
        self.last_expire = now
        if self.max_age or self.max_per_target:
            try:
                with self.sqlite_lock:
                    self.bus.store.expire(self.max_age, self.max_per_target, now)
            except Exception:
                log.exception("history: retention failed")


class Bus:
    """Routing and ordering for all workers; every public method is thread-safe."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.max_inbox = int(settings.get("max_inbox", 100_000))
        self.inboxes: dict[int, list[Delivered]] = {}
        self.ready: dict[int, threading.Condition] = {}
        self.space = threading.Condition(self.lock)
        self.queued = threading.Condition(self.lock)  # a job was queued (wakes the committer)
        self.idle = threading.Condition(self.lock)  # the committer found nothing to do
        self.queue: deque[_Job] = deque()
        self.generations: dict[int, int] = {}  # worker index -> how many times it was dropped
        self.committing = False
        self.job = _Job()  # the job the current locked section fills
        self.registry = Registry(
            self._emit,
            casemapping=settings.get("casemapping", "rfc1459"),
            channel_len=int(settings.get("channel_len", 64)),
            max_channels=int(settings.get("max_channels", 0)),
            max_list=int(settings.get("max_list", 100)),
        )
        data_dir = settings.get("data_dir", "data")
        self.data_dir = data_dir
        self.store = Store(data_dir)
        self.store.defer_checkpoints()
        self.registry.accounts = self.store.account_names()
        self.registry.registered = self.store.channels()
        self.registry.persist_channel = lambda key, record: self.job.effects.append(SaveChannel(key, record))
        self.registry.read_markers = self.store.read_markers()
        self.registry.persist_marker = lambda account, target, ts: self.job.effects.append(
            SaveReadMarker(account, target, ts))
        self.registry.persist_redaction = lambda key, msgid: self.job.effects.append(RedactRow(key, msgid))
        # rows a manager stored in the journal and had not moved into SQLite when it died
        self.journal = Journal(data_dir)
        leftover = self.journal.read()
        if leftover:
            self.store.commit(leftover, [])
            log.info("history: %d rows from the journal of the previous manager", len(leftover))
        self.journal.clear()
        self.journal.drop_previous()
        self.history_id = self.store.last_history_id()
        self.history_time = self.store.last_history_time()  # rows are stored with times that never go back
        self.registry.history_mark = lambda: self.history_id
        self.registry.clock = lambda: self.now
        self.klines_path = Path(data_dir) / klines.FILE
        self.registry.klines = klines.load(self.klines_path, time.time())
        self.committer = Committer(self, float(settings.get("history_max_age", 0)),
                                   int(settings.get("history_max_per_target", 0)),
                                   float(settings.get("history_expire_every", 60.0)))
        self.committer.start()
        threading.Thread(target=self.committer.checkpoints, name="wal-checkpoint", daemon=True).start()
        self.published = 0
        self.batches = 0
        self.registrations = 0
        self.started = time.time()
        self.now = self.started
        self.clock: Callable[[], float] = time.time  # the time a batch is applied at (cluster: the entry's)
        self.handlers: dict[type, Callable[[int, Any], None]] = {Send: self._message, Request: self._request}
        self.state_seq = 0  # ChannelState pushes (see the module docstring)
        self.restored: dict[str, tuple[float, int]] = {}  # channel -> the state it was rebuilt from

    # -- wiring (lock held) --------------------------------------------------
    def _inbox(self, worker: int) -> list[Delivered]:
        box = self.inboxes.get(worker)
        if box is None:
            box = self.inboxes[worker] = []
            self.ready[worker] = threading.Condition(self.lock)
        return box

    def _emit(self, workers: Iterable[int], item: Event) -> None:
        job = self.job
        for w in workers:
            job.box(w).append(item)

    def _queue(self, job: _Job) -> None:
        """End a locked section: its job waits for its commit in bus order; a
        job with nothing to store and nothing before it goes straight out."""
        self.job = _Job()
        if (not job.rows and not job.effects and not self.queue and not self.committing
                and not (job.reads and (self.committer.unflushed or self.committer.moving))):
            self.release([job])
            return
        self.queue.append(job)

    def take_jobs(self) -> list[_Job]:
        """Become the committer of every queued job (lock held); [] if another
        thread is committing or nothing waits."""
        if self.committing or not self.queue:
            return []
        jobs = list(self.queue)
        self.queue.clear()
        self.committing = True
        return jobs

    def commit(self, jobs: list[_Job]) -> None:
        """Store ``jobs`` (lock not held), then release them; take over what was
        queued meanwhile, twice at most, then leave the rest to the committer
        thread (so one publisher is not kept committing for everyone)."""
        for rounds in range(3):
            self.committer.store(jobs)
            with self.lock:
                self.release(jobs)
                self.space.notify_all()
                self.committing = False
                if rounds == 2 or not self.queue:
                    if self.queue:
                        self.queued.notify()
                    else:
                        self.idle.notify_all()
                    return
                jobs = self.take_jobs()

    @contextlib.contextmanager
    def hold_commits(self) -> Iterator[None]:
        """No commit runs inside this block (jobs queue meanwhile, as behind a
        slow commit); the committer thread takes them after it."""
        with self.lock:
            while self.committing:
                self.space.wait(0.05)
            self.committing = True
        try:
            yield
        finally:
            with self.lock:
                self.committing = False
                self.space.notify_all()
                if self.queue:
                    self.queued.notify()
                else:
                    self.idle.notify_all()

    def release(self, jobs: list[_Job]) -> None:
        """After the commit: hand the jobs' records to the inboxes, in order."""
        touched: set[int] = set()
        for job in jobs:
            for w, items in job.out.items():
                self._inbox(w).extend(items)
                touched.add(w)
        for w in touched:
            self.ready[w].notify()

    # -- the two calls the workers make ---------------------------------------
    def publish(self, worker: int, batch: list[Published]) -> int:
        """Apply a batch in order; return the deepest inbox it will touch."""
        with self.lock:
            job = self.job
            self.now = self.clock()
            stamp: Stamp | None = None
            handlers = self.handlers
            for item in batch:
                handler = handlers.get(type(item))
                if handler is None:
                    if isinstance(item, Stamp):
                        stamp = item
                    else:
                        log.error("bus: unknown record %r from worker %d", type(item).__name__, worker)
                    continue
                try:
                    handler(worker, item)
                except Exception:
                    log.exception("bus: %s failed", type(item).__name__)
                    assert not isinstance(item, Stamp)
                    token = item.token
                    if token:  # a completion for every token, whatever happened
                        job.box(worker).append(Done(item.sid, token) if isinstance(item, Send) else
                                               Result(token, "err", (numerics.ERR_UNKNOWNERROR, ("*",),
                                                                     "Internal error")))
            if stamp is not None:
                for box in job.out.values():
                    box.append(stamp)
            self.published += len(batch) - (stamp is not None)
            self.batches += 1
            touched = list(job.out)
            self._queue(job)
            jobs = self.take_jobs()  # group commit: the first publisher to come commits for all queued
        if jobs:
            self.commit(jobs)
        with self.lock:
            depth = max((len(self.inboxes.get(w, ())) for w in touched), default=0)
            # Bounded inboxes and commit queue: hold the publisher (and so,
            # upstream, the clients whose lines it carries) until they drain.
            deadline = time.monotonic() + 5.0
            while ((depth > self.max_inbox or len(self.queue) > MAX_QUEUED_JOBS)
                   and time.monotonic() < deadline):
                self.space.wait(0.1)
                depth = max((len(self.inboxes.get(w, ())) for w in touched), default=0)
            return depth

    def fetch(self, worker: int, timeout: float = 1.0) -> list[Delivered]:
        """Everything waiting for ``worker`` (blocks up to ``timeout`` for one item)."""
        with self.lock:
            generation = self.generations.get(worker, 0)
            box = self._inbox(worker)
            if not box:
                self.ready[worker].wait(timeout)
                box = self.inboxes[worker]
            if not box or self.generations.get(worker, 0) != generation:
                # (a call from a worker that died meanwhile must not take what
                # is already waiting for its successor)
                return []
            self.inboxes[worker] = []
            self.space.notify_all()
            return box

    # -- the same two calls in the batches' wire form (what the proxy sends) -----
    def publish_wire(self, worker: int, wire: Wire) -> int:
        """:meth:`publish` of a batch in its wire form (:func:`server.bus.records.pack`,
        which pickles in a fraction of the time the records take)."""
        return self.publish(worker, unpack(wire))

    def fetch_wire(self, worker: int, timeout: float = 1.0) -> Wire:
        """:meth:`fetch`, answered in the wire form."""
        return pack(self.fetch(worker, timeout))

    # -- administration ---------------------------------------------------------
    def drop_worker(self, worker: int, reason: str = "Connection closed") -> int:
        """A worker died: its clients are gone; others see QUITs at once."""
        with self.lock:
            self.generations[worker] = self.generations.get(worker, 0) + 1
            n = self.registry.drop_worker(worker, reason)
            self.job.out.pop(worker, None)
            for queued in self.queue:  # records for the dead worker, not yet released
                queued.out.pop(worker, None)
            self._queue(self.job)
            self.queued.notify()
            self.inboxes[worker] = []
            self.space.notify_all()
            return n

    def restore(self, worker: int, users: list[SessionImage], channels: list[ChannelImage]) -> int:
        """A worker re-registers its clients and channels into this (new)
        manager (server/state/rebuild.py); returns how many clients it added."""
        with self.lock:
            self.now = self.clock()
            n = rebuild.restore(self.registry, worker, users, channels, self.restored, self.now)
            self._queue(self.job)
            log.info("worker %d restored %d clients in %d channels", worker, n, len(channels))
            return n

    def flush_history(self) -> int:
        """Wait until every queued job is stored (shutdown); returns rows written."""
        deadline = time.monotonic() + 10.0
        with self.lock:
            while (self.queue or self.committing) and time.monotonic() < deadline:
                self.idle.wait(0.1)
        self.committer.ingest()
        return self.committer.written

    def stats(self) -> dict[str, Any]:
        with self.lock:
            c = self.committer
            return {
                "published": self.published,
                "batches": self.batches,
                "registrations": self.registrations,
                "depth": {w: len(b) for w, b in self.inboxes.items()},
                "users": len(self.registry.users),
                "channels": len(self.registry.channels),
                "commit_queue": len(self.queue),
                "commits": c.commits,
                "commit_seconds": c.commit_seconds,
                "history_written": c.written,
            }

    def query(self, op: str, *args: Any) -> Any:
        """A read-only registry call for the supervisor (metrics, health)."""
        if op not in {"lusers", "whois", "names"}:
            raise ValueError(op)
        with self.lock:
            return getattr(self.registry, op)(*args)

    # -- inside the lock -------------------------------------------------------
    def _store_row(self, key: str, item: Send) -> None:
        """A history row; its id is its place in the bus order."""
        self.history_id += 1
        # Time order is id order (the store's time lookups rely on it, migration
        # 3): a message stamped a moment before one another worker's publish
        # already stored is stored at that one's time. Its server-time tag is
        # what the client was shown, and replays, unchanged.
        ts = item.time
        if ts < self.history_time:
            ts = self.history_time
        self.history_time = ts
        # kept as bytes here (inside the bus lock); the committer decodes them
        line = item.body if item.multi is None else item.multi.stored  # a multiline message: one row
        self.job.rows.append((self.history_id, key, item.msgid, ts, item.kind, item.tags_full, line))

    def _request(self, worker: int, item: Request) -> None:
        token, op = item.token, item.op
        job = self.job
        box = job.box(worker)
        mark = len(box)
        result: Result
        before = self._members_before(op, item.args)
        try:
            if op == "history_barrier":
                # Its result is released after every earlier row is committed.
                result = Result(token, "ok", None)
            elif op not in OPS:
                raise ValueError(f"unknown registry operation {op!r}")
            else:
                result = Result(token, "ok", getattr(self.registry, op)(*item.args))
        except RemoteProtocolError as exc:
            result = Result(token, "err", (exc.numeric, exc.params, exc.text))
        except KeyError:
            # The user vanished meanwhile (its worker was dropped); nothing to do.
            result = Result(token, "gone", None)
        except Exception:
            # A bug in one operation must not take the batch (or the bus) down.
            log.exception("bus: operation %s failed", op)
            result = Result(token, "err", (numerics.ERR_UNKNOWNERROR, (op.upper(),), "Internal error"))
        if op in READS_HISTORY:
            job.reads = True
        if result.status == "ok":
            if op in CHANNEL_OPS:
                self._push_state(worker, op, item.args, before)
            if op == "register":
                self.registrations += 1
            elif op in ("kline", "unkline"):
                job.effects.append(SaveKlines(list(self.registry.klines)))
        if token:
            box = job.box(worker)
            if len(box) > mark:  # events this request caused for its own worker
                box.insert(mark, Begin(token))
            box.append(result)

    def _members_before(self, op: str, args: tuple[Any, ...]) -> dict[int, str] | None:
        """A channel's member modes before a MODE (to see whose changed)."""
        if op != "mode" or len(args) < 2 or not isinstance(args[1], str):
            return None
        ch = self.registry.channels.get(self.registry.fold(args[1]))
        return dict(ch.members) if ch is not None else None

    def _push_state(self, worker: int, op: str, args: tuple[Any, ...], before: dict[int, str] | None) -> None:
        """After a channel operation: the state its members' workers keep
        (ChannelState, MemberModes) for a future rebuild."""
        reg = self.registry
        if len(args) < 2 or not isinstance(args[1], str):
            return
        ch = reg.channels.get(reg.fold(args[1]))
        if ch is None:
            return
        job = self.job
        if op == "join":
            sid = args[0]
            if sid not in ch.members:
                return
            if ch.workers[worker] == 1:  # this worker's first member: it had no state of this channel
                job.box(worker).append(self._state(ch))
            if ch.members[sid]:
                job.box(worker).append(MemberModes(ch.key, sid, ch.members[sid]))
            return
        if op == "topic" and (len(args) < 3 or args[2] is None):
            return  # a query
        state = self._state(ch)
        for w in ch.workers:
            job.box(w).append(state)
        if before is not None:
            for sid, modes in ch.members.items():
                if before.get(sid, "") != modes:
                    job.box(reg.users[sid].worker).append(MemberModes(ch.key, sid, modes))

    def _state(self, ch: Channel) -> Any:
        self.state_seq += 1
        return rebuild.state_of(ch, (self.started, self.state_seq))

    def _message(self, worker: int, item: Send) -> None:
        sid, target, kind, token = item.sid, item.target, item.kind, item.token
        reg = self.registry
        job = self.job
        sender = reg.users.get(sid)
        if sender is not None:
            sender.last_active = self.now
        try:
            if item.is_channel and target[0] in "@+":
                # STATUSMSG: to each member with at least that prefix, one copy each
                # (sender 0: no echo per copy); the sender's echo and completion once
                # (a delivery to a key no replica holds); not kept as history
                ch = reg.channels.get(target[1:])
                if ch is None:
                    raise RemoteProtocolError(numerics.ERR_NOSUCHCHANNEL, target[1:], text="No such channel")
                reg.check_send(sid, ch)
                wanted = "o" if target[0] == "@" else "ov"
                for msid, modes in ch.members.items():
                    if msid != sid and any(m in modes for m in wanted):
                        job.box(reg.users[msid].worker).append(
                            PrivateDelivery(msid, 0, kind, item.tags_full, item.tags_time, item.body, 0, item.multi))
                job.box(worker).append(ChannelDelivery(target, sid, kind, item.tags_full, item.tags_time, item.body,
                                                       token, item.multi))
            elif item.is_channel:
                ch = reg.channels.get(target)
                if ch is None:
                    raise RemoteProtocolError(numerics.ERR_NOSUCHCHANNEL, target, text="No such channel")
                reg.check_send(sid, ch)
                out = ChannelDelivery(target, sid, kind, item.tags_full, item.tags_time, item.body, token, item.multi)
                for w in ch.workers:
                    job.box(w).append(out)
                if worker not in ch.workers:
                    job.box(worker).append(out)  # the sender's echo and completion
                if ch.history and kind != "T":  # TAGMSGs (typing...) are not history
                    self._store_row(ch.key, item)
            else:
                to = reg.nicks.get(target)
                user = reg.users.get(to) if to is not None else None
                if user is None or not user.registered:
                    raise RemoteProtocolError(numerics.ERR_NOSUCHNICK, target, text="No such nick/channel")
                if user.away is not None and kind == "P":
                    job.box(worker).append(Reply(sid, numerics.RPL_AWAY, (user.nick,), user.away, token, False))
                item = _addressed(item, user.nick)
                delivery = PrivateDelivery(user.sid, sid, kind, item.tags_full, item.tags_time, item.body, token,
                                           item.multi)
                job.box(user.worker).append(delivery)
                if user.worker != worker:
                    job.box(worker).append(delivery)  # the sender's echo and completion
                if kind != "T":
                    key = dm_key(reg.identity(sender), reg.identity(user)) if sender is not None else None
                    if key is not None:
                        self._store_row(key, item)
        except RemoteProtocolError as exc:
            box = job.box(worker)
            if kind != "N":  # NOTICE never gets an automatic reply
                box.append(Reply(sid, exc.numeric, exc.params, exc.text, token))
            elif token:
                box.append(Done(sid, token))


def _addressed(item: Send, nick: str) -> Send:
    """``item`` naming its target by the nick as it is now (``PRIVMSG BOB`` to
    ``bob`` reaches bob, echo and history as ``PRIVMSG bob``)."""
    parts = item.body.split(b" ", 3)
    wanted = nick.encode()
    if len(parts) < 4 or parts[2] == wanted:
        return item
    parts[2] = wanted
    return item._replace(body=b" ".join(parts))


def is_fatal(exc: BaseException) -> bool:
    """Whether a storage error will not go away by itself (disk full, file gone)."""
    seen: BaseException | None = exc
    while seen is not None:  # a failed ROLLBACK hides the cause in __context__
        if isinstance(seen, OSError):
            return True
        if isinstance(seen, sqlite3.DatabaseError) and not isinstance(seen, sqlite3.IntegrityError):
            text = str(seen).lower()
            if any(t in text for t in FATAL_STORAGE):
                return True
        seen = seen.__context__
    return False
