"""The manager process: a ``multiprocessing`` ``BaseManager`` serving the bus.

The supervisor starts it; workers connect to it by address and authkey. Only a
worker's publisher and subscriber threads (and the supervisor) hold proxies:
a proxy call is a round trip of tens of microseconds, and proxies are
per-thread connections.
"""

from __future__ import annotations

from multiprocessing.managers import BaseManager, BaseProxy
from typing import Any

from server.bus.local.bus import Bus

_bus: Bus | None = None


def _init_bus(settings: dict[str, Any]) -> None:
    global _bus
    _bus = Bus(settings)


def _get_bus() -> Bus:
    assert _bus is not None, "manager started without its initializer"
    return _bus


class BusProxy(BaseProxy):
    _exposed_ = ("publish", "fetch", "drop_worker", "stats", "query", "flush_history")

    def publish(self, worker: int, batch: list[tuple[Any, ...]]) -> int:
        return self._callmethod("publish", (worker, batch))  # type: ignore[no-any-return]

    def fetch(self, worker: int, timeout: float = 1.0) -> list[tuple[Any, ...]]:
        return self._callmethod("fetch", (worker, timeout))  # type: ignore[no-any-return]

    def drop_worker(self, worker: int, reason: str = "Connection closed") -> int:
        return self._callmethod("drop_worker", (worker, reason))  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self._callmethod("stats")  # type: ignore[no-any-return]

    def flush_history(self) -> int:
        return self._callmethod("flush_history")  # type: ignore[no-any-return]

    def query(self, op: str, *args: Any) -> Any:
        return self._callmethod("query", (op, *args))


class ChatManager(BaseManager):
    """Serves one :class:`~server.bus.local.bus.Bus` as ``get_bus()``."""


ChatManager.register("get_bus", callable=_get_bus, proxytype=BusProxy)


def start_manager(settings: dict[str, Any], ctx: Any) -> ChatManager:
    manager = ChatManager(ctx=ctx)
    manager.start(initializer=_init_bus, initargs=(settings,))
    return manager


def connect_bus(address: Any, authkey: bytes) -> BusProxy:
    """A fresh proxy to the bus for the calling thread of another process."""
    manager = ChatManager(address=address, authkey=authkey)
    manager.connect()
    return manager.get_bus()  # type: ignore[attr-defined,no-any-return]
