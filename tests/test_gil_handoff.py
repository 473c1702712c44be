"""How a worker's threads share the GIL: socket calls that keep it
(server/process/nowait.py) and the switch interval (resources.set_switch_interval)."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.process import nowait

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of blocking TCP sockets on loopback, as a worker holds them."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield server, client
    server.close()
    client.close()


def test_send_and_recv_move_bytes_without_blocking(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = tcp_pair
    buf = nowait.Buffer(4096)
    assert nowait.recv(server, buf) is None  # nothing there: no wait
    assert nowait.send(server, b"PING :x\r\n") == 9
    client.settimeout(10)
    assert client.recv(100) == b"PING :x\r\n"
    client.sendall(b"a" * 5000)
    got = b""
    while len(got) < 5000:
        server.recv_into(bytearray(1), 1, socket.MSG_PEEK)  # as a client thread waits
        data = nowait.recv(server, buf)
        assert data is not None and len(data) <= 4096
        got += data
    assert got == b"a" * 5000
    client.shutdown(socket.SHUT_WR)
    server.recv_into(bytearray(1), 1, socket.MSG_PEEK)
    assert nowait.recv(server, buf) == b""  # the end of the stream


def test_a_full_socket_takes_nothing_and_a_blocking_socket_never_blocks(
        tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    server, _client = tcp_pair  # the client reads nothing
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunk = b"x" * 65536
    sent = [nowait.send(server, chunk) for _ in range(200)]
    assert sent[0] > 0
    assert sent[-1] == 0  # full: 0, at once, on a socket in blocking mode
    assert server.getblocking()


def test_a_broken_or_closed_socket_raises(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = tcp_pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # linger 0: a reset
    with pytest.raises(OSError) as broken:
        for _ in range(100):
            nowait.send(server, b"x" * 1000)
    assert broken.value.errno in (errno.ECONNRESET, errno.EPIPE)
    server.close()
    # A closed socket has no descriptor (-1): never one a newer connection reuses.
    with pytest.raises(OSError) as closed:
        nowait.send(server, b"x")
    assert closed.value.errno == errno.EBADF
    with pytest.raises(OSError):
        nowait.recv(server, nowait.Buffer(16))


def switch_interval(setting: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from server.ops.resources import set_switch_interval;"
         f" set_switch_interval({setting}); print(sys.getswitchinterval())"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    return float(out)


def test_switch_interval_is_set_and_zero_means_pythons_default() -> None:
    assert switch_interval("0.05") == pytest.approx(0.05)
    assert switch_interval("0") == pytest.approx(0.005)
    assert switch_interval("-1") == pytest.approx(0.005)


def test_the_switch_interval_is_a_setting_of_50_ms_by_default() -> None:
    code = ("import sys; from server.ops import config, resources; "
            "cfg = config.load(['--set', 'gil_switch_interval=0.02']); "
            "resources.set_switch_interval(cfg.gil_switch_interval); print(sys.getswitchinterval(), "
            "config.load([]).gil_switch_interval)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    assert [float(x) for x in out] == [pytest.approx(0.02), pytest.approx(0.05)]
