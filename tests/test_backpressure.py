"""Backpressure (server/process/worker.py, ``Worker.wait_for_publisher``): a client
thread stops reading its client while the worker's publisher is behind, so a
client that floods faster than the bus drains is slowed down by TCP instead of
growing a queue without bound in the worker."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Callable

from tests.conftest import Server

LINE = b"PRIVMSG #bp :" + b"x" * 380 + b"\r\n"
CAP = 40 * 1024 * 1024  # what the flooder offers at most


def flood_until_stalled(sock: socket.socket, deadline: float) -> tuple[int, bool]:
    """Send lines until the server has not taken a byte for a second (or CAP);
    returns (bytes taken, stalled)."""
    sock.setblocking(False)
    chunk = LINE * 64
    sent = 0
    while sent < CAP and time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], 1.0)
            if not writable:
                return sent, True
    return sent, False


def test_a_flooding_client_is_not_read_while_the_bus_is_stalled(start_server: Callable[..., Server]) -> None:
    server = start_server("--set", "flood_exempt=127.0.0.0/8", "--set", "bus_batch=50", workers=1)
    manager = int(server.wait_log(r".*manager ready \(pid (\d+)\).*").group(1))
    other = server.client("other")
    other.join("#bp")
    flooder = server.client("flooder")
    flooder.join("#bp")
    flooder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    os.kill(manager, signal.SIGSTOP)  # the publisher's next publish() does not return
    try:
        sent, stalled = flood_until_stalled(flooder.sock, time.monotonic() + 30)
    finally:
        os.kill(manager, signal.SIGCONT)
    # The kernel's buffers take a few MB; a worker reading on would take all 40.
    assert stalled, f"the server kept reading: {sent} bytes taken with the bus stalled"
    assert sent < 16 * 1024 * 1024
    flooder.sock.setblocking(True)
    flooder.sock.settimeout(flooder.timeout)
    # Nothing it took is lost, and the server serves on once the bus moves again.
    first = other.expect(lambda m: m.verb == "PRIVMSG" and m.params[0] == "#bp", timeout=30)
    assert first.params[1] == LINE[13:-2].decode()
    flooder.timeout = 60.0  # behind some thousands of its own lines
    flooder.sync()
    late = server.client("late")
    late.join("#bp")
