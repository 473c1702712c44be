"""A worker process: a thread per client, one publisher, one subscriber.

The acceptor hands it sockets over a ``SOCK_SEQPACKET`` socketpair; each one
becomes a :class:`~server.process.session.Session` served by its own thread
(:func:`~server.process.session.handle_client`). Only the publisher and subscriber
threads hold Manager proxies.

Threads, and what each owns:

* main: receives fds, starts client threads, handles signals;
* publisher: batches what clients send into one ``bus.publish()`` call;
* subscriber: ``bus.fetch()``; keeps the local replica (which local client is in
  which channel) and delivers: one write per client per batch;
* writer (:mod:`server.process.sendq`): flushes SendQs of clients whose socket was full;
* timer: registration timeout, PING on idle, ping timeout, heartbeat.

**When the manager dies** the bus threads do not exit: the subscriber parks,
and the publisher runs :meth:`Worker.recover`. It takes what clients queued
meanwhile off the queue, fails every item the old manager never completed
(a request's waiter gets ``400`` "try again", a message's sender a ``400``
saying it may not have been delivered: it is never re-published, since
another worker may already have shown it, and a second copy would be a
duplicate), reconnects to the new manager at the same address, re-registers
its registered clients and their channels (``Bus.restore``; clients still
registering are closed with an ERROR asking them to reconnect), then
publishes the queued items and lets the subscriber fetch again. Nothing a
client saw is lost from history: the old manager committed it before
delivering it.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from server.bus.local.manager import BusProxy, connect_bus, successor
from server.bus.records import (
    AccountChanged,
    AwayChanged,
    Begin,
    ChannelDelivery,
    ChannelImage,
    ChannelState,
    Delivered,
    Disconnect,
    Done,
    Invited,
    InviteNotice,
    Joined,
    Kicked,
    MemberModes,
    ModeChanged,
    MonitorChange,
    MonitorStatus,
    Netsplit,
    NickChanged,
    Parted,
    PrivateDelivery,
    Published,
    Quit,
    ReadMarker,
    RealnameChanged,
    Redacted,
    Reply,
    Result,
    Send,
    SessionImage,
    Stamp,
    TopicChanged,
    Wallops,
)
from server.irc.accounts import enforce_protection
from server.irc.commands import batch_ref
from server.irc.messaging import some_tags
from server.ops import cloak as cloak_mod
from server.ops import config as config_mod
from server.ops import resources
from server.ops import tls as tls_mod
from server.ops.config import Config, in_networks
from server.ops.logs import setup_logging
from server.ops.metrics import MESSAGE_KINDS, WorkerStats, exchange
from server.process.lifeline import die_with_parent, orphaned
from server.process.sendq import Writer
from server.process.session import ConnectionGone, Pending, Session, Unit, add_tag, handle_client
from server.process.threads import ClientThreads
from server.process.websocket import WebSocketState
from server.protocol import Message, RemoteProtocolError, error_reply, escape_tag_value, numerics
from server.state.store import Store

log = logging.getLogger(__name__)

BOOT_ERROR = 3
RECONNECT_TIMEOUT = 20.0  # seconds to wait for a new manager before giving up (exit 1)
LOST = "The server restarted its core; try again"
UNCONFIRMED = ("Message not confirmed: the server restarted its core while sending it "
               "(it may not have been delivered; CHATHISTORY shows what was)")
# extended-monitor: the cap a watcher needs for each kind of change
MONITOR_CAPS = {"AWAY": "away-notify", "ACCOUNT": "account-notify", "SETNAME": "setname"}
Put = Callable[[Session, bytes], None]


class Worker:
    def __init__(self, index: int, config: Config, argv: list[str], bus_address: Any, authkey: bytes,
                 handoff: socket.socket, heartbeat: Any, stats_sock: socket.socket | None = None) -> None:
        self.index = index
        self.config = config
        self.argv = argv
        self.bus_address = bus_address
        self.authkey = authkey
        self.handoff = handoff
        self.heartbeat = heartbeat
        self.sessions: dict[int, Session] = {}
        self.pending: dict[int, Pending] = {}  # request token -> who waits for the result
        self.sending: dict[int, Unit] = {}  # message token -> the command it belongs to
        self.outq: queue.SimpleQueue[Published] = queue.SimpleQueue()
        self.outq_room = threading.Condition()  # client threads wait here while the publisher is behind
        self.outq_waiting = 0
        # local replica: channel key -> {sid: Session} for local members, and names
        self.channels: dict[str, dict[int, Session]] = {}
        self.channel_names: dict[str, str] = {}
        # ... and what a new manager would need of those channels (Bus.restore)
        self.chanstate: dict[str, ChannelState] = {}
        self.member_modes: dict[str, dict[int, str]] = {}
        # manager loss and recovery (see the module docstring)
        self.bus_lost = threading.Event()
        self.subscriber_parked = threading.Event()
        self.bus_gen = 0
        self.bus_back = threading.Condition()
        self.failed: set[int] = set()  # tokens failed at a loss: their items are not published
        self.recoveries = 0
        self.writer = Writer()
        self.threads = ClientThreads(config.thread_keep)
        self.running = True
        self.publishing = False
        self._store: Store | None = None
        # the node index (cluster mode, else 0) and the pid: unique across processes and nodes
        self._sid_base = ((config.node_index & 0x3F) << 56) | (os.getpid() & 0xFFFFFF) << 32
        self._sid_next = 0
        self._sid_lock = threading.Lock()
        self.msgid_prefix = secrets.token_hex(3) + f"{index:x}"
        self._flood_exempt = config.networks("flood_exempt")
        self.cloak_key = cloak_mod.load_key(config)
        self._cloak_exempt = config.networks("cloak_exempt")
        self.tls_context = tls_mod.context_from(config)  # rebuilt on SIGHUP; sessions keep theirs
        self._ws_proxies = config.networks("websocket_proxies")
        self.deliveries = 0
        self.event_deliveries = 0
        # observability (server/metrics.py): plain counters, a snapshot channel to
        # the supervisor, and the supervisor's latest resource report for STATS
        self.stats = WorkerStats()
        self.stats_sock = stats_sock
        self.report: dict[str, Any] | None = None
        # the subscriber's table: state event type -> handler
        self.handlers: dict[type, Callable[[Any, Put], int]] = {
            Joined: self.on_joined, Parted: self.on_parted, Quit: self.on_quit, NickChanged: self.on_nick,
            TopicChanged: self.on_topic, ModeChanged: self.on_mode, Kicked: self.on_kicked,
            Invited: self.on_invited, InviteNotice: self.on_invite_notice, AwayChanged: self.on_away,
            RealnameChanged: self.on_realname, AccountChanged: self.on_account, Disconnect: self.on_disconnect,
            Wallops: self.on_wallops, ChannelState: self.on_channel_state, MemberModes: self.on_member_modes,
            MonitorStatus: self.on_monitor_status, MonitorChange: self.on_monitor_change,
            ReadMarker: self.on_read_marker, Redacted: self.on_redacted,
            Netsplit: self.on_netsplit,
        }

    # -- helpers for sessions -------------------------------------------------
    def cloak(self, ip: str) -> str:
        """The host other users see for ``ip`` (server/cloak.py)."""
        if not self.config.cloak or in_networks(ip, self._cloak_exempt):
            return ip
        return cloak_mod.cloak(ip, self.cloak_key)

    def is_flood_exempt(self, ip: str) -> bool:
        return in_networks(ip, self._flood_exempt)

    def publish(self, item: Published) -> None:
        self.outq.put(item)

    def wait_for_publisher(self) -> None:
        """Backpressure, for a client thread about to read more of its client's
        input: while the publisher is more than ``bus_batch`` items behind, stop
        reading (the socket fills up and TCP slows the client down) until the
        queue is down to half of that.

        Under overload this keeps hundreds of client threads from taking the
        GIL from the publisher and the subscriber, the two threads that drain
        the work: without it, the queue grew without bound while they starved
        and deliveries fell to a tenth of the saturation rate."""
        limit = self.config.bus_batch // 2
        with self.outq_room:
            self.outq_waiting += 1
            try:
                while self.outq.qsize() > limit and self.running and not self.bus_lost.is_set():
                    self.outq_room.wait(1.0)  # (the publisher wakes it; the timeout only covers a shutdown)
            finally:
                self.outq_waiting -= 1

    def get_store(self) -> Store:
        """This worker's connection to the database (opened on first use)."""
        if self._store is None:
            with self._sid_lock:
                if self._store is None:
                    self._store = Store(self.config.data_dir)
        return self._store

    def new_sid(self) -> int:
        """A number no other process hands out: a session id or a bus token."""
        with self._sid_lock:
            self._sid_next += 1
            return self._sid_base | self._sid_next

    new_token = new_sid

    def end_session(self, session: Session, reason: str) -> None:
        """Last act of a client thread: forget the client everywhere."""
        session.closing = session.closing or reason
        if not session.forgotten:
            # Forget the client before its socket closes: once a client sees its
            # connection end, its nick is free again (as after QUIT).
            session.forgotten = True
            if self.running:
                try:
                    session.request("disconnect", session.sid, reason, timeout=5.0)
                except (ConnectionGone, RemoteProtocolError):
                    pass
            else:
                session.notify("disconnect", session.sid, reason)
        session.out.close()
        try:
            session.sock.close()
        except OSError:
            pass
        self.sessions.pop(session.sid, None)
        self.stats.count_disconnect(session.closing)
        # a QUIT's text is the user's words: not logged
        log.info("client %s:%s (%s) left: %s", session.ip, session.port, session.nick,
                 "Quit" if reason.startswith("Quit:") else reason)
        try:
            self.handoff.send(b"C" + session.peer_ip.encode())
        except OSError:
            pass

    # -- threads --------------------------------------------------------------
    def publisher(self) -> None:
        bus = connect_bus(self.bus_address, self.authkey)
        limit = self.config.bus_batch
        counts = self.stats.messages_in
        observe = self.stats.batch_size.observe
        get = self.outq.get
        get_nowait = self.outq.get_nowait
        last = 0.0
        while self.running:
            if self.bus_lost.is_set():
                bus = self.recover()
                continue
            try:
                first = get(timeout=0.1)  # short: a lost manager is noticed here too
            except queue.Empty:
                continue
            # what clients send meanwhile rides in the same batch (one round trip, one pickle)
            last = self._linger(last)
            batch = [first]
            self.publishing = True
            try:
                while len(batch) < limit:
                    batch.append(get_nowait())
            except queue.Empty:
                pass
            if self.outq_waiting:  # room again for the client threads held back (wait_for_publisher)
                with self.outq_room:
                    self.outq_room.notify_all()
            if self.failed:
                batch = self.unfailed(batch)
            for item in batch:
                if type(item) is Send:
                    counts[item.kind] += 1
            observe(len(batch))
            batch.append(Stamp(time.time()))  # the bus hands it on: latency, seen by subscribers
            try:
                bus.publish(self.index, batch)
            except (EOFError, OSError):
                # its items' completions never come: recover() fails them
                self.lost_manager("publisher")
            except Exception:
                log.exception("publisher: a batch of %d items failed", len(batch))
            finally:
                self.publishing = False

    def _linger(self, last: float) -> float:
        """Pace a bus thread to at most one call per ``bus_linger``: sleep off what
        is left of it since ``last`` (under load only); return the new ``last``."""
        wait = last + self.config.bus_linger - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return time.monotonic()

    def lost_manager(self, thread: str) -> None:
        """The bus is gone: the publisher will recover (module docstring)."""
        if self.running and not self.bus_lost.is_set():
            log.warning("worker %d: %s lost the manager", self.index, thread)
        self.bus_lost.set()

    def subscriber(self) -> None:
        bus: BusProxy = connect_bus(self.bus_address, self.authkey)
        last = 0.0
        while self.running:
            if self.bus_lost.is_set():
                bus = self.park()
                continue
            # a batch then holds several lines for each client, sent in one write
            last = self._linger(last)
            try:
                batch = bus.fetch(self.index, 0.5)
            except (EOFError, OSError):
                self.lost_manager("subscriber")
                continue
            except Exception:
                log.exception("subscriber: fetch failed")
                continue
            if batch:
                try:
                    self.deliver(batch)
                except Exception:
                    log.exception("subscriber: delivery failed")

    # -- manager loss --------------------------------------------------------
    def park(self) -> BusProxy:
        """Subscriber: hold still (the replica is read) until the publisher has
        re-registered everything, then connect to the new manager."""
        gen = self.bus_gen
        self.subscriber_parked.set()
        with self.bus_back:
            while self.bus_gen == gen and self.running:
                self.bus_back.wait(0.5)
        self.subscriber_parked.clear()
        return self.reconnect()

    def recover(self) -> BusProxy:
        """Publisher: fail what the old manager never completed, reconnect,
        re-register this worker's clients and channels, then publish what
        clients queued meanwhile (module docstring)."""
        started = time.monotonic()
        self.subscriber_parked.wait(5.0)  # it has delivered all it fetched
        held: list[Published] = []
        try:
            while True:
                held.append(self.outq.get_nowait())
        except queue.Empty:
            pass
        queued = {item.token for item in held if type(item) is not Stamp and item.token}  # type: ignore[union-attr]
        self.failed = set()  # what the previous recovery failed has come by or never will
        failed = self.fail_unconfirmed(queued)
        bus = self.reconnect()
        users, channels, closing = self.snapshot()
        try:
            restored = bus.restore(self.index, users, channels)
        except (EOFError, OSError):
            log.warning("worker %d: the new manager went away during the restore", self.index)
            for item in reversed(held):  # back in front, in order, for the next attempt
                self.outq.put(item)
            return bus
        for s in closing:
            s.close("Server restarted its core during your registration; please reconnect")
        self.bus_lost.clear()
        with self.bus_back:
            self.bus_gen += 1
            self.bus_back.notify_all()
        held = self.unfailed(held)
        for i in range(0, len(held), self.config.bus_batch):
            try:
                bus.publish(self.index, held[i:i + self.config.bus_batch])
            except (EOFError, OSError):
                self.lost_manager("publisher")
                break
        self.recoveries += 1
        log.info("worker %d: re-registered %d clients and %d channels with the new manager in %.3f s "
                 "(%d unconfirmed items failed, %d clients still registering closed)",
                 self.index, restored, len(channels), time.monotonic() - started, failed, len(closing))
        return bus

    def reconnect(self) -> BusProxy:
        """A proxy to the manager at the bus address, waiting for it to come back."""
        deadline = time.monotonic() + RECONNECT_TIMEOUT
        while True:
            # the current address (the other bus thread may have moved on), then its successors
            for n in range(4):
                address = successor(self.bus_address, n)
                try:
                    bus = connect_bus(address, self.authkey)
                except (OSError, EOFError):
                    continue
                self.bus_address = address
                return bus
            if time.monotonic() > deadline or not self.running:
                log.error("worker %d: no manager came back within %.0f s", self.index, RECONNECT_TIMEOUT)
                os._exit(1)
            time.sleep(0.05)

    def fail_unconfirmed(self, queued: set[int]) -> int:
        """Complete every token the old manager never answered (all but those
        still ``queued`` here): requests get an error, messages a warning."""
        n = 0
        for token in list(self.pending):
            if token in queued:
                continue
            pending = self.pending.pop(token, None)
            if pending is None:
                continue
            self.failed.add(token)
            n += 1
            if pending.unit is not None and pending.owner is not None:
                pending.owner.complete(pending.unit, [])
            pending.resolve("err", (numerics.ERR_UNKNOWNERROR, ("*",), LOST))
        owners = {id(u): s for s in list(self.sessions.values()) for u in list(s.units)}
        for token in list(self.sending):
            if token in queued:
                continue
            unit = self.sending.pop(token, None)
            if unit is None:
                continue
            self.failed.add(token)
            n += 1
            s = owners.get(id(unit))
            if s is not None:
                line = Message(numerics.ERR_UNKNOWNERROR, (s.nick, "*", UNCONFIRMED), self.config.server_name)
                s.complete(unit, [line.to_bytes()])
        return n

    def unfailed(self, items: list[Published]) -> list[Published]:
        """``items`` without those whose token was failed (their waiter was told)."""
        failed = self.failed
        out: list[Published] = []
        for item in items:
            if type(item) is not Stamp and item.token in failed:  # type: ignore[union-attr]
                failed.discard(item.token)  # type: ignore[union-attr]
            else:
                out.append(item)
        return out

    def snapshot(self) -> tuple[list[SessionImage], list[ChannelImage], list[Session]]:
        """This worker's registered clients and their channels, for a new
        manager; and the clients still registering (to be closed)."""
        users: list[SessionImage] = []
        closing: list[Session] = []
        known: set[int] = set()
        for s in list(self.sessions.values()):
            if s.forgotten or s.closing is not None:
                continue
            if not s.registered:
                closing.append(s)
                continue
            known.add(s.sid)
            users.append(SessionImage(s.sid, s.nick, s.user, s.realname, s.ip, s.host, s.tls, s.account, s.away,
                                      "".join(sorted(s.modes)), s.signon, s.monitoring))
        channels = []
        for key, members in list(self.channels.items()):
            modes = self.member_modes.get(key, {})
            local = tuple((sid, modes.get(sid, "")) for sid in list(members) if sid in known)
            if local:
                channels.append(ChannelImage(key, self.channel_names.get(key, key), self.chanstate.get(key), local))
        return users, channels, closing

    def deliver(self, batch: list[Delivered]) -> None:
        """Apply one bus batch: one write per touched client at the end (or
        before a result, so a client sees what its request caused first).

        Channel and private deliveries are the hot path and handled inline;
        every other record goes through :attr:`handlers`, by type."""
        touched: list[Session] = []
        sessions = self.sessions
        channels = self.channels
        sending = self.sending
        handlers = self.handlers
        count = events = 0
        stamps: list[float] = []
        cause: Session | None = None  # whose request caused the events being applied
        cause_unit: Unit | None = None

        def put(s: Session, data: bytes) -> None:
            if s is cause and cause_unit is not None and s.hold(cause_unit, data):
                return
            buf = s.batchbuf
            if buf is None:
                buf = s.batchbuf = []
                touched.append(s)
            buf.append(data)

        def flush() -> None:
            for s in touched:
                buf = s.batchbuf
                if buf is not None:  # (None: complete() wrote it already)
                    s.batchbuf = None
                    s.out.write(b"".join(buf))
            touched.clear()

        for item in batch:
            cls = type(item)
            if type(item) is ChannelDelivery:
                if item.multi is not None:  # a draft/multiline message: its own forms
                    count += self._deliver_multiline(item, put)
                    continue
                members = channels.get(item.key)
                sender, body = item.sender, item.body
                variants = (body, item.tags_time + body, item.tags_full + body)
                tagmsg = item.kind == "T"
                if members:
                    for sid, s in members.items():
                        if sid == sender or (tagmsg and s.tagmode != 2):
                            continue
                        buf = s.batchbuf
                        if buf is None:
                            buf = s.batchbuf = []
                            touched.append(s)
                        buf.append(variants[s.tagmode] if s.tagmode < 3 else some_tags(s.caps, item.tags_full) + body)
                        count += 1
                me = sessions.get(sender)
                if me is not None:  # the sender's worker: its echo, and the completion
                    echo = self._variant(me, variants, item.tags_full) if me.echo and not (tagmsg and me.tagmode != 2) \
                        else None
                    unit = sending.pop(item.token, None) if item.token else None
                    if unit is not None:
                        me.complete(unit, [echo] if echo else [])
                    elif echo:
                        put(me, echo)
            elif type(item) is PrivateDelivery:
                if item.multi is not None:
                    count += self._deliver_multiline(item, put)
                    continue
                to, sender, body = item.to, item.sender, item.body
                variants = (body, item.tags_time + body, item.tags_full + body)
                tagmsg = item.kind == "T"
                if to != sender:
                    them = sessions.get(to)
                    if them is not None and not (tagmsg and them.tagmode != 2):
                        put(them, self._variant(them, variants, item.tags_full))
                        count += 1
                me = sessions.get(sender)
                if me is not None:  # the sender's worker: its echo (the only copy, to oneself)
                    echo = (self._variant(me, variants, item.tags_full)
                            if (me.echo or to == sender) and not (tagmsg and me.tagmode != 2) else None)
                    unit = sending.pop(item.token, None) if item.token else None
                    if unit is not None:
                        me.complete(unit, [echo] if echo else [])
                    elif echo:
                        put(me, echo)
                    if to == sender:
                        count += 1
            elif type(item) is Result:
                flush()
                pending = self.pending.pop(item.token, None)
                if pending is not None:
                    if pending.unit is not None and pending.owner is not None:
                        pending.owner.complete(pending.unit, [])
                    pending.resolve(item.status, item.value)
                cause = cause_unit = None
            elif type(item) is Begin:
                pending = self.pending.get(item.token)
                if pending is not None and pending.unit is not None:
                    cause, cause_unit = pending.owner, pending.unit
            elif type(item) is Reply:
                me = sessions.get(item.sid)
                if me is not None:
                    # params may echo a client's trailing parameter: reply() makes them valid
                    line = error_reply(RemoteProtocolError(item.numeric, *item.params, text=item.text),
                                       self.config.server_name, me.nick).to_bytes()
                    if not item.final:  # (RPL_AWAY) inside the command's output, before its completion
                        unit = sending.get(item.token) if item.token else None
                        if unit is None or not me.hold(unit, line):
                            put(me, line)
                        continue
                    unit = sending.pop(item.token, None) if item.token else None
                    if unit is not None:
                        me.complete(unit, [line])
                    else:
                        put(me, line)
            elif type(item) is Done:
                unit = sending.pop(item.token, None)
                me = sessions.get(item.sid)
                if unit is not None and me is not None:
                    me.complete(unit, [])
            elif type(item) is Stamp:
                stamps.append(item.time)
            else:
                handler = handlers.get(cls)
                if handler is None:
                    log.warning("subscriber: unknown bus record %r", cls.__name__)
                else:
                    events += handler(item, put)
        flush()
        self.deliveries += count
        self.event_deliveries += events
        if stamps:
            now = time.time()
            observe = self.stats.latency.observe
            for t in stamps:
                observe(now - t)

    def _deliver_multiline(self, item: ChannelDelivery | PrivateDelivery, put: Put) -> int:
        """A draft/multiline message: the batch to clients with ``draft/multiline``
        and ``batch``, the fallback lines to others; the sender's echo in the
        same form completes its command. Each form is built once per batch."""
        multi = item.multi
        assert multi is not None
        forms: dict[tuple[int, bool, bool], bytes] = {}

        def form(s: Session) -> bytes:
            batched = "draft/multiline" in s.caps and "batch" in s.caps
            mode = s.tagmode
            key = (mode, batched, mode == 3 and "server-time" in s.caps)  # tag mode 3: some_tags() reads caps
            data = forms.get(key)
            if data is None:
                tags = ((b"", item.tags_time, item.tags_full)[mode] if mode < 3
                        else some_tags(s.caps, item.tags_full))
                if batched:
                    data = tags + multi.opener + multi.inner
                else:  # msgid on the first line only; the other tags on every line
                    rest = (b"", item.tags_time, multi.tags_rest)[mode] if mode < 3 else tags
                    data = tags + multi.lines[0] + b"".join(rest + line for line in multi.lines[1:])
                forms[key] = data
            return data

        sender = item.sender
        count = 0
        to_self = False
        if isinstance(item, ChannelDelivery):
            receivers = [m for sid, m in self.channels.get(item.key, {}).items() if sid != sender]
        else:
            to_self = item.to == sender
            them = self.sessions.get(item.to) if not to_self else None
            receivers = [them] if them is not None else []
        for m in receivers:
            put(m, form(m))
            count += 1
        me = self.sessions.get(sender)
        if me is not None:  # the sender's worker: its echo, and the completion
            echo = form(me) if me.echo or to_self else None
            unit = self.sending.pop(item.token, None) if item.token else None
            if unit is not None:
                me.complete(unit, [echo] if echo else [])
            elif echo:
                put(me, echo)
            count += to_self
        return count

    @staticmethod
    def _variant(s: Session, variants: tuple[bytes, bytes, bytes], tags_full: bytes) -> bytes:
        """The copy of a message for ``s``: no tags, time only, all tags, or (tag
        mode 3: account-tag without message-tags) the account and time only."""
        mode = s.tagmode
        return variants[mode] if mode < 3 else some_tags(s.caps, tags_full) + variants[0]

    # -- state events: update the local replica and tell the local clients -------
    def on_joined(self, e: Joined, put: Put) -> int:
        channels = self.channels
        s = self.sessions.get(e.sid)
        members = channels.get(e.key)
        if s is not None:
            if members is None:
                members = channels[e.key] = {}
                self.channel_names[e.key] = e.name
            members[e.sid] = s
        n = 0
        if members:
            plain = Message("JOIN", (e.name,), e.prefix).to_bytes()
            extended = Message("JOIN", (e.name, e.account, e.realname), e.prefix).to_bytes()
            away_line = Message("AWAY", (e.away,), e.prefix).to_bytes() if e.away else b""
            tag = f"@account={escape_tag_value(e.account)} ".encode() if e.account != "*" else b""
            for msid, m in members.items():
                line = extended if "extended-join" in m.caps else plain
                put(m, tag + line if tag and "account-tag" in m.caps else line)
                if away_line and msid != e.sid and "away-notify" in m.caps:
                    put(m, away_line)
                n += 1
        return n

    @staticmethod
    def _with_account(line: bytes, account: str | None) -> bytes:
        """``line`` as account-tag clients get it: with the actor's account, if any."""
        return f"@account={escape_tag_value(account)} ".encode() + line if account else line

    def on_parted(self, e: Parted, put: Put) -> int:
        members = self.channels.get(e.key)
        n = 0
        if members:
            line = Message("PART", (e.name, e.reason) if e.reason else (e.name,), e.prefix).to_bytes()
            n = self._to_channel(e.key, line, put, e.account)
            self._leave(e.key, e.sid)
        return n

    def _to_channels(self, keys: tuple[str, ...], line: bytes, put: Put, seen: set[int],
                     cap: str | None = None, account: str | None = None) -> int:
        """``line`` once to every local member of ``keys`` not in ``seen`` (with ``cap``);
        account-tag clients get it with ``account``."""
        tagged = self._with_account(line, account)
        n = 0
        for key in keys:
            for msid, m in self.channels.get(key, {}).items():
                if msid not in seen and (cap is None or cap in m.caps):
                    seen.add(msid)
                    put(m, tagged if "account-tag" in m.caps else line)
                    n += 1
        return n

    def on_quit(self, e: Quit, put: Put) -> int:
        line = Message("QUIT", (e.reason,), e.prefix).to_bytes()
        n = self._to_channels(e.keys, line, put, {e.sid}, account=e.account)
        for key in e.keys:
            self._leave(key, e.sid)
        return n

    def on_netsplit(self, e: Netsplit, put: Put) -> int:
        """Cluster mode: a dead node's users' QUITs (as :meth:`on_quit` makes
        them), in one ``netsplit`` batch for each member with ``batch``."""
        gathered: dict[int, tuple[Session, list[bytes]]] = {}

        def collect(m: Session, data: bytes) -> None:
            gathered.setdefault(m.sid, (m, []))[1].append(data)

        n = sum(self.on_quit(q, collect) for q in e.quits)
        for m, out in gathered.values():
            if "batch" in m.caps:
                ref = batch_ref("N")
                tag = f"batch={ref}".encode()
                put(m, b"".join([Message("BATCH", ("+" + ref, "netsplit", *e.servers)).to_bytes(),
                                 *[add_tag(x, tag) for x in out], Message("BATCH", ("-" + ref,)).to_bytes()]))
            else:
                put(m, b"".join(out))
        return n

    def on_nick(self, e: NickChanged, put: Put) -> int:
        line = Message("NICK", (e.nick,), e.old_prefix).to_bytes()
        seen: set[int] = set()
        me = self.sessions.get(e.sid)
        if me is not None:
            seen.add(e.sid)
            put(me, self._with_account(line, e.account) if "account-tag" in me.caps else line)
            me.nick = e.nick  # also a rename the registry decided (a nick conflict at a rebuild)
        return self._to_channels(e.keys, line, put, seen, account=e.account)

    def _to_channel(self, key: str, line: bytes, put: Put, account: str | None = None) -> int:
        members = self.channels.get(key, {})
        tagged = self._with_account(line, account)
        for m in members.values():
            put(m, tagged if "account-tag" in m.caps else line)
        return len(members)

    def on_topic(self, e: TopicChanged, put: Put) -> int:
        return self._to_channel(e.key, Message("TOPIC", (e.name, e.topic), e.prefix).to_bytes(), put, e.account)

    def on_mode(self, e: ModeChanged, put: Put) -> int:
        return self._to_channel(e.key, Message("MODE", (e.name, e.modestr, *e.args), e.prefix).to_bytes(), put,
                                e.account)

    def on_kicked(self, e: Kicked, put: Put) -> int:
        line = Message("KICK", (e.name, e.target_nick, e.reason), e.prefix).to_bytes()
        n = self._to_channel(e.key, line, put, e.account)
        self._leave(e.key, e.target)
        return n

    def on_invited(self, e: Invited, put: Put) -> int:
        s = self.sessions.get(e.target)
        if s is None:
            return 0
        tags = {"account": e.account} if e.account and "account-tag" in s.caps else {}
        put(s, Message("INVITE", (e.nick, e.name), e.prefix, tags).to_bytes())
        return 1

    def on_invite_notice(self, e: InviteNotice, put: Put) -> int:
        line = Message("INVITE", (e.nick, e.name), e.prefix).to_bytes()
        tagged = Message("INVITE", (e.nick, e.name), e.prefix, {"account": e.account}).to_bytes() if e.account else line
        n = 0
        for msid, m in self.channels.get(e.key, {}).items():
            if msid != e.inviter and "invite-notify" in m.caps:
                put(m, tagged if "account-tag" in m.caps else line)
                n += 1
        return n

    def on_away(self, e: AwayChanged, put: Put) -> int:
        line = Message("AWAY", (e.away,) if e.away else (), e.prefix).to_bytes()
        return self._to_channels(e.keys, line, put, {e.sid}, "away-notify", e.account)

    def on_realname(self, e: RealnameChanged, put: Put) -> int:
        line = Message("SETNAME", (e.realname,), e.prefix).to_bytes()
        seen: set[int] = set()
        me = self.sessions.get(e.sid)
        if me is not None and "setname" in me.caps:
            seen.add(e.sid)
            put(me, self._with_account(line, e.account) if "account-tag" in me.caps else line)
        return self._to_channels(e.keys, line, put, seen, "setname", e.account)

    def on_account(self, e: AccountChanged, put: Put) -> int:
        line = Message("ACCOUNT", (e.account,), e.prefix).to_bytes()
        return self._to_channels(e.keys, line, put, {e.sid}, "account-notify")

    def on_disconnect(self, e: Disconnect, put: Put) -> int:
        s = self.sessions.get(e.sid)
        if s is not None:
            s.close(e.reason)
        return 0

    def on_channel_state(self, e: ChannelState, put: Put) -> int:
        if e.key in self.channels:
            self.chanstate[e.key] = e
        return 0

    def on_member_modes(self, e: MemberModes, put: Put) -> int:
        members = self.channels.get(e.key)
        if members is not None and e.sid in members:
            self.member_modes.setdefault(e.key, {})[e.sid] = e.modes
        return 0

    def on_wallops(self, e: Wallops, put: Put) -> int:
        line = Message("WALLOPS", (e.text,), e.prefix).to_bytes()
        n = 0
        for s in list(self.sessions.values()):
            if "w" in s.modes and s.registered:
                put(s, line)
                n += 1
        return n

    def on_monitor_status(self, e: MonitorStatus, put: Put) -> int:
        src, n = self.config.server_name, 0
        for sid in e.watchers:
            s = self.sessions.get(sid)
            if s is not None:
                if e.prefix:
                    put(s, Message("730", (s.nick, e.prefix), src).to_bytes())
                else:
                    put(s, Message("731", (s.nick, e.nick), src).to_bytes())
                n += 1
        return n

    def on_monitor_change(self, e: MonitorChange, put: Put) -> int:
        cap = MONITOR_CAPS[e.verb]
        line = Message(e.verb, e.params, e.prefix).to_bytes()
        n = 0
        for sid in e.watchers:
            s = self.sessions.get(sid)
            if s is not None and "extended-monitor" in s.caps and cap in s.caps:
                put(s, line)
                n += 1
        return n

    def on_read_marker(self, e: ReadMarker, put: Put) -> int:
        line = Message("MARKREAD", (e.target, e.timestamp), self.config.server_name).to_bytes()
        n = 0
        for sid in e.sids:
            s = self.sessions.get(sid)
            if s is not None and "draft/read-marker" in s.caps:
                put(s, line)
                n += 1
        return n

    def on_redacted(self, e: Redacted, put: Put) -> int:
        params = (e.target, e.msgid, e.reason) if e.reason else (e.target, e.msgid)
        line = Message("REDACT", params, e.prefix).to_bytes()
        members = self.channels.get(e.key, {}).values() if e.key else (
            s for sid in e.sids if (s := self.sessions.get(sid)) is not None)
        n = 0
        for s in members:
            if "draft/message-redaction" in s.caps:
                put(s, line)
                n += 1
        return n

    def _leave(self, key: str, sid: int) -> None:
        members = self.channels.get(key)
        if members is not None:
            members.pop(sid, None)
            modes = self.member_modes.get(key)
            if modes is not None:
                modes.pop(sid, None)
            if not members:
                del self.channels[key]
                self.channel_names.pop(key, None)
                self.chanstate.pop(key, None)
                self.member_modes.pop(key, None)

    def figures(self) -> dict[str, Any]:
        """This worker's figures for the supervisor (server/ops/metrics.py)."""
        st = self.stats
        with st.lock:
            disconnects = dict(st.disconnects)
        return {
            "index": self.index,
            "time": time.time(),
            "sessions": len(self.sessions),
            "idle_threads": self.threads.idle_count(),
            "local_channels": len(self.channels),
            "messages_in": {MESSAGE_KINDS[k]: v for k, v in st.messages_in.items()},
            "deliveries": {"message": self.deliveries, "event": self.event_deliveries},
            "disconnects": disconnects,
            "batch_size": st.batch_size.snapshot(),
            "latency": st.latency.snapshot(),
        }

    def timer(self) -> None:
        """Heartbeat, registration timeout, idle PING and ping timeout."""
        cfg = self.config
        while self.running:
            self.heartbeat.value = time.time()
            report = exchange(self.stats_sock, self.figures(), self.index)
            if report is not None:
                self.report = report
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if s.closing is not None:
                    continue
                if not s.registered:
                    if now - s.created > cfg.registration_timeout:
                        s.close("Registration timed out")
                    continue
                idle = now - s.last_active
                if s.protect_deadline is not None and now > s.protect_deadline:
                    # a registered nick used without logging in: rename (a round trip, so not here)
                    s.protect_deadline = None
                    threading.Thread(target=enforce_protection, args=(s,), daemon=True).start()
                if s.ping_sent is not None:
                    if now - s.ping_sent > cfg.ping_timeout:
                        s.close(f"Ping timeout: {int(now - s.last_active)} seconds")
                elif idle > cfg.ping_interval:
                    s.ping_sent = now
                    s.send_raw(Message("PING", (cfg.server_name,)).to_bytes())
            time.sleep(1.0)

    # -- main thread ----------------------------------------------------------
    def start_server(self) -> None:
        """Prepare the threads, then accept handed-over sockets, a thread each."""
        threading.stack_size(self.config.thread_stack_kib * 1024)
        resources.tune_gc()
        resources.set_switch_interval(self.config.gil_switch_interval)
        self.writer.start()
        for target in (self.publisher, self.subscriber, self.timer):
            threading.Thread(target=target, name=target.__name__, daemon=True).start()
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload())
        sel = selectors.DefaultSelector()
        sel.register(self.handoff, selectors.EVENT_READ)
        sel.register(rfd, selectors.EVENT_READ)
        self.handoff.setblocking(False)
        log.info("worker %d ready (pid %d)", self.index, os.getpid())
        while not stop.is_set():
            for key, _ in sel.select(1.0):
                if key.fileobj == rfd:
                    try:
                        os.read(rfd, 512)
                    except OSError:
                        pass
                    continue
                if not self.receive_sockets():
                    # The acceptor is gone (shutdown, or it died and the
                    # supervisor is stopping us): keep serving until told to stop.
                    sel.unregister(self.handoff)
        self.shutdown()

    def receive_sockets(self) -> bool:
        """Start sessions for the sockets waiting; False once the acceptor is gone."""
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(self.handoff, 256, 16)
            except BlockingIOError:
                return True
            if not data and not fds:
                log.info("worker %d: the acceptor closed the hand-off socket", self.index)
                return False
            if flags & socket.MSG_CTRUNC:
                # The socket did not fit (no free file descriptor here): that one
                # client is lost, the others are not. Free its slot in the acceptor.
                for fd in fds:
                    os.close(fd)
                ip = data.decode().split(" ")[0]
                log.error("worker %d: could not receive a socket from %s (out of file descriptors?)",
                          self.index, ip)
                try:
                    self.handoff.send(b"C" + ip.encode())
                except OSError:
                    pass
                continue
            for fd in fds:
                os.set_inheritable(fd, False)
                ip, port, *options = data.decode().split(" ")
                self.start_session(fd, ip, int(port), "tls" in options, "ws" in options)

    def start_session(self, fd: int, ip: str, port: int, tls: bool = False, ws: bool = False) -> None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(True)
        try:  # chat lines are small and interactive: no Nagle delay behind a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.config.socket_sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.socket_sndbuf)
        if tls and self.tls_context is None:
            log.error("worker %d: a TLS connection from %s but no TLS certificate", self.index, ip)
            sock.close()
            self.handoff.send(b"C" + ip.encode())
            return
        cfg = self.config
        websocket = (WebSocketState(ip, cfg.websocket_origins, self._ws_proxies, cfg.websocket_proxy_header)
                     if ws else None)
        session = Session(self, sock, self.new_sid(), ip, port, self.tls_context if tls else None, websocket)
        self.sessions[session.sid] = session
        log.info("client %s:%d connected", ip, port)
        try:
            self.threads.run(handle_client, session)
        except RuntimeError:
            log.error("worker %d: cannot start a thread for %s", self.index, ip)
            self.sessions.pop(session.sid, None)
            session.out.last_words(Message("ERROR", ("Server is full",)).to_bytes())
            sock.close()
            self.handoff.send(b"C" + ip.encode())

    def reload(self) -> None:
        try:
            new = config_mod.load(self.argv)
        except (SystemExit, OSError, ValueError) as exc:
            log.error("worker %d: configuration not reloaded: %s", self.index, exc)
            return
        try:
            self.tls_context = tls_mod.context_from(new)
            self.cloak_key = cloak_mod.load_key(new)
            self._cloak_exempt = new.networks("cloak_exempt")
        except (tls_mod.TLSConfigError, OSError, ValueError) as exc:
            log.error("worker %d: configuration not reloaded: %s", self.index, exc)
            return
        self.config = new
        self.threads.keep = new.thread_keep
        resources.set_switch_interval(new.gil_switch_interval)
        self._flood_exempt = new.networks("flood_exempt")
        self._ws_proxies = new.networks("websocket_proxies")
        setup_logging(new, f"worker-{self.index}")
        for s in list(self.sessions.values()):
            s.config = new
        log.info("worker %d: configuration reloaded", self.index)

    def shutdown(self) -> None:
        """SIGTERM: tell every client, pass on what they already sent, then go."""
        line = Message("ERROR", ("Server shutting down",)).to_bytes()
        sessions = list(self.sessions.values())
        for s in sessions:
            s.closing = "Server shutting down"
            s.out.write(line)  # after anything still queued, so it arrives whole
        # Orphaned (the supervisor was killed), every process must be gone within 2 s.
        budget = 0.5 if orphaned() else 1.0
        deadline = time.monotonic() + budget
        while any(s.out.pending for s in sessions) and time.monotonic() < deadline:
            time.sleep(0.01)
        for s in sessions:
            try:
                s.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.writer.stop()
        # Lines already read are accepted: let the publisher hand them to the bus.
        deadline = time.monotonic() + 2 * budget
        while (not self.outq.empty() or self.publishing) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.running = False
        log.info("worker %d stopped", self.index)


def run_worker(index: int, config: Config, argv: list[str], bus_address: Any, authkey: bytes,
               handoff: socket.socket, heartbeat: Any, close_fds: list[int],
               stats_sock: socket.socket | None = None) -> None:
    """Process entry point."""
    die_with_parent()
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resources.one_malloc_arena()
    setup_logging(config, f"worker-{index}")
    try:
        worker = Worker(index, config, argv, bus_address, authkey, handoff, heartbeat, stats_sock)
    except Exception:
        logging.getLogger(__name__).exception("worker %d failed to boot", index)
        os._exit(BOOT_ERROR)
    try:
        worker.start_server()
    finally:
        logging.shutdown()
    os._exit(0)


__all__ = ["BOOT_ERROR", "RemoteProtocolError", "Worker", "run_worker"]
