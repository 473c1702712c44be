"""The pub channel: one ordered stream of events, routed to per-worker inboxes.

A :class:`Bus` lives in the manager process (see :mod:`server.bus.local.manager`). Each
worker's publisher thread hands it a *batch* of items in one ``publish()`` call;
the bus applies them in order under one lock, which is what gives every channel
one order on every worker, and appends what each worker must see to that
worker's inbox. Each worker's subscriber thread takes its whole inbox with
``fetch()``.

Items a worker publishes:

* ``("m", sid, target, is_channel, kind, tags_full, tags_time, body)``: a
  PRIVMSG/NOTICE/TAGMSG (``kind`` is ``"P"``, ``"N"`` or ``"T"``), pre-encoded
  once by the sender's worker; checked (+n, +m, bans) and routed here.
* ``("r", sid, token, op, args)``: a registry operation; the result comes back
  to the publishing worker's inbox as ``("R", token, result)`` *after* every
  event the operation caused, so the client sees its JOIN before its NAMES.

Items a worker receives: ``D`` (channel delivery), ``U`` (private delivery),
``X`` (an error for one client), ``R`` (a result), and the state events the
:class:`~server.state.registry.Registry` emits (``J``, ``P``, ``Q``, ``N``, ``T``...).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from server.protocol import RemoteProtocolError, numerics
from server.state import klines
from server.state.registry import Registry
from server.state.store import Store, dm_key

log = logging.getLogger(__name__)

# Registry operations a worker may ask for, by name.
OPS = frozenset({
    "connect", "claim_nick", "register", "disconnect", "join", "part", "part_all", "topic",
    "names", "whois", "whowas", "ison", "userhost", "lusers", "set_away", "set_user_mode",
    "set_realname", "mode", "mode_info", "mode_list", "kick", "invite", "list_channels", "who",
    "kill", "wallops", "kline", "unkline", "list_klines", "login", "account_created", "account_dropped",
    "chan_register", "chan_drop", "chan_access", "chan_info", "set_history", "history_target",
    "login_attempt", "login_done",
})


class HistoryWriter(threading.Thread):
    """Writes history rows in batched transactions, off the delivery path.

    The bus appends rows (in the bus order, so in each channel's one order);
    this thread writes whatever has gathered every ``interval`` seconds.
    ``flush()`` writes synchronously (a CHATHISTORY barrier, shutdown)."""

    def __init__(self, store: Store, interval: float, max_age: float, max_per_target: int,
                 expire_every: float = 60.0) -> None:
        super().__init__(name="history-writer", daemon=True)
        self.store = store
        self.interval = interval
        self.max_age = max_age
        self.max_per_target = max_per_target
        # A deque: appends (bus thread) and pops (writer) are atomic, so a row
        # appended while a flush is under way is kept for the next one.
        self.rows: deque[tuple[int, str, str, float, str, bytes, bytes]] = deque()
        self.lock = threading.Lock()  # one flush at a time: rows reach the database in order
        self.wake = threading.Event()
        self.written = 0
        self.written_id = 0  # the id of the last row committed
        self.expire_every = expire_every
        self.last_expire = time.time()

    def add(self, row: tuple[int, str, str, float, str, bytes, bytes]) -> None:
        """(id, target, msgid, time, kind, b"@tags ", b"line\\r\\n"), as the bus saw them."""
        self.rows.append(row)

    def flush(self) -> None:
        with self.lock:
            pending = self.rows
            rows = [(hid, key, msgid, ts, kind, tags[1:-1].decode(), line[:-2].decode())
                    for hid, key, msgid, ts, kind, tags, line in (pending.popleft() for _ in range(len(pending)))]
            if rows:
                self.store.append_history(rows)
                self.written += len(rows)
                self.written_id = rows[-1][0]

    def run(self) -> None:
        while True:
            self.wake.wait(self.interval)
            self.wake.clear()
            try:
                self.flush()
                now = time.time()
                if now - self.last_expire > self.expire_every:
                    self.last_expire = now
                    with self.lock:
                        self.store.expire(self.max_age, self.max_per_target, now)
            except Exception:
                log.exception("history: write failed; retrying")
                time.sleep(1)


class Bus:
    """Routing and ordering for all workers; every method is thread-safe."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.max_inbox = int(settings.get("max_inbox", 100_000))
        self.inboxes: dict[int, list[tuple[Any, ...]]] = {}
        self.ready: dict[int, threading.Condition] = {}
        self.space = threading.Condition(self.lock)
        self.registry = Registry(
            self._emit,
            casemapping=settings.get("casemapping", "rfc1459"),
            channel_len=int(settings.get("channel_len", 64)),
            max_channels=int(settings.get("max_channels", 0)),
            max_list=int(settings.get("max_list", 100)),
        )
        self.store = Store(settings.get("data_dir", "data"))
        self.registry.accounts = self.store.account_names()
        self.registry.registered = self.store.channels()
        self.registry.persist_channel = self._persist_channel
        self.history_id = self.store.last_history_id()
        # channel key -> id of its newest history row, while that row may be unwritten
        self.history_last: dict[str, int] = {}
        self.registry.history_mark = lambda: self.history_id
        self.klines_path = Path(settings.get("data_dir", "data")) / klines.FILE
        self.registry.klines = klines.load(self.klines_path, time.time())
        self.history = HistoryWriter(self.store, float(settings.get("history_flush", 0.05)),
                                     float(settings.get("history_max_age", 0)),
                                     int(settings.get("history_max_per_target", 0)),
                                     float(settings.get("history_expire_every", 60.0)))
        self.history.start()
        self._touched: set[int] = set()
        self.published = 0
        self.batches = 0
        self.registrations = 0
        self.started = time.time()
        self.now = self.started

    # -- wiring ------------------------------------------------------------
    def _inbox(self, worker: int) -> list[tuple[Any, ...]]:
        box = self.inboxes.get(worker)
        if box is None:
            box = self.inboxes[worker] = []
            self.ready[worker] = threading.Condition(self.lock)
        return box

    def _emit(self, workers: Iterable[int], item: tuple[Any, ...]) -> None:
        for w in workers:
            self._inbox(w).append(item)
            self._touched.add(w)

    # -- the two calls the workers make -----------------------------------
    def publish(self, worker: int, batch: list[tuple[Any, ...]]) -> int:
        """Apply a batch in order; return the deepest inbox it touched."""
        with self.lock:
            self._touched.clear()
            self.now = time.time()
            stamp = None
            for item in batch:
                try:
                    kind = item[0]
                    if kind == "m":
                        self._message(worker, item)
                    elif kind == "L":  # ("L", time of publish): passed on for the latency metric
                        stamp = item
                    else:
                        self._request(worker, item)
                except Exception:
                    log.exception("bus: item %r failed", item[:4])
            if stamp is not None:
                for w in self._touched:
                    self.inboxes[w].append(stamp)
            self.published += len(batch) - (stamp is not None)
            self.batches += 1
            touched = list(self._touched)
            for w in touched:
                self.ready[w].notify()
            depth = max((len(self.inboxes[w]) for w in touched), default=0)
            # Bounded inboxes: hold the publisher (and so, upstream, the clients
            # whose lines it carries) until slow subscribers catch up.
            deadline = time.monotonic() + 5.0
            while depth > self.max_inbox and time.monotonic() < deadline:
                self.space.wait(0.1)
                depth = max((len(self.inboxes.get(w, ())) for w in touched), default=0)
            return depth

    def fetch(self, worker: int, timeout: float = 1.0) -> list[tuple[Any, ...]]:
        """Everything waiting for ``worker`` (blocks up to ``timeout`` for one item)."""
        with self.lock:
            box = self._inbox(worker)
            if not box:
                self.ready[worker].wait(timeout)
                box = self.inboxes[worker]
            if not box:
                return []
            self.inboxes[worker] = []
            self.space.notify_all()
            return box

    # -- administration ----------------------------------------------------
    def drop_worker(self, worker: int, reason: str = "Connection closed") -> int:
        """A worker died: its clients are gone; others see QUITs at once."""
        with self.lock:
            self._touched.clear()
            n = self.registry.drop_worker(worker, reason)
            self.inboxes[worker] = []
            for w in self._touched:
                self.ready[w].notify()
            self.space.notify_all()
            return n

    def store_row(self, key: str, msgid: str, ts: float, kind: str, tags_full: bytes, body: bytes) -> None:
        """Queue a history row; its id is its place in the bus order."""
        self.history_id += 1
        # kept as bytes here (inside the bus lock); the writer decodes them
        self.history.add((self.history_id, key, msgid, ts, kind, tags_full, body))

    def _note_channel_row(self, key: str) -> None:
        last = self.history_last
        last[key] = self.history_id
        if len(last) > 10_000:  # forget channels whose rows are all written
            done = self.history.written_id
            for k in [k for k, v in last.items() if v <= done]:
                del last[k]

    def _history_ready(self, key: str) -> None:
        """Make a channel's history readable up to now (a joiner's replay reads
        it next). Flushes only when a row of that channel is still unwritten, so
        most joins cost nothing here and none needs a separate barrier request."""
        last = self.history_last.pop(key, 0)
        if last > self.history.written_id:
            self.history.flush()

    def flush_history(self) -> int:
        """Write all pending history now (shutdown); returns rows written so far."""
        self.history.flush()
        return self.history.written

    def _persist_channel(self, key: str, record: dict[str, Any] | None) -> None:
        try:
            if record is None:
                self.store.drop_channel(key)
            else:
                self.store.save_channel(key, record)
        except Exception:
            log.exception("store: channel %s not saved", key)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "published": self.published,
                "batches": self.batches,
                "registrations": self.registrations,
                "depth": {w: len(b) for w, b in self.inboxes.items()},
                "users": len(self.registry.users),
                "channels": len(self.registry.channels),
            }

    def query(self, op: str, *args: Any) -> Any:
        """A read-only registry call for the supervisor (metrics, health)."""
        if op not in {"lusers", "whois", "names"}:
            raise ValueError(op)
        with self.lock:
            return getattr(self.registry, op)(*args)

    # -- inside the lock ---------------------------------------------------
    def _request(self, worker: int, item: tuple[Any, ...]) -> None:
        _, _sid, token, op, args = item
        try:
            if op == "history_barrier":
                # Everything published before this request is readable once it returns.
                self.history.flush()
                result: tuple[Any, ...] = ("ok", None)
            elif op not in OPS:
                raise ValueError(f"unknown registry operation {op!r}")
            else:
                result = ("ok", getattr(self.registry, op)(*args))
                if op == "join" and result[1] is not None and result[1]["history"]:
                    self._history_ready(result[1]["key"])
        except RemoteProtocolError as exc:
            result = ("err", exc.numeric, exc.params, exc.text)
        except KeyError:
            # The user vanished meanwhile (its worker was dropped); nothing to do.
            result = ("gone",)
        except Exception:
            # A bug in one operation must not take the batch (or the bus) down.
            log.exception("bus: operation %s failed", op)
            result = ("err", numerics.ERR_UNKNOWNERROR, (op.upper(),), "Internal error")
        if op == "register" and result[0] == "ok":
            self.registrations += 1
        elif op in ("kline", "unkline") and result[0] == "ok":
            try:
                klines.save(self.klines_path, self.registry.klines)
            except OSError:
                log.exception("server bans not saved to %s", self.klines_path)
        if token:
            self._inbox(worker).append(("R", token, result))
            self._touched.add(worker)

    def _message(self, worker: int, item: tuple[Any, ...]) -> None:
        _, sid, target, is_channel, kind, tags_full, tags_time, body, msgid, ts = item
        reg = self.registry
        sender = reg.users.get(sid)
        if sender is not None:
            sender.last_active = self.now
        try:
            if is_channel:
                ch = reg.channels.get(target)
                if ch is None:
                    raise RemoteProtocolError(numerics.ERR_NOSUCHCHANNEL, target, text="No such channel")
                reg.check_send(sid, ch)
                out = ("D", target, sid, kind, tags_full, tags_time, body)
                for w in ch.workers:
                    self._inbox(w).append(out)
                    self._touched.add(w)
                if sid not in ch.members and worker not in ch.workers:
                    self._inbox(worker).append(out)  # the sender's echo
                    self._touched.add(worker)
                if ch.history and (kind != "T" or b";+" in tags_full):
                    self.store_row(ch.key, msgid, ts, kind, tags_full, body)
                    self._note_channel_row(ch.key)
            else:
                to = reg.nicks.get(target)
                user = reg.users.get(to) if to is not None else None
                if user is None or not user.registered:
                    raise RemoteProtocolError(numerics.ERR_NOSUCHNICK, target, text="No such nick/channel")
                out = ("U", to, sid, kind, tags_full, tags_time, body)
                self._inbox(user.worker).append(out)
                self._touched.add(user.worker)
                if user.worker != worker:
                    self._inbox(worker).append(out)  # the sender's echo
                    self._touched.add(worker)
                if kind != "T" or b";+" in tags_full:
                    key = dm_key(reg.identity(sender), reg.identity(user)) if sender is not None else None
                    if key is not None:
                        self.store_row(key, msgid, ts, kind, tags_full, body)
                if user.away is not None and kind == "P":
                    self._inbox(worker).append(("X", sid, numerics.RPL_AWAY, (user.nick,), user.away))
                    self._touched.add(worker)
        except RemoteProtocolError as exc:
            if kind != "N":  # NOTICE never gets an automatic reply
                self._inbox(worker).append(("X", sid, exc.numeric, exc.params, exc.text))
                self._touched.add(worker)
