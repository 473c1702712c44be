"""Cluster mode: several nodes, one network, one order, on one Redis stream.

Each node is a whole server (supervisor, acceptor, workers, manager). Its
manager serves a :class:`ClusterBus` instead of the local
:class:`~server.bus.local.bus.Bus`; the workers do not change. The cluster is a
replicated state machine with Redis as the sequencer:

* **One log, one order.** ``publish()`` does not apply a batch: it appends it
  (a pickled :class:`LogBatch`: the records, the node, the cluster-wide worker
  id, the origin's clock) to the stream :data:`STREAM` with one Lua call that
  first checks the log's epoch (so no entry of a lost log ever lands in a new
  one), and returns. One tailer thread per node reads the stream in order
  (``XREAD BLOCK``) and applies every entry exactly as the local bus applies a
  batch (:meth:`Bus.publish`, under the bus lock), with the entry's time as
  the clock. Every node's registry therefore goes through the same states in
  the same order: one order per channel (indeed one order for everything),
  nick claims decided by log order, modes, bans and kicks everywhere. Of what
  an entry produces, a node keeps only what is for its own workers.
* **One completion per token** still holds: the completion goes to the
  publishing worker when its own node applies the entry; a batch that cannot
  be appended (Redis unreachable) is completed at once, locally, with
  ``400 <command> :Cluster unavailable...`` (a NOTICE with a bare ``Done``).
* **Stored before shown**, per node: every node stores every row in log order
  in its own SQLite (the local bus's group commit, done by the committer thread
  so that the tailer keeps routing), so CHATHISTORY on any node
  returns the same rows in the same order. Row ids are each node's own; the
  order and the msgids are the same everywhere (a replayed row is ignored by
  its msgid).
* **Ids are cluster-wide.** A node's index comes from Redis by its name
  (``HSETNX`` on :data:`NODES`), worker ids are ``index * 1000 + local index``
  and session ids and tokens carry the index in their high bits
  (``Worker.new_sid``).
* **Nodes come and go through the log.** A starting node appends
  :class:`NodeUp` (its previous incarnation's clients are gone), loads the
  latest snapshot and applies the stream from there with deliveries off until
  it reaches that entry (a new node catches up the same way). Each node keeps
  a heartbeat key with a TTL (``node_timeout``); any node that finds another's
  key gone appends :class:`NodeDown` for that incarnation, and applying it
  drops the node's clients everywhere (QUITs, in one :class:`Netsplit` per
  worker; the nicks are free). A dead worker (:class:`WorkerDropped`) goes
  through the log too.
* **Snapshots keep the log short.** Every ``snapshot_every`` entries the
  lowest-numbered live node stores the registry's state after its last entry
  (:data:`SNAPSHOT`) and trims the stream below the oldest position any node
  reported (:data:`POSITIONS`). A new log starts from a seed snapshot (the
  first node's registered channels, K-lines and accounts), set in one script
  with the epoch.
* **Redis lost.** While Redis is unreachable the node keeps its clients,
  completes what needs the log with the error above, and the tailer retries
  with back-off. If the log is still there when Redis is back (same epoch),
  the node carries on where it was. If it is gone (a new epoch: Redis
  restarted without its data), each node resets its registry and re-announces
  its own clients and channels (:class:`WorkerRestored`, applied by
  :mod:`server.state.rebuild`: the first to connect keeps a clashing nick, the
  other becomes ``Guest<digits>``).

What a client sees in each case is in docs/cluster.md.
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import socket
import threading
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from server.bus.local.bus import Bus, _Job
from server.bus.records import (
    AccountSync,
    ChannelDelivery,
    ChannelImage,
    Delivered,
    Disconnect,
    Done,
    LogBatch,
    LogEntry,
    Netsplit,
    NodeDown,
    NodeUp,
    PrivateDelivery,
    Published,
    Quit,
    Reply,
    Request,
    Result,
    Send,
    SessionImage,
    Stamp,
    WorkerDropped,
    WorkerRestored,
)
from server.protocol import numerics
from server.state import rebuild
from server.state.registry import Registry

log = logging.getLogger(__name__)

STREAM = "chatroom:log"  # the one log
EPOCH = "chatroom:epoch"  # names the current log; a new value means the old log is gone
NODES = "chatroom:nodes"  # node name -> node index
NODE_SEQ = "chatroom:nodeseq"
HEARTBEAT = "chatroom:node:"  # + index: the node's incarnation, with a TTL of node_timeout
SNAPSHOT = "chatroom:snapshot"  # the state of every registry after one entry (then the log before it is trimmed)
POSITIONS = "chatroom:positions"  # node index -> "<last applied id> <unix time>"
# registry attributes that are wiring, not state (a snapshot leaves them out)
WIRING = frozenset({"emit", "persist_channel", "persist_marker", "persist_redaction", "history_mark", "clock",
                    "casemapping", "channel_len", "max_channels", "chantypes", "max_list"})
WORKER_SPAN = 1000  # cluster-wide worker id = node index * WORKER_SPAN + local index
MAX_NODES = 63  # session ids keep the node index in bits 56-61
EXIT_CLUSTER_ERROR = 5  # the manager's exit code when Redis refuses it or stays unreachable at start
MAX_PENDING = 5000  # own entries appended but not yet applied before publishers wait
COMMANDS = {"P": "PRIVMSG", "N": "NOTICE", "T": "TAGMSG"}
UNAVAILABLE = "Cluster unavailable (Redis cannot be reached); not done, try again"

# Append only into the log this node knows (KEYS[1] stream, KEYS[2] epoch key).
APPEND = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('EPOCH the log changed')
end
return redis.call('XADD', KEYS[1], '*', 'e', ARGV[2])
"""


# Start a new log (KEYS[1] epoch key, KEYS[2] snapshot key): the epoch and the
# state it starts from appear together, or not at all if another node was first.
SEED = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


class EpochChanged(Exception):
    """The log this node followed is gone."""


def _sid_order(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


class ClusterBus(Bus):
    """The bus of one node of a cluster (see the module docstring)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.node_name = str(settings.get("node_name") or socket.gethostname())
        self.node_timeout = float(settings.get("node_timeout", 10.0))
        self.heartbeat_interval = float(settings.get("heartbeat_interval", 1.0))
        self.snapshot_every = int(settings.get("snapshot_every", 100_000))
        self.since_snapshot = 0
        self.snapshots = 0
        self.node_index = 0
        self.replaying = True
        self.foreign = False
        super().__init__(settings)
        # The registry is a function of the log: nothing from this node's disk
        # (but what it had there seeds a new log, see _seed).
        self.disk_state = (self.registry.registered, self.registry.klines)
        self.registry.registered = {}
        self.registry.klines = []
        self.entry_time = time.time()
        self.clock = lambda: self.entry_time
        url = str(settings["cluster_url"])
        password = settings.get("cluster_password") or None

        def client(timeout: float) -> Any:  # redis.Redis (its stubs type replies loosely)
            # no silent retries: a reconnect must go through the epoch check
            return redis.Redis.from_url(url, password=password, socket_connect_timeout=2.0,
                                        socket_timeout=timeout, retry=Retry(NoBackoff(), 0))

        self.redis: Any = client(5.0)
        self.tail_redis: Any = client(5.0)
        self.append_script = self.redis.register_script(APPEND)
        self.seed_script = self.redis.register_script(SEED)
        self.available = False
        self.available_since = 0.0
        self.lost = False
        self.epoch = ""
        self.last_id = "0-0"
        self.incarnation = secrets.token_hex(8)
        self.incarnations: dict[int, str] = {}  # node index -> its current incarnation, as the log says
        self.names: dict[int, str] = {}
        self.down_sent: set[tuple[int, str]] = set()
        self.inflight: dict[int, tuple[int, Published]] = {}  # token -> (worker, item): appended, not applied
        self.owed: list[LogEntry] = []  # appended once Redis is back (a client that left, a dead worker)
        self.appended = 0
        self.applied_own = 0
        self.applied = 0
        self.cross_node = 0
        self.rtt = 0.0
        self.unavailable_count = 0
        self.epochs = 0
        self.pending_space = threading.Condition(self.lock)
        self.entry_handlers: dict[type, Any] = {
            LogBatch: self._apply_batch, NodeUp: self._apply_node_up, NodeDown: self._apply_node_down,
            WorkerDropped: self._apply_worker_dropped, WorkerRestored: self._apply_restored,
            AccountSync: self._apply_account,
        }
        self._join(bool(settings.get("resume")))
        self.tailer = threading.Thread(target=self.tail, name="cluster-tailer", daemon=True)
        self.tailer.start()
        threading.Thread(target=self.heartbeat, name="cluster-heartbeat", daemon=True).start()

    # -- joining the cluster ----------------------------------------------------
    def _join(self, resume: bool) -> None:
        """Get this node's index, join the current log, catch up (deliveries off)."""
        deadline = time.monotonic() + 30.0
        delay = 0.1
        while True:
            try:
                self.node_index = self._claim_index()
                if self.redis.get(EPOCH) is None:
                    with self.lock:
                        self.registry.registered, self.registry.klines = self.disk_state
                    self._seed()
                    with self.lock:
                        self.registry.registered, self.registry.klines = {}, []
                self.epoch = (self.redis.get(EPOCH) or b"").decode()
                break
            except (redis.AuthenticationError, redis.ResponseError) as exc:
                # a wrong password or ACL: no retry helps
                log.critical("cluster: Redis at %s refused this node: %s (check cluster_url and cluster_password)",
                             self._where(), exc)
                logging.shutdown()
                os._exit(EXIT_CLUSTER_ERROR)
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    log.critical("cluster: cannot reach Redis at %s: %s; stopping", self._where(), exc)
                    logging.shutdown()
                    os._exit(EXIT_CLUSTER_ERROR)
                log.warning("cluster: Redis at %s not reachable (%s); retrying", self._where(), exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        for _ in range(5):
            loaded = self._load_snapshot()
            self.redis.hset(POSITIONS, str(self.node_index), f"{self.last_id} {time.time()}")
            # (a newer snapshot may have trimmed the log past ours before we said where we start;
            # without a snapshot the log was never trimmed)
            first = self.redis.xrange(STREAM, count=1)
            if (not loaded or self.last_id == "0-0" or not first
                    or _sid_order(first[0][0].decode()) <= _sid_order(self.last_id)):
                break
        if resume:
            # A new manager of a running node: the log has our clients; catch
            # up to its end and keep our incarnation (taken from our last NodeUp).
            last = self.redis.xrevrange(STREAM, count=1)
            target = last[0][0].decode() if last else "0-0"
        else:
            self._beat()
            target = self._append(NodeUp(self.node_index, self.node_name, self.incarnation))
        while _sid_order(self.last_id) < _sid_order(target):
            self._read(block=None)
            self.redis.hset(POSITIONS, str(self.node_index), f"{self.last_id} {time.time()}")  # (don't trim it)
        with self.lock:
            self.replaying = False
        if resume and self.incarnations.get(self.node_index) != self.incarnation:
            # Declared down while this node had no manager: its clients are
            # gone from the log (restore() closes them); come back as a new run.
            self.incarnation = secrets.token_hex(8)
            self._beat()
            self._append(NodeUp(self.node_index, self.node_name, self.incarnation))
            while _sid_order(self.last_id) < _sid_order(self.redis.xrevrange(STREAM, count=1)[0][0].decode()):
                self._read(block=None)
        self.available = True
        self.available_since = time.monotonic()
        log.info("cluster: node %s is node %d of the log at %s (epoch %s, %d entries replayed)", self.node_name,
                 self.node_index, self._where(), self.epoch, self.applied)

    # -- snapshots: the log is trimmed, a new node starts from the state after one entry
    def _load_snapshot(self) -> bool:
        """Start from the latest snapshot of this log, if any (before reading it)."""
        raw = self.redis.get(SNAPSHOT)
        if raw is None:
            return False
        snap = pickle.loads(raw)
        if snap["epoch"] != self.epoch:
            return False
        state = pickle.loads(snap["state"])
        with self.lock:
            reg = self.registry
            for name, value in state["registry"].items():
                setattr(reg, name, value)
            self.incarnations = state["incarnations"]
            self.names = state["names"]
            self.restored = state["restored"]
            self.last_id = snap["id"]
            if self.settings.get("resume"):
                self.incarnation = self.incarnations.get(self.node_index, self.incarnation)
        store = self.store
        with store.lock:
            store.conn.executemany(
                "INSERT INTO accounts (fold, name, password, email, created) VALUES (?,?,?,?,?) "
                "ON CONFLICT(fold) DO UPDATE SET name=excluded.name, password=excluded.password, "
                "email=excluded.email", snap["accounts"])
        self.store.commit([], list(reg.registered.items()))
        log.info("cluster: started from the snapshot after entry %s (%d users, %d channels)", snap["id"],
                 len(reg.users), len(reg.channels))
        return True

    def _snapshot(self) -> None:
        """Every ``snapshot_every`` entries, the lowest-numbered live node stores
        the state after the last entry it applied and trims the log before the
        oldest position any node still reads from."""
        self.since_snapshot = 0
        if self.replaying or min(self.incarnations, default=self.node_index) != self.node_index:
            return
        data = self._snapshot_bytes(self.epoch, self.last_id)
        self.redis.set(SNAPSHOT, data)
        # Trim below the oldest position of a node that reported lately (a
        # node that was away longer starts again from the snapshot).
        now = time.time()
        oldest = self.last_id
        for raw in self.redis.hvals(POSITIONS):
            pos, _, at = raw.decode().partition(" ")
            if now - float(at or 0) < 3 * self.node_timeout and _sid_order(pos) < _sid_order(oldest):
                oldest = pos
        trimmed = self.redis.xtrim(STREAM, minid=oldest, approximate=False)
        self.snapshots += 1
        log.info("cluster: snapshot after entry %s (%d bytes); %d entries trimmed", self.last_id, len(data), trimmed)

    def _snapshot_bytes(self, epoch: str, eid: str) -> bytes:
        """The registry's state (after entry ``eid``) and the account table."""
        with self.lock:  # (the tailer applies nothing meanwhile)
            reg = self.registry
            state = pickle.dumps({"registry": {name: value for name, value in vars(reg).items()
                                               if name not in WIRING and not callable(value)},
                                  "incarnations": self.incarnations, "names": self.names,
                                  "restored": self.restored}, protocol=5)
        store = self.store
        with store.lock:
            accounts = store.conn.execute("SELECT fold, name, password, email, created FROM accounts").fetchall()
        return pickle.dumps({"epoch": epoch, "id": eid, "state": state, "accounts": accounts}, protocol=5)

    def _seed(self) -> bool:
        """Start a new log from this node's fresh registry (no users: its
        registered channels, K-lines and accounts), unless another node already
        started one."""
        epoch = secrets.token_hex(8)
        data = self._snapshot_bytes(epoch, "0-0")
        return bool(self.seed_script(keys=[EPOCH, SNAPSHOT], args=[epoch, data]))

    def _claim_index(self) -> int:
        got = self.redis.hget(NODES, self.node_name)
        if got is None:
            self.redis.hsetnx(NODES, self.node_name, int(self.redis.incr(NODE_SEQ)))
            got = self.redis.hget(NODES, self.node_name)
        index = int(got or 0)
        if not 1 <= index <= MAX_NODES:
            raise RuntimeError(f"cluster: node index {index} out of 1..{MAX_NODES} (reset {NODES} in Redis)")
        return index

    def _where(self) -> str:
        kw = self.redis.connection_pool.connection_kwargs
        return f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}"

    def gid(self, worker: int) -> int:
        """The cluster-wide id of this node's worker ``worker``."""
        return self.node_index * WORKER_SPAN + worker

    # -- the log ------------------------------------------------------------------
    def _append(self, entry: LogEntry) -> str:
        """Append one entry to the current log (raises RedisError, EpochChanged)."""
        data = pickle.dumps(entry, protocol=5)
        started = time.perf_counter()
        try:
            eid = self.append_script(keys=[STREAM, EPOCH], args=[self.epoch, data])
        except redis.ResponseError as exc:
            if str(exc).startswith("EPOCH"):
                self.available = False
                self.lost = True
                raise EpochChanged() from None
            raise
        self.rtt = time.perf_counter() - started
        return eid.decode() if isinstance(eid, bytes) else str(eid)

    def _read(self, block: int | None) -> None:
        resp = self.tail_redis.xread({STREAM: self.last_id}, count=1000, block=block)
        for _stream, entries in resp or ():
            for eid, fields in entries:
                self.last_id = eid.decode()
                self.applied += 1
                self.since_snapshot += 1
                try:
                    entry = pickle.loads(fields[b"e"])
                    self.entry_handlers[type(entry)](entry)
                except Exception:
                    log.exception("cluster: entry %s failed", self.last_id)

    def tail(self) -> None:
        """Apply the log in order; on a lost connection, retry with back-off."""
        delay = 0.1
        while True:
            try:
                if not self.available:
                    self._reconnect()
                    delay = 0.1
                self._read(block=1000)
                if self.since_snapshot >= self.snapshot_every:
                    self._snapshot()
            except (redis.RedisError, EpochChanged) as exc:
                self._unavailable(exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _unavailable(self, exc: BaseException) -> None:
        if self.available:
            log.warning("cluster: Redis at %s unreachable (%s): commands that need the log fail until it is back",
                        self._where(), exc or type(exc).__name__)
            self.unavailable_count += 1
        self.available = False

    def _reconnect(self) -> None:
        """Redis answers again: same log, carry on; a new one, re-announce."""
        started = time.perf_counter()
        self.redis.ping()
        self.rtt = time.perf_counter() - started
        epoch = self.redis.get(EPOCH)
        if self.lost or epoch is None or epoch.decode() != self.epoch:
            self._rebuild_log()
        self._beat()
        self.available_since = time.monotonic()
        self.available = True
        owed, self.owed = self.owed, []
        for entry in owed:
            self._append(entry)
        log.warning("cluster: Redis at %s reachable again (epoch %s)", self._where(), self.epoch)

    def _rebuild_log(self) -> None:
        """The log is gone: reset the registry and re-announce our own clients."""
        with self.lock:
            # who left while Redis was away is not re-announced (their leaving was owed to the old log)
            left = {e.batch[0].sid for e in self.owed if isinstance(e, LogBatch) and e.batch
                    and isinstance(e.batch[0], Request)}
            dead = {e.worker for e in self.owed if isinstance(e, WorkerDropped)}
            images = self._images(left, dead)
            failed = self._fail_inflight("Cluster log lost (Redis restarted); not done, try again")
            self.registry = self._fresh_registry()
            self.incarnations = {}
            self.restored = {}
            self.down_sent = set()
            self.last_id = "0-0"
            self.owed = []
        self._seed()
        self.epoch = (self.redis.get(EPOCH) or b"").decode()
        self._load_snapshot()  # the new log's start: whoever seeded it first
        self.lost = False
        self.epochs += 1
        log.warning("cluster: the log was lost (Redis restarted without its data): re-announcing %d clients of "
                    "this node in a new log (epoch %s); %d commands in flight failed",
                    sum(len(u) for u, _ in images.values()), self.epoch, failed)
        self._beat()
        self._append(NodeUp(self.node_index, self.node_name, self.incarnation))
        now = time.time()
        for worker, (users, channels) in images.items():
            self._append(WorkerRestored(worker, now, tuple(users), tuple(channels)))

    def _fresh_registry(self) -> Registry:
        old = self.registry
        s = self.settings
        reg = Registry(self._emit, casemapping=s.get("casemapping", "rfc1459"),
                       channel_len=int(s.get("channel_len", 64)), max_channels=int(s.get("max_channels", 0)),
                       max_list=int(s.get("max_list", 100)))
        # kept as this node knew them: the same on every node unless a change was in flight
        reg.accounts = old.accounts
        reg.registered = old.registered
        reg.klines = old.klines
        reg.persist_channel = old.persist_channel
        reg.history_mark = old.history_mark
        return reg

    def _images(self, left: set[int], dead: set[int]) -> dict[int, tuple[list[SessionImage], list[ChannelImage]]]:
        """This node's registered clients and their channels, per worker, but
        those in ``left`` and the workers in ``dead`` (lock held)."""
        reg = self.registry
        out: dict[int, tuple[list[SessionImage], list[ChannelImage]]] = {}
        for u in reg.users.values():
            if (u.worker // WORKER_SPAN == self.node_index and u.registered and u.sid not in left
                    and u.worker not in dead):
                out.setdefault(u.worker, ([], []))[0].append(SessionImage(
                    u.sid, u.nick, u.user, u.realname, u.ip, u.host, u.tls, u.account, u.away,
                    "".join(sorted(u.modes)), u.signon))
        for ch in reg.channels.values():
            state = rebuild.state_of(ch, (self.entry_time, 1))
            for worker, (_users, channels) in out.items():
                members = tuple((sid, m) for sid, m in ch.members.items()
                                if reg.users[sid].worker == worker and sid not in left)
                if members:
                    channels.append(ChannelImage(ch.key, ch.name, state, members))
        return out

    def heartbeat(self) -> None:
        """Keep this node's key alive; declare dead the nodes whose key is gone."""
        while True:
            time.sleep(self.heartbeat_interval)
            if not self.available:
                continue
            try:
                self._beat()
                epoch = self.redis.get(EPOCH)
                if epoch is None or epoch.decode() != self.epoch:
                    self.lost = True
                    self._unavailable(EpochChanged("the log changed"))
                    continue
                last_id = self.last_id
                self.redis.hset(POSITIONS, str(self.node_index), f"{last_id} {time.time()}")
                first = self.redis.xrange(STREAM, count=1)
                if first and _sid_order(first[0][0].decode()) > _sid_order(last_id) != (0, 0):
                    # The log was trimmed past what this node applied (it was
                    # away too long): a new manager starts from the snapshot.
                    log.critical("cluster: the log was trimmed past entry %s, the last this node applied: "
                                 "restarting the manager from the snapshot", last_id)
                    logging.shutdown()
                    os._exit(1)
                # Only a node that has itself been connected for a whole
                # node_timeout judges others (after an outage, everyone's key
                # may have expired; give them the time to beat again).
                if time.monotonic() - self.available_since < self.node_timeout:
                    continue
                others = [(n, inc) for n, inc in list(self.incarnations.items()) if n != self.node_index]
                if not others:
                    continue
                beats = self.redis.mget([f"{HEARTBEAT}{n}" for n, _ in others])
                for (n, inc), beat in zip(others, beats, strict=True):
                    if (beat is None or beat.decode() != inc) and (n, inc) not in self.down_sent:
                        self.down_sent.add((n, inc))
                        log.warning("cluster: node %s (%d) stopped heartbeating: declaring it down",
                                    self.names.get(n, "?"), n)
                        self._append(NodeDown(n, inc, f"{self.node_name} {self.names.get(n, n)}"))  # netsplit-style
            except (redis.RedisError, EpochChanged) as exc:
                self._unavailable(exc)
            except Exception:
                log.exception("cluster: heartbeat failed")

    def _beat(self) -> None:
        started = time.perf_counter()
        self.redis.set(f"{HEARTBEAT}{self.node_index}", self.incarnation, px=int(self.node_timeout * 1000))
        self.rtt = time.perf_counter() - started

    # -- applying entries (tailer thread) -------------------------------------------
    def _apply_batch(self, e: LogBatch) -> None:
        own = e.node == self.node_index
        if own:
            with self.lock:
                for item in e.batch:
                    if not isinstance(item, Stamp) and item.token:
                        self.inflight.pop(item.token, None)
                self.applied_own += 1
                self.pending_space.notify_all()
        self.entry_time = e.time
        self.foreign = not own
        try:
            Bus.publish(self, e.worker, list(e.batch))
        finally:
            self.foreign = False

    def _apply_node_up(self, e: NodeUp) -> None:
        with self.lock:
            self.incarnations[e.node] = e.incarnation
            self.names[e.node] = e.name
            if e.node == self.node_index and bool(self.settings.get("resume")) and self.replaying:
                self.incarnation = e.incarnation  # a new manager of a running node keeps its run's name
            n = self._drop_node(e.node, "Node restarted")
            self._queue(self.job)
            self.queued.notify()
        if n:
            log.info("cluster: node %s restarted: %d clients of its last run dropped", e.name, n)

    def _apply_node_down(self, e: NodeDown) -> None:
        with self.lock:
            if self.incarnations.get(e.node) != e.incarnation:
                return  # already down, or restarted since
            del self.incarnations[e.node]
            mine = e.node == self.node_index
            gone = [(u.worker, u.sid) for u in self.registry.users.values() if u.worker // WORKER_SPAN == e.node]
            n = self._drop_node(e.node, e.reason)
            self._netsplit(e, {sid for _, sid in gone})
            if mine and not self.replaying:
                # Declared dead by the others (this node could not beat in
                # time): its clients are gone everywhere, so close them.
                for w, sid in gone:
                    self.job.box(w).append(Disconnect(sid, "Node declared down; please reconnect"))
            self._queue(self.job)
            self.queued.notify()
        log.warning("cluster: node %s (%d) down: %d clients dropped", self.names.get(e.node, "?"), e.node, n)
        if mine and not self.replaying:
            self.incarnation = secrets.token_hex(8)
            try:
                self._beat()
                self._append(NodeUp(self.node_index, self.node_name, self.incarnation))
            except (redis.RedisError, EpochChanged) as exc:
                self._unavailable(exc)

    def _netsplit(self, e: NodeDown, sids: set[int]) -> None:
        """The QUITs a dead node's users caused, for each local worker, as one
        :class:`Netsplit` where the first of them was (lock held)."""
        servers = [*e.reason.split(" ", 1), ""][:2]
        for w, box in self.job.out.items():
            if w // WORKER_SPAN != self.node_index:
                continue
            quits = [d for d in box if type(d) is Quit and d.sid in sids]
            if not quits:
                continue
            first = next(i for i, d in enumerate(box) if type(d) is Quit and d.sid in sids)
            rest = [d for d in box if not (type(d) is Quit and d.sid in sids)]
            rest.insert(first, Netsplit((servers[0], servers[1]), tuple(quits)))
            box[:] = rest

    def _drop_node(self, node: int, reason: str) -> int:
        workers = {u.worker for u in self.registry.users.values() if u.worker // WORKER_SPAN == node}
        return sum(self.registry.drop_worker(w, reason) for w in sorted(workers))

    def _account(self, fold: str) -> AccountSync:
        """An account as this node's database has it (a worker just wrote it)."""
        store = self.store
        with store.lock:
            row = store.conn.execute("SELECT name, password, email FROM accounts WHERE fold=?", (fold,)).fetchone()
        return AccountSync(self.node_index, fold, (row[0], row[1], row[2]) if row else None)

    def _apply_account(self, e: AccountSync) -> None:
        """Another node's account write, into this node's database."""
        if e.node == self.node_index:
            return
        store = self.store
        with store.lock:
            if e.record is None:
                store.conn.execute("DELETE FROM accounts WHERE fold=?", (e.fold,))
                store.conn.execute("DELETE FROM channel_access WHERE account=?", (e.fold,))
            else:
                name, password, email = e.record
                store.conn.execute(
                    "INSERT INTO accounts (fold, name, password, email, created) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(fold) DO UPDATE SET name=excluded.name, password=excluded.password, "
                    "email=excluded.email", (e.fold, name, password, email, self.entry_time))

    def _apply_worker_dropped(self, e: WorkerDropped) -> None:
        with self.lock:
            self.registry.drop_worker(e.worker, e.reason)
            self._queue(self.job)
            self.queued.notify()

    def _apply_restored(self, e: WorkerRestored) -> None:
        with self.lock:
            self.entry_time = e.time
            n = rebuild.restore(self.registry, e.worker, list(e.users), list(e.channels), self.restored, e.time)
            self._queue(self.job)
            self.queued.notify()
        log.info("cluster: worker %d re-announced %d clients in %d channels", e.worker, n, len(e.channels))

    def take_jobs(self) -> list[_Job]:
        """The tailer does not commit inline (the local bus's publishers do):
        it hands the queued jobs to the committer thread and goes on applying
        the log, so one slow commit does not hold up the routing of the next
        entries (the jobs are still released in order, after their commit)."""
        if threading.current_thread() is getattr(self, "tailer", None):
            if self.queue:
                self.queued.notify()
            return []
        return super().take_jobs()

    def _queue(self, job: _Job) -> None:
        """Keep only what is for this node's workers (nothing while catching up)."""
        me = self.node_index
        for w in list(job.out):
            if self.replaying or w // WORKER_SPAN != me:
                del job.out[w]
            elif self.foreign:
                self.cross_node += sum(type(d) in (ChannelDelivery, PrivateDelivery) for d in job.out[w])
        super()._queue(job)

    # -- what the workers and the supervisor call ---------------------------------------
    def publish(self, worker: int, batch: list[Published]) -> int:
        """Append the batch to the log (applied when the tailer reads it back)."""
        gid = self.gid(worker)
        batch = [self._globalize(item, gid) for item in batch]
        entry = LogBatch(self.node_index, gid, time.time(), tuple(batch))
        with self.lock:
            for item in batch:
                if not isinstance(item, Stamp) and item.token:
                    self.inflight[item.token] = (gid, item)
        try:
            if not self.available:
                raise redis.ConnectionError("not connected")
            for item in batch:
                if type(item) is Request and item.op in ("account_created", "account_dropped"):
                    self._append(self._account(str(item.args[0])))
            self._append(entry)
            self.appended += 1
        except (redis.RedisError, EpochChanged) as exc:
            self._unavailable(exc)
            with self.lock:
                for item in batch:
                    if isinstance(item, Stamp):
                        continue
                    if type(item) is Request and item.op == "disconnect":
                        # The client is gone whatever happens (QUIT must work):
                        # done here, and the log is told when Redis is back.
                        self.owed.append(LogBatch(self.node_index, gid, time.time(),
                                                  (Request(item.sid, 0, "disconnect", item.args),)))
                        if item.token:
                            self.inflight.pop(item.token, None)
                            self._inbox(gid).append(Result(item.token, "ok", None))
                            self.ready[gid].notify()
                    elif item.token:
                        self.inflight.pop(item.token, None)
                        self._fail(gid, item, UNAVAILABLE)
            return 0
        with self.lock:
            deadline = time.monotonic() + 5.0
            while self.appended - self.applied_own > MAX_PENDING and time.monotonic() < deadline:
                self.pending_space.wait(0.1)
            return len(self.inboxes.get(gid, ()))

    @staticmethod
    def _globalize(item: Published, gid: int) -> Published:
        """A ``connect`` names its worker by local index: make it cluster-wide."""
        if type(item) is Request and item.op == "connect":
            return item._replace(args=(item.args[0], gid, *item.args[2:]))
        return item

    def _fail(self, gid: int, item: Published, text: str) -> None:
        """Complete an item that never reached the log (lock held)."""
        box = self._inbox(gid)
        record: Delivered
        if type(item) is Send:
            record = (Done(item.sid, item.token) if item.kind == "N" else
                      Reply(item.sid, numerics.ERR_UNKNOWNERROR, (COMMANDS.get(item.kind, "PRIVMSG"),), text,
                            item.token))
        elif type(item) is Request:
            record = Result(item.token, "err", (numerics.ERR_UNKNOWNERROR, (item.op.upper(),), text))
        else:
            return
        box.append(record)
        self.ready[gid].notify()

    def _fail_inflight(self, text: str) -> int:
        """Complete every item appended to a log that is gone (lock held)."""
        n = len(self.inflight)
        for gid, item in self.inflight.values():
            self._fail(gid, item, text)
        self.inflight.clear()
        return n

    def fetch(self, worker: int, timeout: float = 1.0) -> list[Delivered]:
        return super().fetch(self.gid(worker), timeout)

    def drop_worker(self, worker: int, reason: str = "Connection closed") -> int:
        """A local worker died: forget what waits for it now; its clients leave
        through the log."""
        gid = self.gid(worker)
        entry = WorkerDropped(gid, reason)
        with self.lock:
            self.generations[gid] = self.generations.get(gid, 0) + 1
            self.inboxes[gid] = []
            self.space.notify_all()
            n = sum(1 for u in self.registry.users.values() if u.worker == gid)
        try:
            if not self.available:
                raise redis.ConnectionError("not connected")
            self._append(entry)
        except (redis.RedisError, EpochChanged) as exc:
            self._unavailable(exc)
            self.owed.append(entry)
        return n

    def restore(self, worker: int, users: list[SessionImage], channels: list[ChannelImage]) -> int:
        """A new manager of a running node: the log already holds the worker's
        clients (replayed at start), so there is nothing to add; a client the
        log no longer has (the node was declared down meanwhile) is closed."""
        gid = self.gid(worker)
        with self.lock:
            known = {u.sid for u in self.registry.users.values() if u.worker == gid}
            box = self._inbox(gid)
            for im in users:
                if im.sid not in known:
                    box.append(Disconnect(im.sid, "Node declared down; please reconnect"))
            self.ready[gid].notify()
            return len(known)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        with self.lock:
            out["depth"] = {w % WORKER_SPAN: d for w, d in out["depth"].items() if w // WORKER_SPAN == self.node_index}
            out.update({
                "node_index": self.node_index,
                "cluster_available": self.available,
                "cluster_rtt": self.rtt,
                "cluster_cross_node": self.cross_node,
                "cluster_pending": max(0, self.appended - self.applied_own),
                "cluster_applied": self.applied,
                "cluster_nodes": len(self.incarnations),
                "cluster_outages": self.unavailable_count,
                "cluster_epochs": self.epochs,
                "cluster_snapshots": self.snapshots,
            })
        return out
