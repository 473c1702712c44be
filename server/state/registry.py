"""The shared registry: every user and channel on the server.

It lives in the manager process, inside :class:`server.bus.local.bus.Bus`, and is only ever
touched under the bus lock, so each method here is atomic with respect to every
other one and to the order of the bus. Methods take plain values, change state,
and *emit* events for workers through the ``emit`` callback given at
construction; they return plain data for the caller (or raise
``RemoteProtocolError`` with the numeric to answer). No I/O happens here.

Events are the typed records of :mod:`server.bus.records`. Registered channels are
kept through the ``persist_channel`` callback, which the bus turns into an effect
it stores after the locked section (never here).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from server.bus.records import (
    AccountChanged,
    AwayChanged,
    Disconnect,
    Event,
    Invited,
    InviteNotice,
    Joined,
    Kicked,
    ModeChanged,
    MonitorChange,
    MonitorStatus,
    NickChanged,
    Parted,
    Quit,
    ReadMarker,
    RealnameChanged,
    Redacted,
    TopicChanged,
    Wallops,
)
from server.protocol import (
    RemoteProtocolError,
    casefold,
    is_valid_channel,
    is_valid_nick,
    mask_match,
    numerics,
    parse_int,
)
from server.state import extban
from server.state.logins import LoginThrottle, Policy
from server.state.monitor import Monitors
from server.state.shared import NO_NAMES, toggled
from server.state.store import dm_key

Emit = Callable[[Iterable[int], Event], None]


@dataclass(slots=True)
class User:
    sid: int
    worker: int
    ip: str
    host: str
    nick: str = "*"
    fold: str = ""
    user: str = ""
    realname: str = ""
    registered: bool = False
    account: str | None = None
    away: str | None = None
    modes: frozenset[str] = NO_NAMES  # through shared()
    # the channel keys; a user in none shares one empty frozenset (216 bytes fewer per user)
    channels: set[str] | frozenset[str] = NO_NAMES
    signon: float = 0.0
    last_active: float = 0.0
    tls: bool = False

    @property
    def prefix(self) -> str:
        return f"{self.nick}!{self.user}@{self.host}"

    def add_channel(self, key: str) -> None:
        if isinstance(self.channels, set):
            self.channels.add(key)
        else:
            self.channels = {*self.channels, key}

    def drop_channel(self, key: str) -> None:
        if isinstance(self.channels, set):
            self.channels.discard(key)
            if not self.channels:
                self.channels = NO_NAMES


@dataclass(slots=True)
class Channel:
    name: str
    key: str
    created: float
    members: dict[int, str] = field(default_factory=dict)  # sid -> prefix modes, e.g. "o"
    workers: Counter[int] = field(default_factory=Counter)
    topic: str = ""
    topic_by: str = ""
    topic_at: float = 0.0
    modes: set[str] = field(default_factory=lambda: {"n", "t"})
    password: str | None = None
    limit: int | None = None
    bans: list[tuple[str, str, float]] = field(default_factory=list)
    excepts: list[tuple[str, str, float]] = field(default_factory=list)
    invex: list[tuple[str, str, float]] = field(default_factory=list)
    invites: set[str] = field(default_factory=set)
    # "b", "e" or "I" + the folded mask, for entries a server operator set: they match real addresses
    real_masks: set[str] = field(default_factory=set)
    history: bool = True
    registered: dict[str, Any] | None = None  # ChanServ record, when registered

    def lists(self, letter: str) -> list[tuple[str, str, float]]:
        return {"b": self.bans, "e": self.excepts, "I": self.invex}[letter]

    def member_prefix(self, sid: int, multi: bool = False) -> str:
        modes = self.members.get(sid, "")
        marks = ("@" if "o" in modes else "") + ("+" if "v" in modes else "")
        return marks if multi else marks[:1]


def fail(numeric: str, *params: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError(numeric, *params, text=text)


class Registry:
    """Users and channels, with the checks that must be atomic."""

    def __init__(self, emit: Emit, *, casemapping: str = "rfc1459", channel_len: int = 64,
                 max_channels: int = 0, chantypes: str = "#", max_list: int = 100) -> None:
        self.emit = emit
        self.casemapping = casemapping
        self.channel_len = channel_len
        self.max_channels = max_channels
        self.chantypes = chantypes
        self.max_list = max_list
        # server bans: (mask, reason, set by, set at, expires at or 0)
        self.klines: list[tuple[str, str, str, float, float]] = []
        # accounts (folded names) and registered channels, loaded by the bus
        self.accounts: set[str] = set()
        self.registered: dict[str, dict[str, Any]] = {}
        self.persist_channel: Callable[[str, dict[str, Any] | None], None] = lambda key, info: None
        self.history_mark: Callable[[], int] = lambda: 0  # id of the last history row, in bus order
        self.clock: Callable[[], float] = time.time  # the bus's time of the batch being applied (WHOWAS)
        # MONITOR lists; read markers (account, target) -> timestamp, loaded and kept by the bus
        self.monitors = Monitors()
        self.read_markers: dict[tuple[str, str], str] = {}
        self.persist_marker: Callable[[str, str, str], None] = lambda account, target, ts: None
        self.persist_redaction: Callable[[str, str], None] = lambda key, msgid: None
        self.users: dict[int, User] = {}
        self.nicks: dict[str, int] = {}  # folded nick -> sid (registered or not)
        self.channels: dict[str, Channel] = {}
        self.gone: dict[str, list[tuple[str, str, str, str, float]]] = {}  # WHOWAS
        self.max_users = 0
        # kept as counts: LUSERS runs at every registration, a scan would be O(users)
        self.n_registered = 0
        self.n_invisible = 0
        self.n_opers = 0
        self.logins = LoginThrottle()  # failed-login back-off, shared by every worker

    def fold(self, name: str) -> str:
        return casefold(name, self.casemapping)

    # -- connections -------------------------------------------------------
    def connect(self, sid: int, worker: int, ip: str, host: str, tls: bool = False) -> None:
        self.users[sid] = User(sid, worker, ip, ip if host == ip else host, tls=tls)  # (one string, uncloaked)

    def claim_nick(self, sid: int, nick: str) -> tuple[str, str, bool]:
        """Claim or change ``sid``'s nick. Returns (old prefix, new nick, whether
        the nick is a registered one the user is not logged in to)."""
        u = self.users[sid]
        fold = self.fold(nick)
        holder = self.nicks.get(fold)
        if holder is not None and holder != sid:
            raise fail(numerics.ERR_NICKNAMEINUSE, nick, text="Nickname is already in use")
        if u.registered and nick != u.nick:
            self._check_nick_bans(u, nick)
        old_prefix = u.prefix
        if u.fold and self.nicks.get(u.fold) == sid:
            del self.nicks[u.fold]
        self.nicks[fold] = sid
        old_nick = u.nick
        u.nick, u.fold = nick, fold
        if u.registered and old_nick != nick:
            self._remember(u, old_nick)
            self.emit(self._audience(u), NickChanged(sid, old_prefix, nick, tuple(u.channels), u.account))
            if self.fold(old_nick) != fold:
                self._monitor_status(self.fold(old_nick), old_nick, "")
                self._monitor_status(fold, nick, u.prefix)
        return old_prefix, nick, self.protected(u)

    def _check_nick_bans(self, u: User, nick: str) -> None:
        """A user banned in a channel they are in may not change nick, neither
        out of the ban nor into one (ops and voiced users may)."""
        for key in u.channels:
            ch = self.channels[key]
            if not ch.bans or ch.members.get(u.sid, ""):
                continue
            if self.is_banned(ch, u) or self.is_banned(ch, u, nick):
                raise fail(numerics.ERR_BANONCHAN, nick, ch.name,
                           text="Cannot change nickname while banned on channel")

    def protected(self, u: User) -> bool:
        """Whether ``u`` uses a registered nick without being logged in to it."""
        return u.fold in self.accounts and (u.account is None or self.fold(u.account) != u.fold)

    def register(self, sid: int, user: str, realname: str, now: float, account: str | None = None,
                 nick: str | None = None) -> dict[str, Any]:
        """Complete a registration; with ``nick``, claim it first (NICK and USER
        that arrived together cost one request)."""
        if nick is not None:
            self.claim_nick(sid, nick)
        u = self.users[sid]
        u.user, u.realname, u.account = user, realname, account
        ban = self.kline_for(u, now)
        if ban is not None:
            raise fail(numerics.ERR_YOUREBANNEDCREEP, text=f"You are banned from this server: {ban}")
        u.registered, u.signon, u.last_active = True, now, now
        self.n_registered += 1
        self.n_invisible += "i" in u.modes
        self.n_opers += "o" in u.modes
        self.max_users = max(self.max_users, self.n_registered)
        self._monitor_status(u.fold, u.nick, u.prefix)
        return {**self.lusers(), "protected": self.protected(u)}

    # -- accounts ------------------------------------------------------------
    def account_created(self, fold: str) -> None:
        self.accounts.add(fold)

    def account_dropped(self, fold: str) -> None:
        self.accounts.discard(fold)
        for u in self.users.values():
            if u.account is not None and self.fold(u.account) == fold:
                self.login(u.sid, None)

    def login(self, sid: int, account: str | None) -> None:
        """Log ``sid`` in to ``account`` (None: out); account-notify goes out."""
        u = self.users[sid]
        if u.account == account:
            return
        u.account = account
        if u.registered:
            self.emit(self._audience(u), AccountChanged(sid, u.prefix, account or "*", tuple(u.channels)))
            self._monitor_change(u, "ACCOUNT", (account or "*",))

    # -- failed-login back-off (server/state/logins.py) --------------------------
    def login_attempt(self, address: str | None, account: str | None, now: float,
                      policy: tuple[int, float, float, float]) -> float:
        """Charge a password check; 0, or the seconds to wait (nothing charged)."""
        return self.logins.attempt(address, account, now, Policy(*policy))

    def login_done(self, address: str | None, account: str | None, ok: bool) -> None:
        """The check succeeded (``ok``), or it never ran: refund its charge."""
        if ok:
            self.logins.succeeded(address, account)
        else:
            self.logins.refund(address, account)

    def set_user_mode(self, sid: int, mode: str, on: bool) -> None:
        u = self.users[sid]
        if (mode in u.modes) == on:
            return
        u.modes = toggled(u.modes, mode, on)
        if u.registered:
            step = 1 if on else -1
            if mode == "i":
                self.n_invisible += step
            elif mode == "o":
                self.n_opers += step

    def set_away(self, sid: int, message: str | None) -> None:
        u = self.users[sid]
        u.away = message or None
        self.emit(self._audience(u), AwayChanged(sid, u.prefix, u.away, tuple(u.channels), u.account))
        self._monitor_change(u, "AWAY", (u.away,) if u.away else ())

    def set_realname(self, sid: int, realname: str) -> None:
        u = self.users[sid]
        u.realname = realname
        self.emit(self._audience(u), RealnameChanged(sid, u.prefix, realname, tuple(u.channels), u.account))
        self._monitor_change(u, "SETNAME", (realname,))

    def disconnect(self, sid: int, reason: str) -> None:
        """Forget a user; everyone sharing a channel sees the QUIT."""
        u = self.users.pop(sid, None)
        if u is None:
            return
        if u.fold and self.nicks.get(u.fold) == sid:
            del self.nicks[u.fold]
        self.monitors.clear(sid)
        if not u.registered:
            return
        self.n_registered -= 1
        self.n_invisible -= "i" in u.modes
        self.n_opers -= "o" in u.modes
        self._remember(u, u.nick)
        audience = self._audience(u)
        chans = tuple(u.channels)
        for key in chans:
            self._remove_member(self.channels[key], u)
        self.emit(audience, Quit(sid, u.prefix, reason, chans, u.account))
        self._monitor_status(u.fold, u.nick, "")

    def drop_worker(self, worker: int, reason: str) -> int:
        """A worker died: forget all of its users at once."""
        gone = [sid for sid, u in self.users.items() if u.worker == worker]
        for sid in gone:
            self.disconnect(sid, reason)
        return len(gone)

    def _remember(self, u: User, nick: str) -> None:
        entries = self.gone.setdefault(self.fold(nick), [])
        entries.insert(0, (nick, u.user, u.host, u.realname, self.clock()))
        del entries[10:]
        if len(self.gone) > 10000:
            self.gone.pop(next(iter(self.gone)))

    def _audience(self, u: User) -> set[int]:
        """Workers holding anyone who shares a channel with ``u``, and u's own."""
        workers = {u.worker}
        for key in u.channels:
            workers.update(self.channels[key].workers)
        return workers

    # -- channels ----------------------------------------------------------
    def join(self, sid: int, name: str, password: str | None, now: float) -> dict[str, Any] | None:
        u = self.users[sid]
        if not is_valid_channel(name, self.chantypes, self.channel_len):
            raise fail(numerics.ERR_NOSUCHCHANNEL, name, text="No such channel")
        key = self.fold(name)
        ch = self.channels.get(key)
        if ch is not None and sid in ch.members:
            return None
        if self.max_channels and len(u.channels) >= self.max_channels:
            raise fail(numerics.ERR_TOOMANYCHANNELS, name, text="You have joined too many channels")
        if ch is None:
            ch = self.channels[key] = Channel(name, key, now)
            record = self.registered.get(key)
            if record is not None:
                self._restore(ch, record)
                modes = self._access(ch, u)
            else:
                modes = "o"
        else:
            self._check_entry(ch, u, password)
            modes = self._access(ch, u)
        ch.invites.discard(u.fold)
        ch.members[sid] = modes
        ch.workers[u.worker] += 1
        u.add_channel(key)
        self.emit(ch.workers, Joined(key, ch.name, sid, u.prefix, u.account or "*", u.realname, u.away))
        # draft/read-marker: after the JOIN, before the NAMES that follow the result
        self.emit((u.worker,), ReadMarker((sid,), ch.name, self._marker(u, key)))
        return self.channel_info(ch)

    def _restore(self, ch: Channel, record: dict[str, Any]) -> None:
        ch.registered = record
        ch.name = record["name"]
        ch.topic, ch.topic_by, ch.topic_at = record["topic"], record["topic_by"], record["topic_at"]
        ch.modes = set(record["modes"]) & set("imnst")
        ch.history = record["history"]
        ch.created = record["created"]

    def _access(self, ch: Channel, u: User) -> str:
        """Prefix modes a joining user gets from the channel's access list."""
        if ch.registered is None or u.account is None:
            return ""
        level = ch.registered["access"].get(self.fold(u.account))
        return "o" if level in ("founder", "op") else "v" if level == "voice" else ""

    def _save(self, ch: Channel) -> None:
        """Keep a registered channel's record (and the database) up to date."""
        if ch.registered is None:
            return
        ch.registered.update(name=ch.name, topic=ch.topic, topic_by=ch.topic_by, topic_at=ch.topic_at,
                             modes="".join(sorted(ch.modes)), history=ch.history)
        self.persist_channel(ch.key, ch.registered)

    def chan_register(self, sid: int, name: str, now: float) -> str:
        u = self.users[sid]
        ch = self.channels.get(self.fold(name))
        if ch is None or sid not in ch.members:
            raise fail(numerics.ERR_NOTONCHANNEL, name, text="You're not on that channel")
        if u.account is None:
            raise RemoteProtocolError.fail("REGISTER", "ACCOUNT_REQUIRED", ch.name,
                                           text="You must be logged in to register a channel")
        if "o" not in ch.members[sid]:
            raise fail(numerics.ERR_CHANOPRIVSNEEDED, ch.name, text="You're not channel operator")
        if ch.key in self.registered:
            raise RemoteProtocolError.fail("REGISTER", "CHANNEL_EXISTS", ch.name,
                                           text="That channel is already registered")
        record = {"name": ch.name, "founder": self.fold(u.account), "topic": ch.topic, "topic_by": ch.topic_by,
                  "topic_at": ch.topic_at, "modes": "".join(sorted(ch.modes)), "history": ch.history,
                  "created": ch.created, "access": {self.fold(u.account): "founder"}}
        self.registered[ch.key] = ch.registered = record
        self.persist_channel(ch.key, record)
        return ch.name

    def _registered_as_founder(self, sid: int, name: str) -> tuple[Channel | None, dict[str, Any]]:
        u = self.users[sid]
        key = self.fold(name)
        record = self.registered.get(key)
        if record is None:
            raise RemoteProtocolError.fail("CHANSERV", "NOT_REGISTERED", name, text="That channel is not registered")
        if u.account is None or record["access"].get(self.fold(u.account)) != "founder":
            raise fail(numerics.ERR_CHANOPRIVSNEEDED, record["name"], text="You are not the channel's founder")
        return self.channels.get(key), record

    def chan_drop(self, sid: int, name: str) -> str:
        ch, record = self._registered_as_founder(sid, name)
        key = self.fold(name)
        del self.registered[key]
        if ch is not None:
            ch.registered = None
        self.persist_channel(key, None)
        return str(record["name"])

    def chan_access(self, sid: int, name: str, account: str, level: str | None) -> str:
        _, record = self._registered_as_founder(sid, name)
        fold = self.fold(account)
        if fold not in self.accounts:
            raise RemoteProtocolError.fail("CHANSERV", "NO_SUCH_ACCOUNT", account, text="No such account")
        if record["access"].get(fold) == "founder":
            raise RemoteProtocolError.fail("CHANSERV", "INVALID_PARAMS", account,
                                           text="The founder's access cannot be changed")
        if level is None:
            record["access"].pop(fold, None)
        else:
            record["access"][fold] = level
        self.persist_channel(self.fold(name), record)
        return str(record["name"])

    def chan_info(self, name: str) -> dict[str, Any] | None:
        record = self.registered.get(self.fold(name))
        return dict(record) if record is not None else None

    def set_history(self, sid: int, name: str, on: bool) -> str:
        ch = self.channels.get(self.fold(name))
        if ch is None:
            raise fail(numerics.ERR_NOSUCHCHANNEL, name, text="No such channel")
        if "o" not in ch.members.get(sid, ""):
            raise fail(numerics.ERR_CHANOPRIVSNEEDED, ch.name, text="You're not channel operator")
        ch.history = on
        self._save(ch)
        return ch.name

    def history_target(self, sid: int, target: str) -> tuple[str, str | None] | None:
        """The history key ``sid`` may read for ``target`` and its display name,
        or None when it may not: a channel's history follows the channel's entry
        rules (ban, invite, key, secret); a conversation is only its two people's.
        For a conversation the name is the other party's nick when they are
        online, else None (server/irc/history.py finds it in the rows)."""
        u = self.users[sid]
        if target[:1] in self.chantypes:
            ch = self.channels.get(self.fold(target))
            if ch is None:
                record = self.registered.get(self.fold(target))
                return (self.fold(target), record["name"]) if record and record.get("history", True) else None
            if sid in ch.members:
                return ch.key, ch.name
            if "s" in ch.modes or ch.password is not None:
                return None
            try:
                self._check_entry(ch, u, None)
            except RemoteProtocolError:
                return None
            return ch.key, ch.name
        if not is_valid_nick(target, 64):
            return None
        other = self.find(target)
        other_id = self.identity(other) if other is not None else self.fold(target)
        return dm_key(self.identity(u), other_id), other.nick if other is not None else None

    def identity(self, u: User) -> str:
        """Whose conversation a DM belongs to: the account, else the nick."""
        return self.fold(u.account) if u.account else u.fold

    def _check_entry(self, ch: Channel, u: User, password: str | None) -> None:
        invited = u.fold in ch.invites or self._listed(ch, "I", u)
        if ch.limit is not None and len(ch.members) >= ch.limit and not invited:
            raise fail(numerics.ERR_CHANNELISFULL, ch.name, text="Cannot join channel (+l)")
        if "i" in ch.modes and not invited:
            raise fail(numerics.ERR_INVITEONLYCHAN, ch.name, text="Cannot join channel (+i)")
        if ch.password is not None and password != ch.password:
            raise fail(numerics.ERR_BADCHANNELKEY, ch.name, text="Cannot join channel (+k)")
        if not invited and self.is_banned(ch, u):
            raise fail(numerics.ERR_BANNEDFROMCHAN, ch.name, text="Cannot join channel (+b)")

    def is_banned(self, ch: Channel, u: User, nick: str | None = None) -> bool:
        """Whether ``u`` (or ``u`` under ``nick``) is banned in ``ch``."""
        return bool(ch.bans) and self._listed(ch, "b", u, nick) and not self._listed(ch, "e", u, nick)

    def _listed(self, ch: Channel, letter: str, u: User, nick: str | None = None) -> bool:
        """Whether a ban, exception or invite entry matches ``u``. Every entry
        matches the host others see (the cloak); only entries a server operator
        set match the real address too, so a channel operator cannot learn a
        cloaked user's address by banning guesses (docs/security.md)."""
        entries = ch.lists(letter)
        if not entries:
            return False
        nick = u.nick if nick is None else nick
        prefix = f"{nick}!{u.user}@{u.host}"
        real = f"{nick}!{u.user}@{u.ip}"
        return any(self._entry_matches(ch, letter, m, u, prefix, real, mute=False) for m, _, _ in entries)

    def _entry_matches(self, ch: Channel, letter: str, entry: str, u: User, prefix: str, real: str,
                       mute: bool) -> bool:
        """One list entry against ``u`` (server/state/extban.py): an ``a:`` entry by
        account, a hostmask by the cloaked address, or by the real one when a
        server operator set it (``ch.real_masks``)."""
        cm, reals = self.casemapping, ch.real_masks
        key = letter + self.fold(entry)
        return extban.matches(entry, u.account, cm, mute,
                              lambda mask: mask_match(mask, prefix, cm)
                              or (bool(reals) and key in reals and mask_match(mask, real, cm)))

    def is_muted(self, ch: Channel, u: User) -> bool:
        """An ``m:`` entry in +b matches ``u`` and no ``m:`` entry in +e does."""
        prefix, real = u.prefix, f"{u.nick}!{u.user}@{u.ip}"
        return (any(self._entry_matches(ch, "b", m, u, prefix, real, mute=True) for m, _, _ in ch.bans)
                and not any(self._entry_matches(ch, "e", m, u, prefix, real, mute=True) for m, _, _ in ch.excepts))

    def channel_info(self, ch: Channel) -> dict[str, Any]:
        return {
            "name": ch.name,
            "key": ch.key,
            "topic": ch.topic,
            "topic_by": ch.topic_by,
            "topic_at": ch.topic_at,
            "secret": "s" in ch.modes,
            "history": ch.history,
            "history_upto": self.history_mark(),
            "modes": "".join(sorted(ch.modes)) + ("k" if ch.password is not None else "")
            + ("l" if ch.limit is not None else ""),
            "created": ch.created,
            "members": [
                (self.users[sid].nick, self.users[sid].user, self.users[sid].host, modes,
                 self.users[sid].away is not None)
                for sid, modes in ch.members.items()
            ],
        }

    def mode_info(self, sid: int, name: str) -> dict[str, Any]:
        """What ``MODE #channel`` shows (the key only to members)."""
        ch = self.channels.get(self.fold(name))
        if ch is None:
            raise fail(numerics.ERR_NOSUCHCHANNEL, name, text="No such channel")
        member = sid in ch.members
        flags = "".join(sorted(ch.modes))
        args = []
        if ch.password is not None:
            flags += "k"
            args.append(ch.password if member else "*")
        if ch.limit is not None:
            flags += "l"
            args.append(str(ch.limit))
        return {"name": ch.name, "modes": "+" + flags, "args": args, "created": ch.created}

    def mode_list(self, sid: int, name: str, letter: str) -> dict[str, Any]:
        ch = self.channels.get(self.fold(name))
        if ch is None:
            raise fail(numerics.ERR_NOSUCHCHANNEL, name, text="No such channel")
        if letter != "b" and sid not in ch.members:
            raise fail(numerics.ERR_CHANOPRIVSNEEDED, ch.name, text="You're not channel operator")
        return {"name": ch.name, "entries": list(ch.lists(letter))}

    def mode(self, sid: int, name: str, changes: list[tuple[bool, str, str | None]], now: float) -> list[Any]:
        """Apply channel mode changes atomically; one MODE line goes to members.
        Returns the errors to show the sender (numeric, params, text)."""
        u = self.users[sid]
        ch = self.channels.get(self.fold(name))
        if ch is None:
            raise fail(numerics.ERR_NOSUCHCHANNEL, name, text="No such channel")
        if "o" not in ch.members.get(sid, "") and "o" not in u.modes:
            raise fail(numerics.ERR_CHANOPRIVSNEEDED, ch.name, text="You're not channel operator")
        errors: list[tuple[str, tuple[str, ...], str]] = []
        applied: list[tuple[bool, str, str | None]] = []
        for on, letter, arg in changes:
            if letter in "ov":
                target = self.find(arg or "")
                if target is None:
                    errors.append((numerics.ERR_NOSUCHNICK, (arg or "*",), "No such nick/channel"))
                    continue
                if target.sid not in ch.members:
                    errors.append((numerics.ERR_USERNOTINCHANNEL, (target.nick, ch.name),
                                   "They aren't on that channel"))
                    continue
                current = ch.members[target.sid]
                if (letter in current) == on:
                    continue
                ch.members[target.sid] = (current + letter) if on else current.replace(letter, "")
                applied.append((on, letter, target.nick))
            elif letter in "beI":
                entries = ch.lists(letter)
                normal = extban.normalize(arg or "", letter)
                if normal is None:
                    errors.append((numerics.ERR_INVALIDMODEPARAM, (ch.name, letter, arg or "*"),
                                   "Invalid extended ban"))
                    continue
                mask = normal
                fold = self.fold(mask)
                present = next((e for e in entries if self.fold(e[0]) == fold), None)
                if on and present is None:
                    if len(entries) >= self.max_list:
                        errors.append((numerics.ERR_BANLISTFULL, (ch.name, mask), "Channel list is full"))
                        continue
                    entries.append((mask, u.prefix, now))
                    applied.append((on, letter, mask))
                    if "o" in u.modes:
                        ch.real_masks.add(letter + fold)
                elif not on and present is not None:
                    entries.remove(present)
                    applied.append((on, letter, present[0]))
                    ch.real_masks.discard(letter + fold)
            elif letter == "k":
                if on:
                    key = (arg or "")[:32]
                    if not key or any(c in key for c in " ,:"):
                        errors.append((numerics.ERR_INVALIDKEY, (ch.name,), "Key is not well-formed"))
                        continue
                    ch.password = key
                    applied.append((on, "k", key))
                elif ch.password is not None:
                    ch.password = None
                    applied.append((on, "k", "*"))
            elif letter == "l":
                if on:
                    limit = parse_int(arg or "", 1)
                    if limit is None:
                        errors.append((numerics.ERR_INVALIDMODEPARAM, (ch.name, "l", arg or "*"),
                                       "Invalid limit"))
                        continue
                    if limit == ch.limit:
                        continue
                    ch.limit = limit
                    applied.append((on, "l", str(limit)))
                elif ch.limit is not None:
                    ch.limit = None
                    applied.append((on, "l", None))
            elif letter in "imnst":
                if (letter in ch.modes) != on:
                    (ch.modes.add if on else ch.modes.discard)(letter)
                    applied.append((on, letter, None))
            else:
                errors.append((numerics.ERR_UNKNOWNMODE, (letter,), "is unknown mode char to me"))
        if applied:
            modestr, args = "", []
            sign = None
            for on, letter, arg in applied:
                if on != sign:
                    modestr += "+" if on else "-"
                    sign = on
                modestr += letter
                if arg is not None:
                    args.append(arg)
            self.emit(ch.workers, ModeChanged(ch.key, ch.name, u.prefix, modestr, tuple(args), u.account))
            self._save(ch)
        return errors

    def kick(self, sid: int, name: str, nick: str, reason: str) -> None:
        u = self.users[sid]
        ch = self.channels.get(self.fold(name))
        if ch is None:
            raise fail(numerics.ERR_NOSUCHCHANNEL, name, text="No such channel")
        if sid not in ch.members and "o" not in u.modes:
            raise fail(numerics.ERR_NOTONCHANNEL, ch.name, text="You're not on that channel")
        if "o" not in ch.members.get(sid, "") and "o" not in u.modes:
            raise fail(numerics.ERR_CHANOPRIVSNEEDED, ch.name, text="You're not channel operator")
        target = self.find(nick)
        if target is None or target.sid not in ch.members:
            raise fail(numerics.ERR_USERNOTINCHANNEL, nick, ch.name, text="They aren't on that channel")
        self.emit(ch.workers, Kicked(ch.key, ch.name, u.prefix, target.sid, target.nick, reason, u.account))
        self._remove_member(ch, target)

    def invite(self, sid: int, nick: str, name: str) -> str:
        u = self.users[sid]
        target = self.find(nick)
        if target is None:
            raise fail(numerics.ERR_NOSUCHNICK, nick, text="No such nick/channel")
        ch = self.channels.get(self.fold(name))
        if ch is not None:
            if sid not in ch.members:
                raise fail(numerics.ERR_NOTONCHANNEL, ch.name, text="You're not on that channel")
            if "i" in ch.modes and "o" not in ch.members[sid]:
                raise fail(numerics.ERR_CHANOPRIVSNEEDED, ch.name, text="You're not channel operator")
            if target.sid in ch.members:
                raise fail(numerics.ERR_USERONCHANNEL, target.nick, ch.name, text="is already on channel")
            ch.invites.add(target.fold)
            shown = ch.name
            self.emit(ch.workers, InviteNotice(ch.key, sid, u.prefix, target.sid, target.nick, shown, u.account))
        else:
            shown = name
        self.emit((target.worker,), Invited(target.sid, u.prefix, target.nick, shown, u.account))
        return target.nick

    def list_channels(self, sid: int, masks: list[str], min_users: int, max_users: int,
                      exclude: Iterable[str] = ()) -> list[tuple[str, int, str]]:
        """LIST: channels matching any of ``masks`` (all when empty), none of
        ``exclude``, with between ``min_users`` and ``max_users`` (-1: any) members."""
        u = self.users[sid]
        exclude = list(exclude)
        out = []
        for key, ch in self.channels.items():
            if "s" in ch.modes and key not in u.channels:
                continue
            n = len(ch.members)
            if n < min_users or (max_users >= 0 and n > max_users):
                continue
            if masks and not any(mask_match(m, ch.name, self.casemapping) for m in masks):
                continue
            if exclude and any(mask_match(m, ch.name, self.casemapping) for m in exclude):
                continue
            modes = "+" + "".join(sorted(ch.modes))
            out.append((ch.name, n, f"[{modes}] {ch.topic}" if ch.topic else f"[{modes}]"))
        return out

    def who(self, sid: int, mask: str) -> list[dict[str, Any]]:
        """WHO: a channel's members, or users matching a mask (invisible users only
        when they share a channel with the asker)."""
        asker = self.users[sid]
        rows = []
        ch = self.channels.get(self.fold(mask))
        if ch is not None:
            member = sid in ch.members or "o" in asker.modes
            if "s" in ch.modes and not member:
                return []
            for msid, modes in ch.members.items():
                u = self.users[msid]
                # to an outsider, a +i member is as hidden as with a mask (Modern IRC: WHO)
                if not member and "i" in u.modes and not (u.channels & asker.channels):
                    continue
                rows.append(self._who_row(u, ch.name, modes))
            return rows
        if mask in ("0", "*", ""):
            mask = "*"
        for u in self.users.values():
            if not u.registered:
                continue
            if "i" in u.modes and u.sid != sid and "o" not in asker.modes and not (u.channels & asker.channels):
                continue
            if not any(mask_match(mask, v, self.casemapping) for v in (u.nick, u.user, u.host, u.realname,
                                                                      u.prefix)):
                continue
            shown = next((k for k in u.channels if "s" not in self.channels[k].modes), None)
            chan = self.channels[shown] if shown else None
            rows.append(self._who_row(u, chan.name if chan else "*", chan.members[u.sid] if chan else ""))
            if len(rows) >= 500:
                break
        return rows

    def _who_row(self, u: User, channel: str, modes: str) -> dict[str, Any]:
        return {"channel": channel, "user": u.user, "host": u.host, "ip": u.ip, "nick": u.nick,
                "away": u.away is not None, "oper": "o" in u.modes, "modes": modes, "realname": u.realname,
                "account": u.account, "idle": u.last_active, "bot": "B" in u.modes}

    # -- operators -----------------------------------------------------------
    def _require_oper(self, sid: int) -> User:
        u = self.users[sid]
        if "o" not in u.modes:
            raise fail(numerics.ERR_NOPRIVILEGES, text="Permission Denied- You're not an IRC operator")
        return u

    def kill(self, sid: int, nick: str, reason: str) -> str:
        oper = self._require_oper(sid)
        target = self.find(nick)
        if target is None:
            raise fail(numerics.ERR_NOSUCHNICK, nick, text="No such nick/channel")
        self.emit((target.worker,), Disconnect(target.sid, f"Killed ({oper.nick} ({reason}))"))
        return target.nick

    def wallops(self, sid: int, text: str) -> None:
        oper = self._require_oper(sid)
        workers = {u.worker for u in self.users.values()}
        self.emit(workers, Wallops(oper.prefix, text))

    def banned(self, sid: int, now: float) -> str | None:
        """The reason ``sid`` is K-lined, before it registers (REGISTER before
        connect must not create accounts for a banned address)."""
        return self.kline_for(self.users[sid], now)

    def kline_for(self, u: User, now: float) -> str | None:
        self.klines = [k for k in self.klines if not k[4] or k[4] > now]
        for mask, reason, _, _, _ in self.klines:
            for subject in (f"{u.user}@{u.host}", f"{u.user}@{u.ip}", f"{u.nick}!{u.user}@{u.ip}"):
                if mask_match(mask, subject, self.casemapping):
                    return reason
        return None

    def kline(self, sid: int, mask: str, duration: float, reason: str, now: float) -> int:
        """Ban ``user@host`` masks from the server; matching users are cut off now.
        Returns how many were."""
        oper = self._require_oper(sid)
        if "@" not in mask:
            mask = f"*@{mask}"
        self.klines = [k for k in self.klines if self.fold(k[0]) != self.fold(mask)]
        self.klines.append((mask, reason, oper.nick, now, now + duration if duration else 0.0))
        hit = 0
        for u in list(self.users.values()):
            if u.registered and self.kline_for(u, now) is not None and u.sid != sid:
                self.emit((u.worker,), Disconnect(u.sid, f"K-Lined: {reason}"))
                hit += 1
        return hit

    def unkline(self, sid: int, mask: str) -> bool:
        self._require_oper(sid)
        if "@" not in mask:
            mask = f"*@{mask}"
        before = len(self.klines)
        self.klines = [k for k in self.klines if self.fold(k[0]) != self.fold(mask)]
        return len(self.klines) < before

    def list_klines(self, sid: int) -> list[tuple[str, str, str, float, float]]:
        self._require_oper(sid)
        return list(self.klines)

    def part(self, sid: int, name: str, reason: str) -> None:
        u = self.users[sid]
        ch = self._member_channel(u, name)
        self.emit(ch.workers, Parted(ch.key, ch.name, sid, u.prefix, reason, u.account))
        self._remove_member(ch, u)

    def part_all(self, sid: int) -> None:
        u = self.users[sid]
        for key in list(u.channels):
            self.part(sid, self.channels[key].name, "Left all channels")

    def _member_channel(self, u: User, name: str) -> Channel:
        ch = self.channels.get(self.fold(name))
        if ch is None:
            raise fail(numerics.ERR_NOSUCHCHANNEL, name, text="No such channel")
        if u.sid not in ch.members:
            raise fail(numerics.ERR_NOTONCHANNEL, ch.name, text="You're not on that channel")
        return ch

    def _remove_member(self, ch: Channel, u: User) -> None:
        del ch.members[u.sid]
        ch.workers[u.worker] -= 1
        if ch.workers[u.worker] <= 0:
            del ch.workers[u.worker]
        u.drop_channel(ch.key)
        if not ch.members:
            del self.channels[ch.key]

    def topic(self, sid: int, name: str, text: str | None, now: float) -> dict[str, Any] | None:
        u = self.users[sid]
        key = self.fold(name)
        ch = self.channels.get(key)
        if ch is None:
            raise fail(numerics.ERR_NOSUCHCHANNEL, name, text="No such channel")
        if text is None:
            if "s" in ch.modes and sid not in ch.members:
                raise fail(numerics.ERR_NOTONCHANNEL, ch.name, text="You're not on that channel")
            return {"name": ch.name, "topic": ch.topic, "topic_by": ch.topic_by, "topic_at": ch.topic_at}
        if sid not in ch.members:
            raise fail(numerics.ERR_NOTONCHANNEL, ch.name, text="You're not on that channel")
        if "t" in ch.modes and "o" not in ch.members[sid]:
            raise fail(numerics.ERR_CHANOPRIVSNEEDED, ch.name, text="You're not channel operator")
        ch.topic, ch.topic_by, ch.topic_at = text, u.prefix, now
        self.emit(ch.workers, TopicChanged(ch.key, ch.name, u.prefix, text, u.account))
        self._save(ch)
        return None

    def names(self, sid: int, name: str) -> dict[str, Any] | None:
        ch = self.channels.get(self.fold(name))
        if ch is None or ("s" in ch.modes and sid not in ch.members):
            return None
        return self.channel_info(ch)

    # -- messages (the hot path) ------------------------------------------
    def check_send(self, sid: int, ch: Channel) -> None:
        modes = ch.members.get(sid)
        if modes is None:
            if "n" in ch.modes:
                raise fail(numerics.ERR_CANNOTSENDTOCHAN, ch.name, text="Cannot send to channel (no external messages)")
            modes = ""
        if modes:
            return  # ops and voiced users may always speak
        if "m" in ch.modes:
            raise fail(numerics.ERR_CANNOTSENDTOCHAN, ch.name, text="Cannot send to channel (+m)")
        if ch.bans and self.is_banned(ch, self.users[sid]):
            raise fail(numerics.ERR_CANNOTSENDTOCHAN, ch.name, text="Cannot send to channel (+b)")
        if ch.bans and self.is_muted(ch, self.users[sid]):
            raise fail(numerics.ERR_CANNOTSENDTOCHAN, ch.name, text="Cannot send to channel (muted)")

    # -- queries -----------------------------------------------------------
    def find(self, nick: str) -> User | None:
        sid = self.nicks.get(self.fold(nick))
        if sid is None:
            return None
        u = self.users[sid]
        return u if u.registered else None

    def lusers(self) -> dict[str, Any]:
        registered = self.n_registered
        return {
            "users": registered,
            "invisible": self.n_invisible,
            "unknown": len(self.users) - registered,
            "operators": self.n_opers,
            "channels": len(self.channels),
            "max_users": self.max_users,
        }

    def whois(self, sid: int, nick: str) -> dict[str, Any]:
        u = self.find(nick)
        if u is None:
            raise fail(numerics.ERR_NOSUCHNICK, nick, text="No such nick/channel")
        asker = self.users[sid]
        chans = []
        for key in u.channels:
            ch = self.channels[key]
            if "s" in ch.modes and key not in asker.channels and sid != u.sid:
                continue
            chans.append((ch.member_prefix(u.sid, multi=True), ch.name))
        return {
            "nick": u.nick, "user": u.user, "host": u.host, "ip": u.ip, "realname": u.realname,
            "channels": chans, "away": u.away, "operator": "o" in u.modes, "account": u.account,
            "signon": u.signon, "sid": u.sid, "worker": u.worker, "last_active": u.last_active,
            "modes": "".join(sorted(u.modes)), "tls": u.tls,
        }

    def whowas(self, nick: str) -> list[tuple[str, str, str, str, float]]:
        return list(self.gone.get(self.fold(nick), ()))

    def ison(self, nicks: list[str]) -> list[str]:
        return [u.nick for n in nicks if (u := self.find(n)) is not None]

    def userhost(self, nicks: list[str]) -> list[tuple[str, bool, bool, str, str]]:
        out = []
        for n in nicks[:5]:
            u = self.find(n)
            if u is not None:
                out.append((u.nick, "o" in u.modes, u.away is not None, u.user, u.host))
        return out

    # -- MONITOR (server/state/monitor.py) --------------------------------------
    def _monitor_status(self, fold: str, nick: str, prefix: str) -> None:
        """730 (``prefix``) or 731 (``prefix`` empty) for whoever monitors ``nick``."""
        watchers = self.monitors.of(fold)
        if watchers:
            self.emit({self.users[w].worker for w in watchers}, MonitorStatus(watchers, nick, prefix))

    def _monitor_change(self, u: User, verb: str, params: tuple[str, ...]) -> None:
        """extended-monitor: to watchers that do not already see it through a channel."""
        if not u.registered:
            return
        watchers = tuple(w for w in self.monitors.of(u.fold)
                         if w != u.sid and not (self.users[w].channels & u.channels))
        if watchers:
            self.emit({self.users[w].worker for w in watchers}, MonitorChange(watchers, u.prefix, verb, params))

    def monitor(self, sid: int, sub: str, targets: list[str], limit: int) -> dict[str, Any]:
        """MONITOR ``+``/``-``/``C``/``L``/``S``. Returns ``online`` (prefixes),
        ``offline`` (nicks), ``listing`` (the list after the change: the
        worker keeps a copy for a new manager) and ``full`` (the targets not
        added because the list reached ``limit``)."""
        mon = self.monitors
        out: dict[str, Any] = {"online": [], "offline": [], "listing": [], "full": []}
        if sub == "+":
            for i, nick in enumerate(targets):
                fold = self.fold(nick)
                if mon.has(sid, fold):
                    continue
                if mon.count(sid) >= limit:
                    out["full"] = targets[i:]
                    break
                mon.add(sid, fold, nick)
                self._status_into(out, nick)
        elif sub == "-":
            for nick in targets:
                mon.remove(sid, self.fold(nick))
        elif sub == "C":
            mon.clear(sid)
        elif sub == "S":
            for nick in mon.listing(sid):
                self._status_into(out, nick)
        out["listing"] = mon.listing(sid)
        return out

    def _status_into(self, out: dict[str, Any], nick: str) -> None:
        u = self.find(nick)
        if u is not None:
            out["online"].append(u.prefix)
        else:
            out["offline"].append(nick)

    # -- draft/read-marker ---------------------------------------------------------
    def _marker(self, u: User, key: str) -> str:
        ts = self.read_markers.get((self.fold(u.account), key)) if u.account else None
        return f"timestamp={ts}" if ts else "*"

    def markread(self, sid: int, target: str, timestamp: str | None) -> str:
        """Get (``timestamp`` None) or raise the read marker of ``sid``'s account
        for ``target``; returns the stored value (``timestamp=...`` or ``*``). A
        change goes to every other connection of the account."""
        u = self.users[sid]
        key = self.fold(target)
        if timestamp is None or u.account is None:
            return self._marker(u, key)
        account = self.fold(u.account)
        old = self.read_markers.get((account, key))
        if old is not None and timestamp <= old:  # only ever increases (same fixed-width format)
            return f"timestamp={old}"
        self.read_markers[(account, key)] = timestamp
        self.persist_marker(account, key, timestamp)
        # a scan, not an index: MARKREAD is a human's pace, and a scan cannot go stale
        others = [o for o in self.users.values()
                  if o.sid != sid and o.account is not None and self.fold(o.account) == account]
        if others:
            self.emit({o.worker for o in others},
                      ReadMarker(tuple(o.sid for o in others), target, f"timestamp={timestamp}"))
        return f"timestamp={timestamp}"

    # -- draft/message-redaction ------------------------------------------------------
    def redact(self, sid: int, target: str, key: str, msgid: str, reason: str, by_sender: bool,
               expired: bool, window: str) -> None:
        """Redact the message ``msgid`` of history ``key`` sent to ``target``.

        Allowed for its sender (``by_sender``, found by the caller in the stored
        row) within the window, and for channel operators and IRC operators at any
        time. The row is deleted after this batch (``persist_redaction``) and the
        REDACT goes where the message went."""
        u = self.users[sid]
        if target[:1] in self.chantypes:
            ch = self.channels.get(self.fold(target))
            if ch is None or (sid not in ch.members and "o" not in u.modes):
                raise RemoteProtocolError.fail("REDACT", "INVALID_TARGET", target,
                                               text=f"You cannot delete messages from {target}")
            moderator = "o" in ch.members.get(sid, "") or "o" in u.modes
            self._may_redact(target, msgid, by_sender, expired, window, moderator)
            self.persist_redaction(key, msgid)
            self.emit(ch.workers, Redacted(ch.key, (), u.prefix, ch.name, msgid, reason))
            return
        self._may_redact(target, msgid, by_sender, expired, window, False)
        self.persist_redaction(key, msgid)
        other = self.find(target)
        sids = (sid,) if other is None or other.sid == sid else (sid, other.sid)
        self.emit({self.users[s].worker for s in sids}, Redacted("", sids, u.prefix, target, msgid, reason))

    @staticmethod
    def _may_redact(target: str, msgid: str, by_sender: bool, expired: bool, window: str, moderator: bool) -> None:
        if moderator or (by_sender and not expired):
            return
        if by_sender:
            raise RemoteProtocolError.fail("REDACT", "REDACT_WINDOW_EXPIRED", target, msgid, window,
                                           text="You can no longer edit this message")
        raise RemoteProtocolError.fail("REDACT", "REDACT_FORBIDDEN", target, msgid,
                                       text="You are not authorised to delete this message")
