"""What a command handler may use of a client: the session-like interface.

Handlers in :mod:`server.irc` take a :class:`Client`, never the worker process
itself. The one implementation is :class:`server.process.session.Session`
(checked by mypy wherever a session is handed to :func:`server.irc.dispatch`);
a handler test can pass anything with these members. This keeps ``irc/``
below ``process/`` in the layering (tests/test_layering.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from server.bus.records import Multiline
from server.ops.config import Config
from server.protocol import Message, RemoteProtocolError
from server.state.store import Store

if TYPE_CHECKING:
    from server.irc.multiline import MultilineBatch


class WorkerView(Protocol):
    """The little a handler reads of the worker that serves its client."""

    @property
    def channels(self) -> Mapping[str, Mapping[int, Any]]:
        """The local replica: channel key -> local members (read-only here)."""

    @property
    def channel_names(self) -> Mapping[str, str]:
        """Channel key -> display name, for channels with local members."""

    @property
    def msgid_prefix(self) -> str: ...

    @property
    def report(self) -> dict[str, Any] | None:
        """The supervisor's latest resource report (STATS)."""

    def get_store(self) -> Store: ...


class Client(Protocol):
    """One connection as the command handlers see it."""

    # identity and registration
    sid: int
    ip: str
    port: int
    host: str
    nick: str
    user: str
    realname: str
    password: str | None
    nick_claimed: bool
    nick_pending: str | None
    registered: bool
    cap_negotiating: bool
    cap_version: int
    caps: frozenset[str]  # through server.state.shared.shared()
    tagmode: int
    away: str | None
    monitoring: tuple[str, ...]
    modes: frozenset[str]  # through server.state.shared.shared()
    account: str | None
    protect_deadline: float | None
    sasl: str | None
    sasl_buf: str
    tls: bool
    ping_sent: float | None
    forgotten: bool
    config: Config
    multiline: MultilineBatch | None  # the draft/multiline batch being received
    multiline_dropped: str | None

    @property
    def worker(self) -> WorkerView: ...

    @property
    def prefix(self) -> str: ...

    def caps_changed(self) -> None: ...

    # replies (in command order, labeled where the command was)
    def send(self, msg: Message) -> None: ...

    def numeric(self, numeric: str, *params: str) -> None: ...

    def numerics(self, replies: list[tuple[str, ...]]) -> None: ...

    def error(self, exc: RemoteProtocolError) -> None: ...

    def emit(self, msgs: list[Message]) -> None: ...

    def begin_unit(self, label: str | None) -> object: ...

    def end_unit(self) -> None: ...

    def relabel(self, label: str | None) -> str | None: ...

    # the bus
    def request(self, op: str, *args: Any, timeout: float = 15.0) -> Any: ...

    def notify(self, op: str, *args: Any) -> None: ...

    def send_message(self, target: str, is_channel: bool, kind: str, tags_full: bytes, tags_time: bytes,
                     body: bytes, msgid: str, now: float, multi: Multiline | None = None) -> None: ...

    # lifecycle and limits
    def close(self, reason: str) -> None: ...

    def nick_change_wait(self) -> int: ...
