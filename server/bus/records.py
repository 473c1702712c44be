"""Every record that crosses the bus, defined once.

A worker's publisher sends batches of :data:`Published` records to the bus; the
bus appends :data:`Delivered` records to each worker's inbox, and the worker's
subscriber dispatches on their type through a table
(:meth:`server.process.worker.Worker.deliver`). Records are ``NamedTuple``\\ s:
they pickle as a class reference plus a tuple. Measured on this machine (a
batch of 200 channel deliveries, protocol 5, per record): plain tuple 0.13 us
to pickle and 0.10 us to unpickle; ``NamedTuple`` 0.9 / 0.3 us; a slotted
frozen dataclass 2.1 / 2.4 us. The named tuple is the cheaper record.

The contract these records carry (the bus keeps it, see
:mod:`server.bus.local.bus`):

* **One order.** Records are applied in one order under the bus lock; every
  inbox receives them in that order, so every member of a channel sees the
  channel's lines in the same order, and history stores that order.
* **One completion per token.** A :class:`Send` or :class:`Request` with a
  non-zero ``token`` gets exactly one record carrying that token back in the
  publishing worker's inbox, after everything else the item caused there: the
  sender's :class:`ChannelDelivery` / :class:`PrivateDelivery`, a
  :class:`Reply` (an error), a :class:`Result`, or a bare :class:`Done`.
  Tokens are unique across processes (the worker's pid is in their high bits),
  so a token seen by another worker never matches one of its own.
* **Cause.** The state events a :class:`Request` causes for its own worker
  follow a :class:`Begin` with its token and precede its :class:`Result`, so the
  worker can give them to the command that caused them (a labeled JOIN puts its
  own JOIN line in its labeled batch).
* **Stored before shown.** No record of a batch reaches any inbox before the
  history rows and channel records that batch wrote are committed to SQLite.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# -- what a worker publishes ---------------------------------------------------------


class Multiline(NamedTuple):
    """The forms of one IRCv3 ``draft/multiline`` message (one msgid), encoded once
    by the sender's worker and carried by its :class:`Send` and deliveries.
    Tags go in front of ``opener`` (capable clients) or of the first fallback line."""

    opener: bytes  # b":n!u@h BATCH +ref draft/multiline #c\r\n"
    inner: bytes  # the lines, each with batch=ref (and draft/multiline-concat), then b"BATCH -ref\r\n"
    lines: tuple[bytes, ...]  # the fallback: one untagged PRIVMSG/NOTICE per non-blank line
    tags_rest: bytes  # b"@time=...;account=... " for the fallback's later lines (no msgid)
    stored: bytes  # the history row's line: the lines joined by LF, each with a marker tag


class Send(NamedTuple):
    """A PRIVMSG (``kind`` ``"P"``), NOTICE (``"N"``) or TAGMSG (``"T"``), encoded
    once by the sender's worker; the bus checks (+n, +m, bans) and routes it."""

    sid: int
    target: str  # case-folded channel or nick
    is_channel: bool
    kind: str
    tags_full: bytes  # b"@time=...;msgid=...;+client ", for clients with message-tags
    tags_time: bytes  # b"@time=... ", for clients with server-time only
    body: bytes  # b":nick!user@host PRIVMSG #c :text\r\n"
    msgid: str
    time: float
    token: int = 0
    multi: Multiline | None = None  # a draft/multiline message (``body`` is its first fallback line)


class Request(NamedTuple):
    """A registry operation by name (``server.bus.local.bus.OPS``); ``token`` 0
    means nobody waits for the result."""

    sid: int
    token: int
    op: str
    args: tuple[Any, ...]


class Stamp(NamedTuple):
    """Appended by the publisher to every batch and handed on to every inbox the
    batch touched: the bus latency, as seen by the subscribers."""

    time: float


Published = Send | Request | Stamp

# -- what a worker receives: deliveries and completions --------------------------------


class ChannelDelivery(NamedTuple):
    """A channel message for the local members of ``key`` (the sender's echo only
    with echo-message); the sender's worker takes it as the completion of ``token``."""

    key: str
    sender: int
    kind: str
    tags_full: bytes
    tags_time: bytes
    body: bytes
    token: int
    multi: Multiline | None = None


class PrivateDelivery(NamedTuple):
    """A private message for ``to`` (and the sender's echo, where it is local)."""

    to: int
    sender: int
    kind: str
    tags_full: bytes
    tags_time: bytes
    body: bytes
    token: int
    multi: Multiline | None = None


class Reply(NamedTuple):
    """A numeric for one client: ``:server NUMERIC nick params... :text``."""

    sid: int
    numeric: str
    params: tuple[str, ...]
    text: str
    token: int = 0
    final: bool = True  # False: informational (RPL_AWAY), the token's completion follows


class Result(NamedTuple):
    """The outcome of a :class:`Request`: ``status`` is ``"ok"`` (``value`` is the
    operation's return value), ``"err"`` (``value`` is ``(numeric, params, text)``)
    or ``"gone"`` (the user vanished meanwhile)."""

    token: int
    status: str
    value: Any


class Done(NamedTuple):
    """The completion of ``sid``'s ``token`` when nothing else came back for it
    (a NOTICE the bus refused, an item that failed)."""

    sid: int
    token: int


class Begin(NamedTuple):
    """The events up to the :class:`Result` of ``token`` were caused by it."""

    token: int


# -- what a worker receives: state events (emitted by the registry) --------------------


class Joined(NamedTuple):
    key: str
    name: str
    sid: int
    prefix: str
    account: str  # "*" when not logged in
    realname: str
    away: str | None


class Parted(NamedTuple):
    key: str
    name: str
    sid: int
    prefix: str
    reason: str
    account: str | None = None  # the actor's, for account-tag


class Quit(NamedTuple):
    sid: int
    prefix: str
    reason: str
    keys: tuple[str, ...]  # the channels the user was in
    account: str | None = None  # the actor's, for account-tag


class NickChanged(NamedTuple):
    sid: int
    old_prefix: str
    nick: str
    keys: tuple[str, ...]
    account: str | None = None  # the actor's, for account-tag


class TopicChanged(NamedTuple):
    key: str
    name: str
    prefix: str
    topic: str
    account: str | None = None  # the actor's, for account-tag


class ModeChanged(NamedTuple):
    key: str
    name: str
    prefix: str
    modestr: str
    args: tuple[str, ...]
    account: str | None = None  # the actor's, for account-tag


class Kicked(NamedTuple):
    key: str
    name: str
    prefix: str
    target: int
    target_nick: str
    reason: str
    account: str | None = None  # the actor's, for account-tag


class Invited(NamedTuple):
    """INVITE for the invited user."""

    target: int
    prefix: str
    nick: str
    name: str
    account: str | None  # the inviter's, for account-tag


class InviteNotice(NamedTuple):
    """invite-notify: INVITE for the channel's members with that cap, but the inviter."""

    key: str
    inviter: int
    prefix: str
    target: int
    nick: str
    name: str
    account: str | None


class AwayChanged(NamedTuple):
    sid: int
    prefix: str
    away: str | None
    keys: tuple[str, ...]
    account: str | None = None  # the actor's, for account-tag


class RealnameChanged(NamedTuple):
    sid: int
    prefix: str
    realname: str
    keys: tuple[str, ...]
    account: str | None = None  # the actor's, for account-tag


class AccountChanged(NamedTuple):
    sid: int
    prefix: str
    account: str  # "*" for a logout
    keys: tuple[str, ...]


class Disconnect(NamedTuple):
    """KILL or K-line: the worker closes the client with ``reason``."""

    sid: int
    reason: str


class Wallops(NamedTuple):
    prefix: str
    text: str


class MonitorStatus(NamedTuple):
    """MONITOR: ``nick`` came online (730 with ``prefix``) or went offline (731,
    ``prefix`` empty), for the ``watchers`` (sids) that monitor it."""

    watchers: tuple[int, ...]
    nick: str
    prefix: str


class MonitorChange(NamedTuple):
    """extended-monitor: an ``AWAY``/``ACCOUNT``/``SETNAME`` line (``verb``,
    ``params``) of ``prefix`` for ``watchers`` that share no channel with it; a
    watcher gets it with extended-monitor and the cap of that notification."""

    watchers: tuple[int, ...]
    prefix: str
    verb: str
    params: tuple[str, ...]


class ReadMarker(NamedTuple):
    """draft/read-marker: ``MARKREAD target timestamp`` for these sessions (every
    connection of one account); sent to those with the cap."""

    sids: tuple[int, ...]
    target: str
    timestamp: str  # "timestamp=..." or "*"


class Redacted(NamedTuple):
    """draft/message-redaction: ``REDACT target msgid [reason]`` by ``prefix``,
    for the channel's local members (``key``) or the listed ``sids`` (a DM)."""

    key: str
    sids: tuple[int, ...]
    prefix: str
    target: str
    msgid: str
    reason: str


class Netsplit(NamedTuple):
    """Cluster mode: a node is gone; its users' QUITs, shown inside an IRCv3
    ``netsplit`` batch (``servers``: the node that saw it, the dead one) to
    clients with ``batch``."""

    servers: tuple[str, str]
    quits: tuple[Quit, ...]


Event = (Joined | Parted | Quit | NickChanged | TopicChanged | ModeChanged | Kicked | Invited | InviteNotice
         | AwayChanged | RealnameChanged | AccountChanged | Disconnect | Wallops | MonitorStatus | MonitorChange
         | ReadMarker | Redacted | Netsplit)

# -- what a worker keeps so that a fresh manager can be rebuilt ----------------------


class ChannelState(NamedTuple):
    """A channel's state, to every worker holding members of it, whenever it
    changes (and to a worker whose first member joins): the worker keeps the
    latest one to re-register the channel into a new manager. ``seq`` orders
    the states (bus start time, counter) so the newest one wins."""

    key: str
    name: str
    created: float
    topic: str
    topic_by: str
    topic_at: float
    modes: str
    password: str | None
    limit: int | None
    bans: tuple[tuple[str, str, float], ...]
    excepts: tuple[tuple[str, str, float], ...]
    invex: tuple[tuple[str, str, float], ...]
    history: bool
    seq: tuple[float, int]


class MemberModes(NamedTuple):
    """A member's prefix modes in a channel (``"o"``, ``"v"``, ``"ov"``, ``""``),
    to that member's worker, when they are set at a join or change."""

    key: str
    sid: int
    modes: str


Delivered = (ChannelDelivery | PrivateDelivery | Reply | Result | Done | Begin | Stamp | Event | ChannelState
             | MemberModes)


class SessionImage(NamedTuple):
    """A registered client as its worker knows it, for a new manager (Bus.restore)."""

    sid: int
    nick: str
    user: str
    realname: str
    ip: str
    host: str
    tls: bool
    account: str | None
    away: str | None
    modes: str
    signon: float
    monitors: tuple[str, ...] = ()  # its MONITOR list, as it was given


class ChannelImage(NamedTuple):
    """A channel as one worker knows it: its latest state (None if it never got
    one) and its local members with their prefix modes."""

    key: str
    name: str
    state: ChannelState | None
    members: tuple[tuple[int, str], ...]

# -- what the manager stores after a batch, before its deliveries leave ------------------


class SaveChannel(NamedTuple):
    """A registered channel's record to store (``None``: drop it)."""

    key: str
    record: dict[str, Any] | None


class SaveKlines(NamedTuple):
    """The whole list of server bans, to rewrite ``klines.json``."""

    klines: list[tuple[str, str, str, float, float]]


class SaveReadMarker(NamedTuple):
    """A read marker to store: (account, target) -> server-time timestamp."""

    account: str
    target: str
    timestamp: str


class RedactRow(NamedTuple):
    """Delete a redacted message's history row (CHATHISTORY no longer returns it)."""

    target: str
    msgid: str


Effect = SaveChannel | SaveKlines | SaveReadMarker | RedactRow


# -- cluster mode: the entries of the shared log (server/bus/cluster/bus.py) -------------


class LogBatch(NamedTuple):
    """A worker's published batch, as one entry of the cluster log. ``worker``
    is the cluster-wide worker id (node index * 1000 + local index); ``time``
    is the origin node's clock, the time every node applies it at."""

    node: int
    worker: int
    time: float
    batch: tuple[Published, ...]


class NodeUp(NamedTuple):
    """A node (re)started: the clients its previous incarnation left in the log
    are gone; ``incarnation`` names this run (NodeDown must match it)."""

    node: int
    name: str
    incarnation: str


class NodeDown(NamedTuple):
    """A node stopped heartbeating: its clients are gone (appended by any node;
    applied only while ``incarnation`` is the node's current one)."""

    node: int
    incarnation: str
    reason: str


class WorkerDropped(NamedTuple):
    """A worker of some node died: its clients are gone."""

    worker: int
    reason: str


class WorkerRestored(NamedTuple):
    """A node re-announces one worker's clients and channels into a new log
    (the old one was lost with Redis): :mod:`server.state.rebuild`."""

    worker: int
    time: float
    users: tuple[SessionImage, ...]
    channels: tuple[ChannelImage, ...]


class AccountSync(NamedTuple):
    """An account as the node that created or changed it stored it (``None``:
    dropped), for the other nodes' databases; it precedes the request that
    tells the registries."""

    node: int
    fold: str
    record: tuple[str, str, str | None] | None  # name, password hash, email


LogEntry = LogBatch | NodeUp | NodeDown | WorkerDropped | WorkerRestored | AccountSync


# -- the wire form of a batch ---------------------------------------------------------
#
# Pickling a NamedTuple calls Python code per record (``__getnewargs__``, then the
# class's ``__new__`` to unpickle): 1.2 us to pickle and 0.4 us to unpickle a
# channel delivery, against about 0.15 / 0.1 us for a plain tuple. So a batch
# crosses the process boundary as a list of class numbers plus the records as
# plain tuples, and is rebuilt with ``tuple.__new__`` (C code only): 0.28 us to
# pack and 0.27 us to unpack per record, measured on this machine in a batch of
# 200 channel deliveries. The records stay the same typed objects on both sides.

RECORDS: tuple[type, ...] = tuple(sorted(
    (v for v in list(globals().values())
     if isinstance(v, type) and issubclass(v, tuple) and hasattr(v, "_fields") and v.__module__ == __name__),
    key=lambda c: c.__name__))
_CODE = {c: i for i, c in enumerate(RECORDS)}
Wire = tuple[list[int] | None, list[Any]]


def pack(items: list[Any]) -> Wire:
    """A batch of records as (class numbers, plain tuples); anything that is
    not a record of this module makes the batch go as it is."""
    code = _CODE.get
    codes = [code(type(r), -1) for r in items]
    if -1 in codes:
        return None, items
    return codes, list(map(tuple, items))


def unpack(wire: Wire) -> list[Any]:
    """The records :func:`pack` took apart, in order, of their own classes."""
    codes, items = wire
    if codes is None:
        return items
    return list(map(tuple.__new__, map(RECORDS.__getitem__, codes), items))
