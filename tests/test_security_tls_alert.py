"""Plaintext on the TLS port gets a TLS alert, not a silent close
(docs/security.md: TLS)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from server.ops.tls import UNEXPECTED_MESSAGE_ALERT, TLSState, make_context
from tests.conftest import Server
from tests.test_security_tls import make_cert, tls_client, tls_port


def read_to_eof(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while len(data) < 4096:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("greeting", [b"NICK confused\r\nUSER c 0 * :c\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_plaintext_on_the_tls_port_gets_an_alert(start_server: Callable[..., Server], tmp_path: Path,
                                                 greeting: bytes) -> None:
    cert, key = make_cert(tmp_path / "tls")
    server = start_server("--set", f"tls_cert={cert}", "--set", f"tls_key={key}", "--set", "tls_port=0")
    sock = socket.create_connection(("127.0.0.1", tls_port(server)))
    sock.sendall(greeting)
    got = read_to_eof(sock)
    sock.close()
    # one fatal alert record: type 21, TLS 1.2 record version, length 2, level 2 (fatal)
    assert got[:1] == b"\x15" and got[3:5] == b"\x00\x02" and got[5:6] == b"\x02", got
    tls_client(server, "fine", cafile=cert)  # and TLS still works
    assert not [line for line in server.lines if "Traceback" in line]


def test_failure_alert_keeps_openssl_own_alert(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path / "tls")
    state = TLSState(make_context(str(cert), str(key)))
    with pytest.raises(ssl.SSLError):
        state.handshake(b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00")  # a truncated ClientHello
    assert state.failure_alert() == b"\x15\x03\x03\x00\x02\x02\x32"  # OpenSSL's own: decode_error
    state = TLSState(make_context(str(cert), str(key)))
    with pytest.raises(ssl.SSLError):
        state.handshake(b"PRIVMSG x :hi\r\n")
    assert state.failure_alert() == UNEXPECTED_MESSAGE_ALERT
