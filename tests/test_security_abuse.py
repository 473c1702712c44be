"""Hostile clients: slowloris, an oversized-line flood, half-closed sockets,
clients vanishing mid-handshake, and floods of lines that are not commands.
Real users keep registering and chatting through all of it."""

from __future__ import annotations

import resource
import socket
import threading

from tests.conftest import Server
from tests.ircclient import IRCClient
from tests.test_fuzz import settled, usage, wait_until

RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends a reset


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def test_slowloris_does_not_starve_real_users(start_server) -> None:
    raise_nofile()
    server: Server = start_server("--set", "registration_timeout=60", "--set", "thread_keep=0.5")
    idle_from = [f"127.0.0.{i}" for i in range(2, 42)]
    alice = server.client("alice")
    bob = server.client("bob")
    alice.join("#real")
    bob.join("#real")
    alice.send("PRIVMSG #real :warm up")
    bob.expect("PRIVMSG")
    before = usage(server)
    loris: list[socket.socket] = []
    try:
        for i in range(2000):
            s = socket.socket()
            s.bind((idle_from[i % len(idle_from)], 0))
            s.connect(("127.0.0.1", server.port))
            if i % 2:
                s.send(b"N")  # a byte now, the rest (never) later
            loris.append(s)
        # everyone was accepted and handed over: the workers hold the sockets
        assert wait_until(lambda: usage(server)[0] >= before[0] + 2000), usage(server)
        carol = server.client("carol")  # a newcomer registers
        carol.join("#real")
        carol.send("PRIVMSG #real :still served")
        assert bob.expect("PRIVMSG").params[1] == "still served"
    finally:
        for s in loris:
            s.close()
    # regression (found by this test): a storm of connections filled every
    # worker's hand-off socket and the acceptor refused the rest "Server is busy"
    assert not [line for line in server.lines if "refused" in line]
    carol.close()
    assert wait_until(lambda: settled(server, before)), f"{usage(server)} vs {before}"


def test_oversized_line_flood(start_server) -> None:
    """A line that never ends: the codec tells the client once (417) and
    discards it; the bytes still cost flood tokens (one line per 4 KiB), so a
    sustained flood ends in "Excess Flood". Nobody else notices."""
    server: Server = start_server()
    alice = server.client("alice")
    bob = server.client("bob")
    alice.join("#a")
    bob.join("#a")
    flooder = server.client("flooder")
    small = server.client("small")
    done = threading.Event()

    def flood() -> None:
        try:
            for _ in range(64):
                flooder.sock.sendall(b"A" * 65536)  # 4 MiB, no newline
        except OSError:
            pass  # cut off: expected
        finally:
            done.set()

    t = threading.Thread(target=flood)
    t.start()
    alice.send("PRIVMSG #a :during the flood")
    assert bob.expect("PRIVMSG").params[1] == "during the flood"
    t.join(60)
    assert done.is_set()
    assert flooder.expect("417")  # told once, the rest of the line discarded
    assert "Excess Flood" in flooder.expect("ERROR", timeout=30).params[0]
    assert not [m for m in flooder.drain() if m.verb == "417"]
    # one oversized line alone is answered and forgotten; the client goes on
    small.send(b"PRIVMSG #a :" + b"B" * 20000 + b"\r\nPING :after\r\n")
    assert small.expect("417")
    assert small.expect("PONG").params[-1] == "after"


def test_half_closed_client_gets_its_answers(server: Server) -> None:
    c = IRCClient(server.port)
    server.clients.append(c)
    c.send("NICK half")
    c.send("USER h 0 * :h")
    c.send("PING :before-eof")
    c.sock.shutdown(socket.SHUT_WR)
    assert c.expect("001")
    assert c.expect("PONG").params[-1] == "before-eof"
    c.wait_closed()
    server.client("half")  # the nick is free again


def test_clients_vanishing_mid_handshake(start_server) -> None:
    # Idle client threads wait thread_keep for the next client: short here, so
    # the thread count comes back to the baseline soon after the clients left.
    server: Server = start_server("--set", "thread_keep=0.5")
    server.client("warm0")
    server.client("warm1")  # one on each worker: what a first client opens is in the baseline
    before = usage(server)
    for lines in (b"NICK ghost\r\nUSER gh", b"CAP LS 302\r\nNICK ghost\r\n", b"NICK ghost\r\n"):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(lines)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        s.close()
    # the nick is released as soon as the server notices (a few tries at most)
    c = server.client()
    for _ in range(200):
        c.send("NICK ghost")
        c.send("PING :nick")
        if c.expect(lambda m: m.verb in ("433", "PONG")).verb == "PONG":
            break
        c.expect("PONG")
    else:
        raise AssertionError("ghost's nick was never released")
    c.send("USER g 0 * :g")
    c.expect("001")
    c.close()
    assert wait_until(lambda: settled(server, before)), f"{usage(server)} vs {before}"


# -- regressions ---------------------------------------------------------------
def test_regression_lines_that_fail_to_parse_count_as_flood(start_server) -> None:
    """Found while fuzzing without the flood exemption: lines the codec rejects
    (bad UTF-8, NUL, too long) were answered without being charged to the flood
    bucket, so a client could make the server send error replies as fast as it
    could write."""
    server: Server = start_server()
    c = server.client("spammer")
    c.send(b"\xff\xfe\r\n" * 400)
    err = c.expect("ERROR", timeout=15)
    assert "Excess Flood" in err.params[0]


def test_regression_empty_lines_count_as_flood(start_server) -> None:
    """Found while fuzzing: empty lines cost nothing, so a client could keep a
    worker thread busy splitting megabytes of bare newlines."""
    server: Server = start_server("--set", "flood_rate=1", "--set", "flood_burst=2", "--set", "flood_max_delay=1")
    c = server.client("blank")
    try:
        for _ in range(32):
            c.sock.sendall(b"\n" * 65536)
    except (BrokenPipeError, ConnectionResetError):
        pass
    err = c.expect("ERROR", timeout=20)
    assert "Excess Flood" in err.params[0]
