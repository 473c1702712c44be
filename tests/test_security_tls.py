"""TLS: the second listener, TLS >= 1.2, certificate reload on SIGHUP without
dropping anyone, and clients that misbehave during the handshake."""

from __future__ import annotations

import datetime
import hashlib
import signal
import socket
import ssl
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server
from tests.ircclient import IRCClient

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def make_cert(directory: Path, cn: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate and key (PEM) for ``cn`` and 127.0.0.1."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def fingerprint(pem: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()


def tls_port(server: Server) -> int:
    return int(server.wait_log(r".*TLS on 127\.0\.0\.1:(\d+) .*").group(1))


def tls_client(server: Server, nick: str | None = None, cafile: Path | None = None,
               ctx: ssl.SSLContext | None = None) -> IRCClient:
    """An IRCClient over TLS that verifies the server against ``cafile``."""
    c = IRCClient(tls_port(server))
    if ctx is None:
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if cafile is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    server.clients.append(c)
    if nick is not None:
        c.register(nick)
    return c


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path / "tls")


@pytest.fixture
def tls_server(start_server, certs: tuple[Path, Path]) -> Server:
    cert, key = certs
    return start_server("--set", f"tls_cert={cert}", "--set", f"tls_key={key}", "--set", "tls_port=0",
                        "--set", "flood_exempt=127.0.0.0/8")


def test_tls_client_chats_with_plain_client(tls_server: Server, certs: tuple[Path, Path]) -> None:
    cert, _ = certs
    alice = tls_client(tls_server, "alice", cafile=cert)  # verified against the certificate
    assert alice.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert hashlib.sha256(alice.sock.getpeercert(binary_form=True)).hexdigest() == fingerprint(cert)
    bob = tls_server.client("bob")
    alice.join("#tls")
    bob.join("#tls")
    alice.send("PRIVMSG #tls :" + "x" * 400)  # a whole line through the record layer
    assert bob.expect("PRIVMSG").params[1] == "x" * 400
    # a burst bigger than one TLS record (16 KiB) comes back whole and in order
    bob.send("".join(f"PRIVMSG alice :{i} {'y' * 300}\r\n" for i in range(120)))
    got = [int(alice.expect("PRIVMSG").params[1].split()[0]) for _ in range(120)]
    assert got == list(range(120))
    bob.send("WHOIS alice")
    assert bob.expect("671").params[1] == "alice"
    bob.send("WHOIS bob")
    bob.expect("318")
    assert not [m for m in bob.drain() if m.verb == "671"], "a plain connection is not called secure"
    alice.send("QUIT :bye")
    assert alice.expect("ERROR")
    assert bob.expect("QUIT").params[0] == "Quit: bye"


def test_tls_below_1_2_is_refused(tls_server: Server) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises(ssl.SSLError) as info:
        tls_client(tls_server, ctx=ctx)
    # the server's alert, not a client-side refusal
    assert "PROTOCOL_VERSION" in str(info.value).upper() or "NO_PROTOCOLS" in str(info.value).upper()
    tls_client(tls_server, "fine")  # the server is still serving TLS


def test_sighup_reloads_certificate_without_dropping_anyone(tls_server: Server, certs: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    cert, key = certs
    old = fingerprint(cert)
    alice = tls_client(tls_server, "alice", cafile=cert)
    plain = tls_server.client("plain")
    new_cert, new_key = make_cert(tmp_path / "tls2")
    cert.write_bytes(new_cert.read_bytes())
    key.write_bytes(new_key.read_bytes())
    assert fingerprint(cert) != old
    start = len(tls_server.lines)
    tls_server.proc.send_signal(signal.SIGHUP)
    for w in (0, 1):
        tls_server.wait_log(rf".*worker {w}: configuration reloaded.*", start=start)
    bob = tls_client(tls_server, "bob", cafile=cert)  # a new connection gets the new certificate
    assert hashlib.sha256(bob.sock.getpeercert(binary_form=True)).hexdigest() == fingerprint(cert)
    # the old connections are still there and still talk
    alice.send("PRIVMSG bob :still here")
    assert bob.expect("PRIVMSG").params[1] == "still here"
    plain.send("PRIVMSG alice :me too")
    assert alice.expect("PRIVMSG").params[1] == "me too"


@pytest.mark.server_errors  # on purpose: the log says what went wrong
def test_bad_certificate_on_reload_keeps_the_old_one(tls_server: Server, certs: tuple[Path, Path]) -> None:
    cert, _ = certs
    alice = tls_client(tls_server, "alice", cafile=cert)
    good = cert.read_bytes()
    cert.write_text("not a certificate")
    start = len(tls_server.lines)
    tls_server.proc.send_signal(signal.SIGHUP)
    tls_server.wait_log(r".*configuration not reloaded: cannot load TLS certificate.*", start=start)
    cert.write_bytes(good)
    tls_client(tls_server, "bob", cafile=cert)
    alice.sync()


def test_misbehaving_tls_clients_do_not_hurt_others(start_server, certs: tuple[Path, Path]) -> None:
    cert, key = certs
    server = start_server("--set", f"tls_cert={cert}", "--set", f"tls_key={key}", "--set", "tls_port=0",
                          "--set", "tls_handshake_timeout=1")
    port = tls_port(server)
    alice = tls_client(server, "alice", cafile=cert)
    # plaintext IRC on the TLS port: the handshake fails and the connection is closed
    confused = IRCClient(port)
    server.clients.append(confused)
    confused.send("NICK confused")
    confused.send("USER c 0 * :c")
    confused.wait_closed()
    # a client that says nothing is dropped after tls_handshake_timeout
    silent = IRCClient(port)
    server.clients.append(silent)
    silent.wait_closed(timeout=8)
    # a client that vanishes in the middle of its ClientHello
    hello = _client_hello(cert)
    for cut in (1, len(hello) // 2, len(hello) - 1):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(hello[:cut])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    # garbage after a good handshake: the TLS session breaks, the server drops it
    broken = tls_client(server, "broken", cafile=cert)
    raw = socket.socket(fileno=broken.sock.detach())
    raw.sendall(b"\x17\x03\x03\x00\x10" + b"\x00" * 16)  # an application-data record that fails to decrypt
    raw.settimeout(10)
    while raw.recv(4096):
        pass
    raw.close()
    bob = tls_client(server, "bob", cafile=cert)
    alice.send("PRIVMSG bob :fine")
    assert bob.expect("PRIVMSG").params[1] == "fine"
    assert not [line for line in server.lines if "Traceback" in line]


def _client_hello(cert: Path) -> bytes:
    """The first flight of a real TLS client, captured through memory BIOs."""
    ctx = ssl.create_default_context(cafile=str(cert))
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_unusable_certificate_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "missing.pem"
    proc = subprocess.run([sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "0",
                           "--data-dir", str(tmp_path / "data"), "--set", f"tls_cert={bad}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "cannot load TLS certificate" in proc.stderr


def test_regression_lines_sent_with_the_tls13_finished_are_answered(tls_server: Server,
                                                                   certs: tuple[Path, Path]) -> None:
    """TLS 1.3 lets a client send its Finished and its first lines in one go;
    they used to sit undecrypted in the server's buffer until more bytes came."""
    cert, _ = certs
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", tls_port(tls_server)), timeout=10) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(b"NICK early\r\nUSER early 0 * :Early Bird\r\n")
        sock.sendall(outgoing.read())  # the Finished and the lines, in one write
        got = b""
        while b" 001 " not in got:
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            incoming.write(data)
            try:
                while True:
                    got += tls.read(65536)
            except ssl.SSLWantReadError:
                pass
        assert b"Welcome" in got
