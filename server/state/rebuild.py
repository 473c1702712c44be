"""Rebuilding a fresh registry from what the workers know (after the manager died).

Each worker re-registers its registered clients (:class:`SessionImage`) and the
channels they are in (:class:`ChannelImage`: the latest :class:`ChannelState`
the bus pushed to it, and its local members' prefix modes). Called by
:meth:`server.bus.local.bus.Bus.restore` under the bus lock, one worker at a
time; like a registry operation it does no I/O and emits events only for what
clients must be told.

The rules:

* **Nick conflicts.** Two workers may claim one nick (a nick change whose
  result was lost with the manager). The session that connected first keeps
  it (``signon``, then the session id); the other is renamed to
  ``Guest<digits>`` and everyone who shares a channel with it, itself
  included, sees the ``NICK``.
* **Channel state.** The newest :class:`ChannelState` any worker holds wins
  (``seq``); without one, a registered channel's record from the store; else
  the defaults of a new channel (``+nt``), and nobody is given ops.
* **Membership and ops** come from each member's own worker, which saw every
  change of them through the bus.

What is not rebuilt (docs/architecture.md): pending invites, WHOWAS, clients
that had not completed registration (their workers close them), and any change
whose events no worker had fetched when the manager died.
"""

from __future__ import annotations

from server.bus.records import ChannelImage, ChannelState, NickChanged, SessionImage
from server.state.registry import Channel, Registry, User
from server.state.shared import shared


def restore(reg: Registry, worker: int, users: list[SessionImage], channels: list[ChannelImage],
            seqs: dict[str, tuple[float, int]], now: float) -> int:
    """Add one worker's clients and channels to ``reg``; returns the clients added.
    ``seqs`` remembers which state each channel was rebuilt from."""
    renames: list[tuple[User, str]] = []
    added = 0
    for im in sorted(users, key=lambda im: (im.signon, im.sid)):
        if im.sid in reg.users:
            continue
        u = User(im.sid, worker, im.ip, im.host, nick=im.nick, fold=reg.fold(im.nick), user=im.user,
                 realname=im.realname, registered=True, account=im.account, away=im.away,
                 modes=shared(frozenset(im.modes)), signon=im.signon, last_active=now, tls=im.tls)
        holder = reg.nicks.get(u.fold)
        if holder is not None:
            other = reg.users[holder]
            if (other.signon, other.sid) <= (u.signon, u.sid):
                renames.append((u, u.prefix))
                u.nick = _guest(reg, u.sid)
                u.fold = reg.fold(u.nick)
            else:
                renames.append((other, other.prefix))
                other.nick = _guest(reg, other.sid)
                other.fold = reg.fold(other.nick)
                reg.nicks[other.fold] = other.sid
        reg.users[u.sid] = u
        reg.nicks[u.fold] = u.sid
        for nick in im.monitors:
            reg.monitors.add(u.sid, reg.fold(nick), nick)
        reg.n_registered += 1
        reg.n_invisible += "i" in u.modes
        reg.n_opers += "o" in u.modes
        added += 1
    reg.max_users = max(reg.max_users, reg.n_registered)
    for ci in channels:
        members = [(sid, modes) for sid, modes in ci.members if sid in reg.users and reg.users[sid].worker == worker]
        if not members:
            continue
        ch = reg.channels.get(ci.key)
        if ch is None:
            ch = reg.channels[ci.key] = Channel(ci.name, ci.key, now)
            record = reg.registered.get(ci.key)
            if record is not None:
                reg._restore(ch, record)
        if ci.state is not None and ci.state.seq > seqs.get(ci.key, (0.0, 0)):
            _apply(ch, ci.state)
            seqs[ci.key] = ci.state.seq
        for sid, modes in members:
            if sid in ch.members:
                continue
            ch.members[sid] = modes
            ch.workers[worker] += 1
            reg.users[sid].add_channel(ci.key)
    for u, old_prefix in renames:
        reg.emit(reg._audience(u), NickChanged(u.sid, old_prefix, u.nick, tuple(u.channels), u.account))
    return added


def _apply(ch: Channel, st: ChannelState) -> None:
    ch.name, ch.created = st.name, st.created
    ch.topic, ch.topic_by, ch.topic_at = st.topic, st.topic_by, st.topic_at
    ch.modes = set(st.modes)
    ch.password, ch.limit = st.password, st.limit
    ch.bans, ch.excepts, ch.invex = list(st.bans), list(st.excepts), list(st.invex)
    ch.history = st.history


def state_of(ch: Channel, seq: tuple[float, int]) -> ChannelState:
    """What a worker keeps of ``ch`` (see :class:`ChannelState`)."""
    return ChannelState(ch.key, ch.name, ch.created, ch.topic, ch.topic_by, ch.topic_at, "".join(sorted(ch.modes)),
                        ch.password, ch.limit, tuple(ch.bans), tuple(ch.excepts), tuple(ch.invex), ch.history, seq)


def _guest(reg: Registry, sid: int) -> str:
    n = sid % 100000
    while reg.fold(f"Guest{n:05d}") in reg.nicks:
        n = (n + 1) % 100000
    return f"Guest{n:05d}"
