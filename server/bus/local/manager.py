"""The manager process: a ``multiprocessing`` ``BaseManager`` serving the bus.

The supervisor starts it; workers connect to it by address and authkey. Only a
worker's publisher and subscriber threads (and the supervisor) hold proxies:
a proxy call is a round trip of tens of microseconds, and proxies are
per-thread connections.
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.managers import BaseManager, BaseProxy
from typing import Any, cast

from server.bus.local.bus import Bus
from server.bus.records import ChannelImage, Delivered, Published, SessionImage, pack, unpack

_bus: Bus | None = None


def _init_bus(settings: dict[str, Any]) -> None:
    global _bus
    if settings.get("cluster_url"):
        # cluster mode (docs/cluster.md); redis is imported only here
        from server.bus.cluster.bus import ClusterBus
        _bus = ClusterBus(settings)
    else:
        _bus = Bus(settings)


def _get_bus() -> Bus:
    assert _bus is not None, "manager started without its initializer"
    return _bus


def _call(proxy: BaseProxy, name: str, args: tuple[Any, ...] = ()) -> Any:
    """``proxy._callmethod`` (typed as returning nothing in the stubs)."""
    method: Callable[..., Any] = proxy._callmethod
    return method(name, args)


class BusProxy(BaseProxy):
    _exposed_ = ("publish", "fetch", "publish_wire", "fetch_wire", "drop_worker", "stats", "query",
                 "flush_history", "restore")

    def publish(self, worker: int, batch: list[Published]) -> int:
        return cast("int", _call(self, "publish_wire", (worker, pack(batch))))

    def fetch(self, worker: int, timeout: float = 1.0) -> list[Delivered]:
        return cast("list[Delivered]", unpack(_call(self, "fetch_wire", (worker, timeout))))

    def drop_worker(self, worker: int, reason: str = "Connection closed") -> int:
        return cast("int", _call(self, "drop_worker", (worker, reason)))

    def restore(self, worker: int, users: list[SessionImage], channels: list[ChannelImage]) -> int:
        return cast("int", _call(self, "restore", (worker, users, channels)))

    def stats(self) -> dict[str, Any]:
        return cast("dict[str, Any]", _call(self, "stats"))

    def flush_history(self) -> int:
        return cast("int", _call(self, "flush_history"))

    def query(self, op: str, *args: Any) -> Any:
        return _call(self, "query", (op, *args))


class ChatManager(BaseManager):
    """Serves one :class:`~server.bus.local.bus.Bus` as ``get_bus()``."""


ChatManager.register("get_bus", callable=_get_bus, proxytype=BusProxy)


def start_manager(settings: dict[str, Any], ctx: Any) -> ChatManager:
    manager = ChatManager(ctx=ctx)
    manager.start(initializer=_init_bus, initargs=(settings,))
    return manager


def successor(address: str | bytes, n: int = 1) -> str:
    """The address of the ``n``-th manager started after the one at ``address``.

    Each manager gets its own address (``<base>-<generation>``): proxies keep
    per-address, per-thread connections and reference counts, and a proxy of a
    dead manager must never reach (and decref objects of) its successor."""
    if isinstance(address, bytes):  # an abstract address, as getsockname() gives it
        address = address.decode()
    base, gen = address.rsplit("-", 1)
    return f"{base}-{int(gen) + n}"


def connect_bus(address: Any, authkey: bytes) -> BusProxy:
    """A fresh proxy to the bus for the calling thread of another process."""
    manager = ChatManager(address=address, authkey=authkey)
    manager.connect()
    return manager.get_bus()  # type: ignore[attr-defined,no-any-return]
