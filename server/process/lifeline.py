"""Children die with the supervisor.

Every child (manager, workers, acceptor) calls :func:`die_with_parent` first
thing: Linux's ``PR_SET_PDEATHSIG`` (through ``ctypes``, the standard library
has no ``prctl``) sends it a signal when the supervisor's thread that forked
it ends, so a ``kill -9`` of the supervisor leaves no orphan holding a client,
a database connection or the bus address. SIGTERM lets a worker tell its
clients ``ERROR :Server shutting down`` (its shutdown is shortened when
orphaned, :func:`orphaned`). The parent may have died before the ``prctl``
call: the parent pid is checked after it, and a child whose parent is already
gone exits at once.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_parent_pid = 0


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel for ``sig`` when the parent dies; exit if it already has."""
    global _parent_pid
    parent = multiprocessing.parent_process()
    _parent_pid = parent.pid if parent is not None and parent.pid else os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:  # not Linux: the pipe check in orphaned() remains
        log.warning("no parent-death signal on this system: %s", exc)
    if os.getppid() != _parent_pid:
        os._exit(1)


def orphaned() -> bool:
    """Whether the supervisor is gone (this process was re-parented)."""
    return bool(_parent_pid) and os.getppid() != _parent_pid
