"""History for clients: IRCv3 ``draft/chathistory`` and the replay on JOIN.

Rows are written by the manager's history writer (server/bus.py) in each
channel's one order; here a worker reads them through its own store
connection, after asking the bus for a barrier so that everything published
before the request is readable.
"""

from __future__ import annotations

import calendar
import time
from typing import TYPE_CHECKING

from server.irc.commands import batch_ref, command
from server.irc.messaging import server_time
from server.protocol import Message, RemoteProtocolError, casefold, parse, unescape_tag_value

if TYPE_CHECKING:
    from server.process.session import Session
    from server.state.store import Store

Row = tuple[int, str, float, str, str]


def parse_timestamp(value: str) -> float:
    """``2019-01-04T14:33:26.123Z`` -> seconds since the epoch."""
    main, _, frac = value.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float("0." + frac) if frac else 0.0)


def fail(code: str, *context: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError.fail("CHATHISTORY", code, *context, text=text)


def render(s: Session, rows: list[Row], batch: str | None) -> list[Message]:
    """Stored rows as messages for this client: the tags it asked for, and the
    batch reference when there is one."""
    out = []
    full = s.tagmode == 2
    for _, _, _, tags, line in rows:
        msg = parse(line)
        if msg.verb == "TAGMSG" and not full:
            continue
        if full:
            msg.tags = dict(item.partition("=")[::2] for item in tags.split(";") if item)
            msg.tags = {k: unescape_tag_value(v) for k, v in msg.tags.items()}
        elif s.tagmode:
            kept = [t.partition("=") for t in tags.split(";")]
            want = {"time"} if s.tagmode == 1 else {"account", "time"} if "server-time" in s.caps else {"account"}
            msg.tags = {k: unescape_tag_value(v) for k, _, v in kept if k in want}
        if batch is not None:
            msg.tags["batch"] = batch
        out.append(msg)
    return out


def in_batch(s: Session, kind: str, params: tuple[str, ...], msgs: list[Message]) -> list[Message]:
    if "batch" not in s.caps:
        return msgs

    ref = batch_ref("H")
    for m in msgs:
        m.tags["batch"] = ref
    src = s.config.server_name
    return [Message("BATCH", ("+" + ref, kind, *params), src), *msgs, Message("BATCH", ("-" + ref,), src)]


def replay_on_join(s: Session, key: str, name: str, upto: int) -> None:
    """The last lines of a channel for clients without chathistory: those from
    before the JOIN (row ids up to ``upto``, the bus order at the join), so none
    of them also arrives live. The bus made them readable before it answered
    the join, so no barrier request is needed here."""
    n = s.config.history_replay_lines
    if n <= 0 or "draft/chathistory" in s.caps:
        return
    rows = s.worker.get_store().history(key, before=upto + 1, limit=n)
    if rows:
        s.emit(in_batch(s, "chathistory", (name,), render(s, rows, None)))


def _position(store: Store, key: str, selector: str, edge: str) -> int | None:
    """A selector as a row id boundary. ``edge`` "after": rows with a greater id
    follow the selector; "before": rows with a smaller id precede it."""
    kind, _, value = selector.partition("=")
    if kind == "msgid":
        return store.history_position(key, msgid=value)
    if kind == "timestamp":
        try:
            ts = parse_timestamp(value)
        except ValueError:
            raise fail("INVALID_PARAMS", selector, text="Invalid timestamp") from None
        if edge == "after":
            return store.history_position(key, ts=ts + 1e-6)  # last id at or before ts
        pos = store.history_position(key, ts=ts)
        return None if pos is None else pos + 1
    raise fail("INVALID_PARAMS", selector, text="Unknown message reference")


@command("CHATHISTORY", 2)
def chathistory(s: Session, msg: Message) -> None:
    sub = msg.params[0].upper()
    cfg = s.config
    params = msg.params
    try:
        limit = min(int(params[-1]), cfg.chathistory_max)
    except ValueError:
        raise fail("INVALID_PARAMS", sub, text="Invalid limit") from None
    if sub == "TARGETS":
        if len(params) < 4:
            raise fail("INVALID_PARAMS", sub, text="Not enough parameters")
        targets(s, params[1], params[2], limit)
        return
    if sub not in ("LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN") or len(params) < 4:
        raise fail("INVALID_PARAMS", sub, text="Unknown subcommand or missing parameters")
    access = s.request("history_target", s.sid, params[1])
    if access is None:
        raise fail("INVALID_TARGET", sub, params[1], text="Messages could not be retrieved")
    key, shown = access
    s.request("history_barrier")
    store = s.worker.get_store()
    rows: list[Row] = []
    sel = params[2]
    if sub == "LATEST":
        after = None if sel == "*" else _position(store, key, sel, "after")
        if sel == "*" or after is not None:
            rows = store.history(key, after=after, limit=limit)
    elif sub == "BEFORE":
        before = _position(store, key, sel, "before")
        if before is not None:
            rows = store.history(key, before=before, limit=limit)
    elif sub == "AFTER":
        after = _position(store, key, sel, "after")
        if after is not None:
            rows = store.history(key, after=after, limit=limit, newest=False)
    elif sub == "AROUND":
        pivot = _position(store, key, sel, "before")
        if pivot is not None:
            older = store.history(key, before=pivot, limit=max(1, limit // 2))
            rows = older + store.history(key, after=pivot - 1, limit=limit - len(older), newest=False)
    else:  # BETWEEN
        if len(params) < 5:
            raise fail("INVALID_PARAMS", sub, text="Not enough parameters")
        a = _position(store, key, sel, "after")
        b = _position(store, key, params[3], "before")
        if a is not None and b is not None:
            if a < b:
                rows = store.history(key, after=a, before=b, limit=limit, newest=False)
            else:
                b2 = _position(store, key, params[3], "after")
                a2 = _position(store, key, sel, "before")
                if a2 is not None and b2 is not None:
                    rows = store.history(key, after=b2, before=a2, limit=limit)
    s.emit(in_batch(s, "chathistory", (shown,), render(s, rows, None)))


def targets(s: Session, start: str, end: str, limit: int) -> None:
    try:
        t1 = parse_timestamp(start.partition("=")[2])
        t2 = parse_timestamp(end.partition("=")[2])
    except ValueError:
        raise fail("INVALID_PARAMS", "TARGETS", text="Invalid timestamp") from None
    lo, hi = min(t1, t2), max(t1, t2)
    s.request("history_barrier")
    store = s.worker.get_store()
    mine = [key for key, members in list(s.worker.channels.items()) if s.sid in members]
    found = [(s.worker.channel_names.get(k, k), t) for k, t in store.targets(mine, lo, hi, limit)]
    me = (s.account or s.nick)

    me_fold = casefold(me)
    for key, t in store.dm_targets(me_fold, lo, hi, limit):
        a, _, b = key[1:].partition(" ")
        found.append((b if a == me_fold else a, t))
    found.sort(key=lambda x: x[1])

    src = s.config.server_name
    lines = [Message("CHATHISTORY", ("TARGETS", name, server_time(t)), src) for name, t in found[:limit]]
    s.emit(in_batch(s, "draft/chathistory-targets", (), lines))
