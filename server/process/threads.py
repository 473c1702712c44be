"""Client threads that outlive their client for a moment, to serve the next one.

Every client still has a thread of its own for as long as it is connected. A
thread whose client left waits up to ``keep`` seconds for the next one before
it ends, so a server under connection churn does not pay for a new thread
(``clone``, a stack ``mmap`` and ``munmap``, and ``Thread.start()``'s wait for
the new thread to run) on every connection. The most recently idle thread is
reused first, so surplus threads are the ones that time out.

The threads are started with ``_thread.start_new_thread``, not as
``threading.Thread`` objects: those carry a ``Thread``, its started ``Event``
and state lock and an entry in ``threading``'s tables, 2.5 KiB of resident
memory per connection (22.8 against 20.2 KiB with 10,000 held). Nothing here
joins them, names them or asks ``threading.current_thread()`` for them.
"""

from __future__ import annotations

import _thread
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class _Slot:
    """One idle thread's hand-off: a job and a lock used as a binary semaphore."""

    __slots__ = ("job", "ready")

    def __init__(self) -> None:
        self.job: tuple[Callable[[Any], None], Any] | None = None
        self.ready = threading.Lock()
        self.ready.acquire()


class ClientThreads:
    def __init__(self, keep: float, prefix: str = "client") -> None:
        self.keep = keep
        self.prefix = prefix
        self.lock = threading.Lock()
        self.idle: dict[_Slot, None] = {}  # insertion order: the last one is the newest
        self.started = 0  # threads created, for tests and STATS
        self.reused = 0

    def run(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` on an idle thread, else on a new one (which may raise
        ``RuntimeError`` when the process cannot start another thread)."""
        with self.lock:
            slot = self.idle.popitem()[0] if self.idle else None
            if slot is not None:
                self.reused += 1
        if slot is not None:
            slot.job = (fn, arg)
            slot.ready.release()
            return
        slot = _Slot()
        slot.job = (fn, arg)
        # The thread's arguments stay referenced for its whole life: the slot, not
        # the job, so that a finished client is not kept by an idle thread.
        _thread.start_new_thread(self._serve, (slot,))
        with self.lock:
            self.started += 1

    def _serve(self, slot: _Slot) -> None:
        while True:
            assert slot.job is not None
            (fn, arg), slot.job = slot.job, None
            try:
                fn(arg)
            except Exception:  # fn cleans up after itself; this only keeps the thread alive
                log.exception("client thread: unhandled error")
            del fn, arg  # the finished client must not stay referenced from here
            with self.lock:
                self.idle[slot] = None
            if not slot.ready.acquire(timeout=max(self.keep, 0.0)):
                with self.lock:
                    if slot in self.idle:
                        del self.idle[slot]
                        return  # still idle: nobody will hand this thread a client
                # Taken at the last moment: the job is on its way.
                slot.ready.acquire()

    def idle_count(self) -> int:
        with self.lock:
            return len(self.idle)
