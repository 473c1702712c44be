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
from server.protocol import Message, RemoteProtocolError, casefold, parse, parse_int, unescape_tag_value

if TYPE_CHECKING:
    from server.irc.client import Client
    from server.state.store import Store

Row = tuple[int, str, float, str, str]


def parse_timestamp(value: str) -> float:
    """``2019-01-04T14:33:26.123Z`` -> seconds since the epoch."""
    main, _, frac = value.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float("0." + frac) if frac else 0.0)


def fail(code: str, *context: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError.fail("CHATHISTORY", code, *context, text=text)


def _tags_for(s: Client, tags: str) -> dict[str, str]:
    """A stored row's tags as this client asked for them (its tag mode)."""
    if s.tagmode == 2:
        items = (item.partition("=")[::2] for item in tags.split(";") if item)
        return {k: unescape_tag_value(v) for k, v in items}
    if s.tagmode:
        kept = [t.partition("=") for t in tags.split(";")]
        want = {"time"} if s.tagmode == 1 else {"account", "time"} if "server-time" in s.caps else {"account"}
        return {k: unescape_tag_value(v) for k, _, v in kept if k in want}
    return {}


def render_row(s: Client, tags: str, line: str) -> list[Message]:
    """One stored row as messages for this client. A multiline message (its
    lines joined by LF, each with a marker tag) is a ``draft/multiline`` batch
    for a client with that cap and ``batch``, else its non-blank lines (the
    msgid on the first only), as it was delivered live."""
    if "\n" not in line and not line.startswith("@"):
        msg = parse(line)
        if msg.verb == "TAGMSG" and s.tagmode != 2:
            return []
        msg.tags = _tags_for(s, tags)
        return [msg]
    first = _tags_for(s, tags)
    parts = [parse(part) for part in line.split("\n")]
    if "draft/multiline" in s.caps and "batch" in s.caps:
        ref = batch_ref("M")
        src = parts[0].source
        target = parts[0].params[0] if parts[0].params else "*"
        out = [Message("BATCH", ("+" + ref, "draft/multiline", target), src, first)]
        for p in parts:
            concat = "draft/multiline-concat" in p.tags
            p.tags = {"batch": ref, "draft/multiline-concat": ""} if concat else {"batch": ref}
            out.append(p)
        return [*out, Message("BATCH", ("-" + ref,))]
    rest = {k: v for k, v in first.items() if k != "msgid"}
    out = []
    for p in parts:
        if len(p.params) > 1 and p.params[1]:
            p.tags = dict(rest) if out else first
            out.append(p)
    return out


def render_rows(s: Client, rows: list[Row]) -> list[list[Message]]:
    """Stored rows as messages for this client, one group per row."""
    return [render_row(s, tags, line) for _, _, _, tags, line in rows]


def render(s: Client, rows: list[Row], batch: str | None) -> list[Message]:
    """Stored rows as messages for this client: the tags it asked for, and the
    batch reference when there is one."""
    out = [m for group in render_rows(s, rows) for m in group]
    if batch is not None:
        for m in out:
            m.tags.setdefault("batch", batch)
    return out


def in_batch(s: Client, kind: str, params: tuple[str, ...], msgs: list[Message]) -> list[Message]:
    if "batch" not in s.caps:
        return msgs

    ref = batch_ref("H")
    for m in msgs:  # a nested (multiline) batch's lines keep their own reference
        m.tags.setdefault("batch", ref)
    src = s.config.server_name
    return [Message("BATCH", ("+" + ref, kind, *params), src), *msgs, Message("BATCH", ("-" + ref,), src)]


def replay_on_join(s: Client, key: str, name: str, upto: int) -> None:
    """The last lines of a channel for a joining client without chathistory:
    those from before the JOIN (row ids up to ``upto``, the bus order at the
    join), so none of them also arrives live. The bus made them readable before
    it answered the join, so no barrier request is needed here.

    Only a client that can tell history from live traffic gets them: one with
    ``batch`` and ``server-time``, which sees them inside a ``chathistory``
    batch with their times. Bots that handed replayed lines to their command
    handlers as new messages re-ran old commands, so any other client gets one
    NOTICE saying that history exists and how to see it (docs/configuration.md)."""
    n = s.config.history_replay_lines
    if n <= 0 or "draft/chathistory" in s.caps:
        return
    store = s.worker.get_store()
    if "batch" in s.caps and "server-time" in s.caps:
        rows = store.history(key, before=upto + 1, limit=n)
        if rows:
            s.emit(in_batch(s, "chathistory", (name,), render(s, rows, None)))
    elif store.history(key, before=upto + 1, limit=1):
        s.send(Message("NOTICE", (name, f"{name} keeps a history of earlier messages; this client is not sent "
                                        "them on join because it cannot tell them from new ones. Enable the batch "
                                        "and server-time capabilities to see them here, or use draft/chathistory."),
                       s.config.server_name))


def _position(store: Store, key: str, selector: str, edge: str) -> int | None:
    """A selector as a row id boundary. ``edge`` "after": rows with a greater id
    follow the selector; "before": rows with a smaller id precede it."""
    kind, _, value = selector.partition("=")
    if kind == "msgid":
        return store.history_position(key, msgid=value)
    if kind == "timestamp":
        try:
            ts = parse_timestamp(value)
        except (ValueError, OverflowError):
            raise fail("INVALID_PARAMS", selector, text="Invalid timestamp") from None
        if edge == "after":
            return store.history_position(key, ts=ts + 1e-6)  # last id at or before ts
        pos = store.history_position(key, ts=ts)
        return None if pos is None else pos + 1
    raise fail("INVALID_PARAMS", selector, text="Unknown message reference")


# How many parameters each subcommand takes, the limit included.
ARITY = {"LATEST": 4, "BEFORE": 4, "AFTER": 4, "AROUND": 4, "BETWEEN": 5, "TARGETS": 4}


@command("CHATHISTORY", 2)
def chathistory(s: Client, msg: Message) -> None:
    """CHATHISTORY LATEST|BEFORE|AFTER|AROUND <target> <reference> <limit>
    CHATHISTORY BETWEEN <target> <reference> <reference> <limit>; CHATHISTORY TARGETS <from> <to> <limit>
    Plays back a channel's or a conversation's past messages (IRCv3 draft/chathistory); a reference is
    msgid=<id>, timestamp=<time> or * (LATEST only)."""
    sub = msg.params[0].upper()
    cfg = s.config
    params = msg.params
    if sub not in ARITY:
        raise fail("INVALID_PARAMS", msg.params[0], text="Unknown command")
    if len(params) != ARITY[sub]:
        raise fail("INVALID_PARAMS", sub, text="Insufficient parameters" if len(params) < ARITY[sub]
                   else "Too many parameters")
    # ASCII digits, at least 1 (0, "-1", "²" and 30-digit numbers are refused); the
    # server's maximum (CHATHISTORY= in 005) caps what is asked for
    limit = parse_int(params[-1], 1)
    if limit is None:
        raise fail("INVALID_PARAMS", sub, text="Invalid limit")
    if cfg.chathistory_max > 0:
        limit = min(limit, cfg.chathistory_max)
    if sub == "TARGETS":
        targets(s, params[1], params[2], limit)
        return
    target = params[1]
    access = s.request("history_target", s.sid, target)
    if access is None:
        raise fail("INVALID_TARGET", sub, target, text="Messages could not be retrieved")
    key, shown = access
    s.request("history_barrier")
    store = s.worker.get_store()
    dm = key.startswith("@")
    if dm:
        shown = partner_name(store, key, my_identity(s), shown)
        if shown is None:  # nobody by that name, and no conversation with them
            raise fail("INVALID_TARGET", sub, target, text="Messages could not be retrieved")
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
        rows = around(store, key, sel, limit)
    else:  # BETWEEN
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
    groups = render_rows(s, rows)
    if dm:
        name_parties(s, rows, groups, key, shown)
    s.emit(in_batch(s, "chathistory", (shown,), [m for group in groups for m in group]))


def around(store: Store, key: str, selector: str, limit: int) -> list[Row]:
    """AROUND: ``limit`` rows centred on the reference. With a msgid the
    referenced message is the centre and is included; with a timestamp the
    centre is the first message at or after it. ``limit // 2`` rows come
    before the centre, the rest from the centre on; when one side has fewer,
    the other side fills the window."""
    pivot = _position(store, key, selector, "before")  # id of the centre (msgid), or of the first row >= ts
    if pivot is None:
        return []
    older = store.history(key, before=pivot, limit=limit)  # as many as could be needed
    newer = store.history(key, after=pivot - 1, limit=limit, newest=False)
    n_older = min(len(older), max(limit // 2, limit - len(newer)))
    return (older[len(older) - n_older:] if n_older else []) + newer[: limit - n_older]


# -- direct messages: who is who ------------------------------------------------------
def my_identity(s: Client) -> str:
    """Whose side of a conversation this client is: the account, else the nick
    (as the registry's ``identity``)."""
    return casefold(s.account or s.nick)


def partner_of(key: str, me: str) -> str:
    a, _, b = key[1:].partition(" ")
    return b if a == me else a


def sender_identity(tags: str, line: str) -> str:
    for tag in tags.split(";"):
        if tag.startswith("account="):
            return casefold(unescape_tag_value(tag[8:]))
    source = parse(line).source or ""
    return casefold(source.partition("!")[0])


def partner_name(store: Store, key: str, me: str, online: str | None) -> str | None:
    """The other party of a conversation as they spell their nick: their current
    nick when online, else the nick on their latest message in it, else the
    name this client last sent to; None when there is no conversation at all."""
    if online is not None:
        return online
    partner = partner_of(key, me)
    mine: str | None = None
    for _, _, _, tags, line in reversed(store.history(key, limit=50)):
        line = line.partition("\n")[0]  # a multiline message's first line
        msg = parse(line)
        if sender_identity(tags, line) == partner:
            return (msg.source or "").partition("!")[0] or None
        if mine is None and msg.params:
            mine = msg.params[0]
    return mine


def name_parties(s: Client, rows: list[Row], groups: list[list[Message]], key: str, partner: str) -> None:
    """In a conversation's history, each message's target is the party it was
    sent to, spelled as now: the partner for this client's own messages, this
    client's nick for the partner's (the spec lets servers rewrite them so).
    ``groups`` are ``rows`` rendered, a group per row (a multiline message's
    batch opener names the target in its third parameter)."""
    me = my_identity(s)
    self_talk = partner_of(key, me) == me
    for (_, _, _, tags, line), group in zip(rows, groups, strict=True):
        mine = not self_talk and sender_identity(tags, line.partition("\n")[0]) == me
        name = partner if mine else s.nick
        for m in group:
            if m.verb == "BATCH":
                if len(m.params) == 3:
                    m.params = (*m.params[:2], name)
            elif m.params:
                m.params = (name, *m.params[1:])


def targets(s: Client, start: str, end: str, limit: int) -> None:
    """TARGETS: channels this client is in and conversations it had, with
    activity strictly between the two timestamps (BETWEEN's semantics), each
    with the time of its latest message there; the ``limit`` nearest ``start``,
    in ascending order of that time."""
    try:
        if not (start.startswith("timestamp=") and end.startswith("timestamp=")):
            raise ValueError
        t1 = parse_timestamp(start.partition("=")[2])
        t2 = parse_timestamp(end.partition("=")[2])
    except (ValueError, OverflowError):
        raise fail("INVALID_PARAMS", "TARGETS", text="Invalid timestamp") from None
    lo, hi = min(t1, t2), max(t1, t2)
    newest = t1 > t2  # counted from the first timestamp: backwards in time, the latest ones
    s.request("history_barrier")
    store = s.worker.get_store()
    mine = [key for key, members in list(s.worker.channels.items()) if s.sid in members]
    found = [(s.worker.channel_names.get(k, k), t) for k, t in store.targets(mine, lo, hi, limit, newest)]
    me = my_identity(s)
    for key, t in store.dm_targets(me, lo, hi, limit, newest):
        name = partner_name(store, key, me, None)
        if name is not None:
            found.append((name, t))
    found.sort(key=lambda x: x[1], reverse=newest)
    found = sorted(found[:limit], key=lambda x: x[1])

    src = s.config.server_name
    lines = [Message("CHATHISTORY", ("TARGETS", name, server_time(t)), src) for name, t in found]
    s.emit(in_batch(s, "draft/chathistory-targets", (), lines))
