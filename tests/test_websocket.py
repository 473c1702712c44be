"""IRC over WebSocket (IRCv3 WebSocket spec), with the ``websockets`` library's
own client against the real multi-process server: subprotocols, one line per
message both ways, a WebSocket client talking to a TCP client on another
worker, bad input (two lines in one message, invalid UTF-8, a message too
big, a disallowed Origin), a trusted proxy's address header, the same flood
control as TCP, and wss://."""

from __future__ import annotations

import contextlib
import functools
import http.server
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from server.ops.passwords import hash_password
from server.process.websocket import WebSocketState, client_address
from server.protocol import MalformedMessage
from tests.conftest import Server

Start = Callable[..., Server]

WS = ("--set", "websocket=true", "--set", "websocket_port=0")


def ws_port(server: Server) -> int:
    return int(server.wait_log(r".*WebSocket on 127\.0\.0\.1:(\d+) .*").group(1))


class WSClient:
    """A test client on the library's sync client: one IRC line per message."""

    def __init__(self, server: Server, subprotocols: list[str] | None = None, scheme: str = "ws",
                 ssl_context: ssl.SSLContext | None = None, **kw: Any) -> None:
        offered = [Subprotocol(p) for p in (["text.ircv3.net"] if subprotocols is None else subprotocols)]
        self.stack = contextlib.ExitStack()
        self.conn: ClientConnection = self.stack.enter_context(connect(
            f"{scheme}://127.0.0.1:{ws_port(server)}/", subprotocols=offered or None, open_timeout=10,
            ssl=ssl_context, **kw))
        self.seen: list[str | bytes] = []
        self.backlog: list[str] = []
        self.nick = "*"

    def send(self, line: str | bytes, text: bool | None = None) -> None:
        self.conn.send(line, text=text)

    def line(self, timeout: float = 10.0) -> str:
        msg = self.conn.recv(timeout=timeout)
        self.seen.append(msg)
        line = msg.decode() if isinstance(msg, bytes) else msg
        assert "\r" not in line and "\n" not in line, f"one line per message, without CRLF: {line!r}"
        if line.startswith("PING "):
            self.send("PONG " + line[5:])
        return line

    def expect(self, pattern: str, timeout: float = 10.0) -> str:
        rx = re.compile(pattern)
        for i, line in enumerate(self.backlog):
            if rx.search(line):
                del self.backlog[i]
                return line
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; got: {self.backlog[-20:]}")
            try:
                line = self.line(left)
            except TimeoutError:
                continue
            if rx.search(line):
                return line
            self.backlog.append(line)

    def register(self, nick: str) -> WSClient:
        self.nick = nick
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :Web {nick}")
        self.expect(r" 001 ")
        self.expect(r" (376|422) ")
        return self

    def sync(self, token: str = "sync") -> None:
        self.send(f"PING :{token}")
        self.expect(rf" PONG \S+ :?{token}$")

    def close(self) -> None:
        self.stack.close()


@pytest.fixture
def ws_server(start_server: Start) -> Server:
    return start_server(*WS)


@pytest.fixture
def clients() -> Iterator[list[WSClient]]:
    made: list[WSClient] = []
    yield made
    for c in made:
        c.close()


def test_websocket_and_tcp_clients_talk_across_workers(ws_server: Server, clients: list[WSClient]) -> None:
    web = WSClient(ws_server)
    clients.append(web)
    assert web.conn.subprotocol == "text.ircv3.net"
    web.register("webby")
    tcp = ws_server.client("tcpy")
    assert ws_server.worker_of("webby") != ws_server.worker_of("tcpy")
    web.send("JOIN #web")
    web.expect(r"^:webby!\S+ JOIN #web$")
    web.expect(r" 366 ")
    tcp.join("#web")
    web.expect(r"^:tcpy!\S+ JOIN #web$")
    tcp.send("PRIVMSG #web :hello browser ☺")
    assert web.expect(r" PRIVMSG #web ") == ":tcpy!~tcpy@127.0.0.1 PRIVMSG #web :hello browser ☺"
    web.send("PRIVMSG #web :hello terminal")
    got = tcp.expect("PRIVMSG")
    assert (got.source or "").startswith("webby!") and got.params == ("#web", "hello terminal")
    # one trailing line ending is forgiven (many clients send one)
    web.send("PRIVMSG tcpy :direct\r\n")
    assert tcp.expect("PRIVMSG").params == ("tcpy", "direct")
    # a message in fragments is one line; pings are answered
    web.conn.send(["PRIVMSG tcpy ", ":in ", "fragments"])
    assert tcp.expect("PRIVMSG").params == ("tcpy", "in fragments")
    assert web.conn.ping(b"x").wait(10)
    # every message the server sent was a single line without CRLF (checked in line())
    assert all(isinstance(m, str) for m in web.seen)


def test_subprotocol_follows_the_clients_preference(ws_server: Server, clients: list[WSClient]) -> None:
    binary = WSClient(ws_server, ["binary.ircv3.net", "text.ircv3.net"])
    text = WSClient(ws_server, ["text.ircv3.net", "binary.ircv3.net"])
    legacy = WSClient(ws_server, [])  # no subprotocol: accepted, in text messages
    clients += [binary, text, legacy]
    assert binary.conn.subprotocol == "binary.ircv3.net"
    assert text.conn.subprotocol == "text.ircv3.net"
    assert legacy.conn.subprotocol is None
    binary.register("bin")
    assert isinstance(binary.seen[0], bytes)
    legacy.register("old")
    assert isinstance(legacy.seen[0], str)
    # binary frames in, too (the IRC decoder still insists on UTF-8: UTF8ONLY)
    binary.send(b"PRIVMSG old :via binary")
    assert legacy.expect(r" PRIVMSG old ").endswith(":via binary")
    binary.send(b"PRIVMSG old :\xff\xfe")
    assert binary.expect(r" FAIL PRIVMSG INVALID_UTF8 ")
    binary.sync()


def test_two_lines_in_one_message_are_refused_whole(ws_server: Server, clients: list[WSClient]) -> None:
    web = WSClient(ws_server)
    clients.append(web)
    web.register("smuggler")
    watcher = ws_server.client("watcher")
    watcher.join("#quiet")
    web.send("JOIN #quiet\r\nPRIVMSG #quiet :smuggled")
    assert re.search(r" 400 smuggler JOIN :.*one IRC line", web.expect(r" 400 "))
    web.send("NICK a\rNICK b")  # a lone CR is a line break too
    web.expect(r" 400 ")
    web.sync()
    watcher.sync()
    watcher.expect_none(lambda m: m.verb in ("JOIN", "PRIVMSG"), timeout=0.2)
    web.send("WHOIS smuggler")
    assert " 319 " not in web.expect(r" (319|318) ")  # in no channel
    # the connection is still good
    web.send("PRIVMSG watcher :still here")
    assert watcher.expect("PRIVMSG").params == ("watcher", "still here")


def test_invalid_utf8_in_a_text_message_closes_with_1007(ws_server: Server, clients: list[WSClient]) -> None:
    web = WSClient(ws_server)
    clients.append(web)
    web.register("badtext")
    web.send(b"PRIVMSG badtext :\xc3\x28", text=True)  # invalid UTF-8, sent as a text frame
    with pytest.raises(ConnectionClosed) as info:
        while True:
            web.line()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1007
    ws_server.wait_log(r".*\(badtext\) left: Invalid UTF-8 in a WebSocket text message")


def test_oversized_message_gets_417_then_too_big_closes(ws_server: Server, clients: list[WSClient]) -> None:
    web = WSClient(ws_server)
    clients.append(web)
    web.register("big")
    web.send("PRIVMSG big :" + "x" * 600)  # over the IRC line, within the WebSocket limit
    web.expect(r" 417 ")
    web.sync()
    web.send("PRIVMSG big :" + "x" * 20000)  # over any IRC line: the connection fails (1009)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            web.line()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_origin_allow_list(start_server: Start, clients: list[WSClient]) -> None:
    srv = start_server(*WS, "--set", "websocket_origins=https://chat.example.org,https://*.example.net")
    with pytest.raises(InvalidStatus) as info:
        WSClient(srv, origin="https://evil.example.com")
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        WSClient(srv)  # no Origin at all, while a list is set
    for origin in ("https://chat.example.org", "https://web.example.net", "HTTPS://Chat.Example.Org"):
        c = WSClient(srv, origin=origin)
        clients.append(c)
    clients[0].register("allowed")
    srv.wait_log(r".*WebSocket handshake refused \(403.*")


def test_trusted_proxy_header_gives_the_real_address(start_server: Start, clients: list[WSClient]) -> None:
    srv = start_server(*WS, "--set", "websocket_proxies=127.0.0.0/8")
    web = WSClient(srv, additional_headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
    clients.append(web)
    web.register("proxied")
    web.send("WHOIS proxied")
    actually = web.expect(r" 338 ")
    assert "203.0.113.7" in actually.split()  # the nearest hop the proxy vouches for
    user = web.expect(r" 311 ")
    host = user.split()[5]
    assert host not in ("127.0.0.1", "203.0.113.7")  # cloaked like any other address
    srv.wait_log(r".*is 203\.0\.113\.7 \(from the proxy's header\)")
    # the same header from an address that is not a trusted proxy: ignored
    srv2 = start_server(*WS)
    spoof = WSClient(srv2, additional_headers={"X-Forwarded-For": "203.0.113.7"})
    clients.append(spoof)
    spoof.register("spoof")
    spoof.send("WHOIS spoof")
    assert "127.0.0.1" in spoof.expect(r" 338 ").split()


def test_a_trusted_proxy_is_not_held_to_max_per_ip(start_server: Start, clients: list[WSClient]) -> None:
    # Loopback is no longer exempt: the per-IP limit applies to TCP clients from
    # 127.0.0.1, but not to the trusted proxy's WebSocket connections.
    srv = start_server(*WS, "--set", "websocket_proxies=127.0.0.1/32", "--set", "per_ip_exempt=",
                       "--set", "max_per_ip=2", "--set", "conn_burst=50")
    first, second = srv.client("tcp1"), srv.client("tcp2")
    assert first.nick and second.nick
    for i in range(4):  # the proxy's connections count, but are not refused
        web = WSClient(srv, additional_headers={"X-Forwarded-For": f"203.0.113.{10 + i}"})
        clients.append(web)
        web.register(f"web{i}")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as third:
        data = b""
        while b"\n" not in data:
            chunk = third.recv(4096)
            if not chunk:
                break
            data += chunk
        assert b"Too many connections from your IP address (2)" in data


@pytest.mark.parametrize(("trusted", "proto", "secure"),
                         [(True, "https", True), (True, "http", False), (False, "https", False)])
def test_forwarded_proto_marks_the_connection_secure(start_server: Start, clients: list[WSClient],
                                                     trusted: bool, proto: str, secure: bool) -> None:
    srv = start_server(*WS, *(("--set", "websocket_proxies=127.0.0.1/32") if trusted else ()))
    web = WSClient(srv, additional_headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": proto})
    clients.append(web)
    web.register("webby")
    web.send("WHOIS webby")
    whois = []
    while " 318 " not in (line := web.line()):
        whois.append(line)
    assert any(" 671 " in line for line in whois) is secure, whois


def test_kline_on_the_forwarded_address(start_server: Start, tmp_path: Path, clients: list[WSClient]) -> None:
    conf = tmp_path / "ops.toml"
    conf.write_text(f'[[oper]]\nname = "root"\npassword = "{hash_password("hunter2")}"\n')
    srv = start_server("--config", str(conf), *WS, "--set", "websocket_proxies=127.0.0.1/32")
    boss = srv.client("boss")
    boss.send("OPER root hunter2")
    boss.expect("381")
    victim = WSClient(srv, additional_headers={"X-Forwarded-For": "203.0.113.66"})
    clients.append(victim)
    victim.register("victim")
    boss.send("KLINE 5 *@203.0.113.66 :go away")  # the address the proxy vouched for
    assert "1 clients disconnected" in boss.expect("NOTICE").params[1]
    assert "K-Lined" in victim.expect(r"^ERROR ")
    again = WSClient(srv, additional_headers={"X-Forwarded-For": "203.0.113.66"})
    clients.append(again)
    again.send("NICK again")
    again.send("USER again 0 * :again")
    again.expect(r" 465 ")
    # the proxy's own address, and other clients behind it, are not banned
    other = WSClient(srv, additional_headers={"X-Forwarded-For": "203.0.113.67"})
    clients.append(other)
    other.register("other")


def test_closing_a_websocket_client_sends_error_then_a_close_frame(start_server: Start,
                                                                    clients: list[WSClient]) -> None:
    srv = start_server(*WS, "--set", "registration_timeout=1")
    idle = WSClient(srv)
    clients.append(idle)
    idle.send("NICK idle")  # and never USER
    assert "Registration timed out" in idle.expect(r"^ERROR ", timeout=15)
    with pytest.raises(ConnectionClosed) as info:
        idle.line()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1000


def test_websocket_clients_get_the_same_flood_control(start_server: Start, clients: list[WSClient]) -> None:
    srv = start_server(*WS, "--set", "flood_burst=5", "--set", "flood_rate=1", "--set", "flood_max_delay=1")
    web = WSClient(srv)
    clients.append(web)
    web.register("flooder")
    for i in range(40):
        try:
            web.send(f"PING :{i}")
        except ConnectionClosed:
            break
    web.expect(r"^ERROR :Closing Link: .*Excess Flood")
    srv.wait_log(r".*\(flooder\) left: Excess Flood")


def test_secure_websocket(start_server: Start, tmp_path: Path, clients: list[WSClient]) -> None:
    pytest.importorskip("cryptography")
    from tests.test_security_tls import make_cert

    cert, key = make_cert(tmp_path / "tls")
    srv = start_server(*WS, "--set", "websocket_tls=true", "--set", f"tls_cert={cert}", "--set", f"tls_key={key}",
                       "--set", "tls_port=0")
    ctx = ssl.create_default_context(cafile=str(cert))
    web = WSClient(srv, scheme="wss", ssl_context=ctx)
    clients.append(web)
    web.register("secure")
    tcp = srv.client("plain")
    tcp.send("WHOIS secure")
    assert tcp.expect("671").params[1] == "secure"  # is using a secure connection
    tcp.send("PRIVMSG secure :over tls")
    assert web.expect(r" PRIVMSG secure ").endswith(":over tls")


def test_not_a_websocket_handshake_is_refused(ws_server: Server) -> None:
    port = ws_port(ws_server)
    # an IRC client on the wrong port: hung up on, without a word of IRC
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"NICK lost\r\nUSER lost 0 * :Lost\r\n\r\n")
        assert sock.recv(4096) == b""
    ws_server.wait_log(r".*left: WebSocket handshake failed: did not receive a valid HTTP request")
    # plain HTTP without the upgrade: 426, then the server hangs up
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 426 ")
    ws_server.wait_log(r".*left: WebSocket handshake refused \(426.*")


def test_websocket_tls_without_certificate_is_a_clear_error(start_server: Start) -> None:
    with pytest.raises(AssertionError, match="websocket_tls needs tls_cert"):
        start_server(*WS, "--set", "websocket_tls=true")


# -- the sans-I/O layer on its own ---------------------------------------------------

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("10.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("10.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the rightmost untrusted hop
        ("10.0.0.1", "203.0.113.7, 10.0.0.9", "203.0.113.7"),  # through two of our proxies
        ("10.0.0.1", "2001:db8::5", "2001:db8::5"),
        ("10.0.0.1", "10.0.0.2, 10.0.0.3", "10.0.0.1"),  # only proxies: keep the peer
        ("10.0.0.1", "unknown", "10.0.0.1"),
        ("10.0.0.1", "203.0.113.7:443", "10.0.0.1"),
        ("10.0.0.1", "", "10.0.0.1"),
        ("192.0.2.9", "203.0.113.7", "192.0.2.9"),  # not a trusted proxy: the header means nothing
        ("fd00::1", "203.0.113.8", "203.0.113.8"),
    ],
)
def test_client_address(peer: str, header: str, expected: str) -> None:
    headers = Headers({"X-Forwarded-For": header} if header else {})
    assert client_address(peer, headers, PROXIES, "X-Forwarded-For") == expected
    assert client_address(peer, headers, [], "X-Forwarded-For") == peer


def handshake_request(protocols: str = "text.ircv3.net") -> bytes:
    return ("GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocols}\r\n\r\n").encode()


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (clients must mask), built by hand: what the library would refuse to send."""
    mask = b"\x01\x02\x03\x04"
    head = bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)])
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_websocket_state_lines_and_refusals() -> None:
    ws = WebSocketState("127.0.0.1")
    lines, out = ws.receive(handshake_request("binary.ircv3.net, text.ircv3.net"))
    assert out.startswith(b"HTTP/1.1 101 ") and ws.open and ws.binary and lines == []
    lines, _ = ws.receive(masked(0x2, b"NICK a") + masked(0x1, b"PING :x\r\n") + masked(0x1, b"A\nB")
                          + masked(0x1, b"PRIV", fin=False) + masked(0x0, b"MSG a :b"))
    assert lines[:2] == [b"NICK a", b"PING :x"]
    assert isinstance(lines[2], MalformedMessage) and lines[3] == b"PRIVMSG a :b"
    assert ws.frames(b"PING :1\r\nPING :2\r\n") == b"\x82\x07PING :1\x82\x07PING :2"
    lines, out = ws.receive(masked(0x1, b"\xff") + masked(0x1, b"QUIT"))
    assert lines == []  # nothing after the bad message counts
    assert ws.done and ws.reason == "Invalid UTF-8 in a WebSocket text message"
    assert out[0] == 0x88 and out[2:4] == (1007).to_bytes(2, "big")  # a close frame, code 1007


# -- a real browser ---------------------------------------------------------------

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>chat-room websocket test</title>
<script>
const ws = new WebSocket("ws://127.0.0.1:%(port)d/", ["text.ircv3.net"]);
ws.onopen = () => { ws.send("NICK browser"); ws.send("USER browser 0 * :Chromium"); };
ws.onmessage = (event) => {
  const line = event.data;
  if (line.startsWith("PING ")) ws.send("PONG " + line.slice(5));
  if (/ 001 /.test(line)) ws.send("JOIN #browser");
  if (/ 366 browser #browser /.test(line)) ws.send("PRIVMSG #browser :hello from " + ws.protocol);
  const m = line.match(/ PRIVMSG #browser :(ping from tcp .*)$/);
  if (m) ws.send("PRIVMSG #browser :browser got: " + m[1]);
};
</script>
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_a_real_browser_over_websocket(start_server: Start, tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it when it can)")
    page_dir = tmp_path / "page"
    page_dir.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    http_port = httpd.server_address[1]
    # the browser's Origin is the page's: allowed explicitly, as a deployment would
    srv = start_server(*WS, "--set", f"websocket_origins=http://127.0.0.1:{http_port}")
    (page_dir / "index.html").write_text(PAGE % {"port": ws_port(srv)}, encoding="utf-8")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    tcp = srv.client("terminal")
    tcp.join("#browser")
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
         f"http://127.0.0.1:{http_port}/index.html"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        joined = tcp.expect(lambda m: m.verb == "JOIN" and (m.source or "").startswith("browser!"), timeout=60)
        assert joined.params[0] == "#browser"
        assert srv.worker_of("browser") != srv.worker_of("terminal")
        hello = tcp.expect("PRIVMSG", timeout=30)
        assert hello.params == ("#browser", "hello from text.ircv3.net")
        tcp.send("PRIVMSG #browser :ping from tcp ☺ 42")
        back = tcp.expect("PRIVMSG", timeout=30)
        assert (back.source or "").startswith("browser!")
        assert back.params == ("#browser", "browser got: ping from tcp ☺ 42")
    except AssertionError:
        log.flush()
        print((tmp_path / "chromium.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        httpd.shutdown()
        httpd.server_close()
