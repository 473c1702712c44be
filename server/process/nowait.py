"""Non-blocking socket calls made without letting go of the GIL.

Every ``socket.send()`` or ``recv_into()`` releases the GIL around its system
call and takes it back afterwards. A worker has hundreds of client threads, and
under load dozens of them wait for the GIL: a release then hands it to one of
them (a futex wake-up and a context switch), and taking it back means waiting
in line behind all of them. The subscriber delivers one batch to every local
member with one ``send()`` each, so each of its sends cost it a turn of that
line: past a load the line grew, deliveries slowed, more threads waited, and
throughput fell to a fraction of what the server carried a moment before
(docs/benchmarks.md, "GIL hand-offs").

A call that cannot block does not need to release the GIL: ``send`` and
``recv`` with ``MSG_DONTWAIT`` return at once (with ``EAGAIN`` when the socket is
full or empty). These go to libc through :class:`ctypes.PyDLL`, which keeps the
GIL across the call. The file descriptor is read from the socket object at the
call, under the GIL, so a socket closed by another thread is ``-1`` (``EBADF``)
and never a descriptor reused by a newer connection.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)

# No argtypes: ctypes passes an int as a C int and bytes or a ctypes array as a
# pointer, and skipping the per-argument checks makes a call as cheap as
# socket.send() uncontended (2.9 against 2.7 us here). (A length goes as a C int
# where a size_t is expected: libffi sign-extends it to the 64-bit register, and
# nothing sent or read here comes near 2 GiB.)
_libc = ctypes.PyDLL(None)
_send = _libc.send
_send.restype = ctypes.c_ssize_t
_recv = _libc.recv
_recv.restype = ctypes.c_ssize_t
# errno is read where libc keeps it for the calling thread, right after a failed
# call (the GIL held throughout). ctypes' own use_errno=True would give every
# thread that makes a call a dictionary to keep its copy in: 0.25 KiB per client.
_errno_location = _libc.__errno_location
_errno_location.restype = ctypes.POINTER(ctypes.c_int)
_string_at = ctypes.string_at
_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


def _errno() -> int:
    code: int = _errno_location().contents.value
    return code


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def send(sock: socket.socket, data: bytes) -> int:
    """Send what the socket takes now; 0 if it takes nothing (full or
    interrupted). Raises OSError for a broken or closed socket."""
    n: int = _send(sock.fileno(), data, len(data), _FLAGS)
    if n >= 0:
        return n
    code = _errno()
    if code in _AGAIN:
        return 0
    raise _error(code)


class Buffer:
    """A receive buffer for :func:`recv`."""

    __slots__ = ("array", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.array = ctypes.create_string_buffer(size)


def recv(sock: socket.socket, buf: Buffer) -> bytes | None:
    """What the socket holds now, up to ``buf.size`` bytes; ``b""`` at the end
    of the stream, None if nothing is there yet. Raises OSError."""
    n: int = _recv(sock.fileno(), buf.array, buf.size, socket.MSG_DONTWAIT)
    if n > 0:
        return _string_at(buf.array, n)
    if n == 0:
        return b""
    code = _errno()
    if code in _AGAIN:
        return None
    raise _error(code)
