"""The SendQ on a real socket pair: a reader that falls behind gets every byte,
in order, once it reads again; past the limit the overflow callback fires."""

from __future__ import annotations

import socket
import threading

from server.process.sendq import DRAIN_CHUNK, Output, Writer


def test_a_slow_reader_gets_every_byte_in_order() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer = Writer()
    writer.start()
    overflowed = threading.Event()
    out = Output(ours, 64 * 1024 * 1024, writer, overflowed.set)
    lines = [f"line {i:07d} {'x' * (i % 300)}\r\n".encode() for i in range(40_000)]
    expected = b"".join(lines)
    assert len(expected) > 8 * DRAIN_CHUNK  # queued far past one drain
    for line in lines:
        out.write(line)
    assert out.pending_len > DRAIN_CHUNK, "the reader has not read yet: most of it waits in the SendQ"
    got = bytearray()
    theirs.settimeout(10)
    while len(got) < len(expected):
        chunk = theirs.recv(1 << 16)
        assert chunk, "closed early"
        got += chunk
    assert bytes(got) == expected
    with out.lock:  # the send that carried the last bytes held it, and updated the queue before letting go
        assert out.pending_len == 0 and not out.pending
    assert not overflowed.is_set()
    out.close()
    writer.stop()
    ours.close()
    theirs.close()


def test_past_the_limit_the_overflow_callback_fires() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    writer = Writer()
    writer.start()
    overflowed = threading.Event()
    out = Output(ours, 100_000, writer, overflowed.set)
    for _ in range(10_000):
        out.write(b"y" * 100 + b"\r\n")
        if overflowed.is_set():
            break
    assert overflowed.is_set()
    out.close()
    writer.stop()
    ours.close()
    theirs.close()
