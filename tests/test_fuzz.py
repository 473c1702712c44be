"""Fuzzing a live server: hypothesis throws random and mutated IRC lines and raw
bytes at it from several clients at once.

Invariants, checked after every example and at the end:

* the server stays up;
* two witnesses (on different workers) keep chatting, and fixed probes get
  exactly the replies they got before the fuzzing started;
* no thread died with an exception (no traceback or ERROR in the server log);
* once the fuzzing clients are gone, the workers hold no more fds or threads
  than before.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Server

CORPUS = [
    "NICK fz{n}", "USER fz 0 * :fuzz", "JOIN #w", "JOIN #fz,#fz2 key", "JOIN 0", "PART #fz :bye",
    "PRIVMSG #w :hello", "PRIVMSG alice :hi", "NOTICE bob :x", "PRIVMSG #w,alice,bob,#fz :multi",
    "TAGMSG #w", "@+typing=active TAGMSG #w", "@label=abc PING :x", "@a=b;c=\\:\\s\\\\;+d PRIVMSG #fz :t",
    "MODE #fz +ntk key", "MODE #fz +b *!*@*", "MODE #fz +l 1", "MODE #w +o fz", "MODE #w -o alice",
    "MODE alice +i", "MODE #fz", "MODE #fz +beI", "TOPIC #fz :topic", "TOPIC #w :mine now",
    "KICK #w alice :out", "KICK #fz fz :self", "INVITE bob #fz", "WHO #w %tnuhi,42", "WHO *", "WHOIS alice",
    "WHOWAS alice", "LIST", "LIST >0", "NAMES #w", "AWAY :gone", "AWAY", "SETNAME :new name",
    "CAP LS 302", "CAP REQ :message-tags echo-message server-time batch labeled-response", "CAP END",
    "CAP REQ :nonsense", "AUTHENTICATE PLAIN", "AUTHENTICATE +", "AUTHENTICATE *", "PASS secret",
    "OPER root wrong", "KILL alice :x", "KLINE *@* :x", "UNKLINE *@*", "WALLOPS :x", "REHASH", "ISON alice bob",
    "USERHOST alice bob", "LUSERS", "MOTD", "VERSION", "TIME", "ADMIN", "INFO", "PING :x", "PONG :x",
    "CHATHISTORY LATEST #w * 10", "CHATHISTORY BEFORE #w timestamp=2020-01-01T00:00:00.000Z 5",
    "REGISTER * * pass", "CAP REQ :batch draft/multiline", "BATCH +f draft/multiline #w", "BATCH -f",
    "@batch=f PRIVMSG #w :line", "@batch=f;draft/multiline-concat PRIVMSG #w :more", "@batch=f NOTICE alice :x",
    "QUIT :bye", "NICK", "USER", "PRIVMSG", "PRIVMSG #w", "JOIN", ":src PRIVMSG #w :spoof",
]

SEPARATORS = [b"\r\n", b"\n", b"\r", b"\0", b" ", b"\r\r\n", b""]


@st.composite
def mutated_line(draw: st.DrawFn) -> bytes:
    line = draw(st.sampled_from(CORPUS)).format(n=draw(st.integers(0, 99))).encode()
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.integers(0, 6))
        pos = draw(st.integers(0, len(line)))
        if kind == 0:  # insert random bytes
            line = line[:pos] + draw(st.binary(max_size=12)) + line[pos:]
        elif kind == 1:  # truncate
            line = line[:pos]
        elif kind == 2:  # overwrite a byte
            if line:
                p = min(pos, len(line) - 1)
                line = line[:p] + bytes([draw(st.integers(0, 255))]) + line[p + 1:]
        elif kind == 3:  # a long parameter
            line += b" :" + b"A" * draw(st.integers(100, 9000))
        elif kind == 4:  # many parameters or list items
            line += (b" " if draw(st.booleans()) else b",").join([b"#p"] * draw(st.integers(2, 60)))
        elif kind == 5:  # invalid or odd UTF-8
            line = line[:pos] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", "é👋".encode()])) + line[pos:]
        else:  # a tag section
            line = b"@" + draw(st.binary(min_size=1, max_size=40)).replace(b" ", b"=") + b" " + line
    return line + draw(st.sampled_from(SEPARATORS))


payloads = st.one_of(
    st.lists(mutated_line(), min_size=1, max_size=12).map(b"".join),
    st.binary(max_size=3000),
    st.lists(st.one_of(mutated_line(), st.binary(max_size=200)), max_size=8).map(b"".join),
)

# how a fuzzing client ends: QUIT-less close, half-close (read to EOF), reset
ENDINGS = ("close", "half", "reset")


def run_fuzz_client(port: int, source: str, register: bool, chunks: list[bytes], ending: str,
                    errors: list[str]) -> None:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
    except OSError as exc:
        errors.append(f"connect: {exc}")
        return
    try:
        if register:
            s.sendall(f"NICK fz{source.rsplit('.', 1)[1]}x{threading.get_ident() % 997}\r\nUSER f 0 * :f\r\n".encode())
        for chunk in chunks:
            s.sendall(chunk)
        s.sendall(b"\r\nPING :fz-done\r\n")
        if ending == "half":
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while b"fz-done" not in buf:
            data = s.recv(65536)
            if not data:
                break  # the server closed (QUIT, an error...): fine
            buf = buf[-100:] + data
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        errors.append(f"{source}: the server did not answer within 15 s")
    finally:
        if ending == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return [c for c in out if c]


def usage(server: Server) -> tuple[int, int]:
    """(fds, threads) summed over the workers."""
    fds = threads = 0
    for pid in server.worker_pids().values():
        p = psutil.Process(pid)
        fds += p.num_fds()
        threads += p.num_threads()
    return fds, threads


def settled(server: Server, before: tuple[int, int]) -> bool:
    """Back to ``before``: every thread, and every fd but a few that a worker
    opens lazily once (the history database and its journal files)."""
    fds, threads = usage(server)
    return threads <= before[1] and fds <= before[0] + 6


def wait_until(cond, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


BAD_LOG = re.compile(r"Traceback|Exception in thread|^\S+ \S+ (ERROR|CRITICAL) ")


def test_fuzz_many_clients_random_and_mutated_input(start_server) -> None:
    # thread_keep: idle client threads end soon, so the thread count can settle
    server: Server = start_server("--set", "flood_exempt=127.0.0.0/8", "--set", "registration_timeout=20",
                                  "--set", "thread_keep=0.5")
    alice = server.client("alice", caps=("echo-message",))
    bob = server.client("bob")
    assert server.worker_of("alice") != server.worker_of("bob")
    alice.join("#w")
    bob.join("#w")
    probes = ("MODE #w", "USERHOST alice", "ISON alice bob")
    answers = ("324", "302", "303")

    def probe() -> list[tuple[str, ...]]:
        for p in probes:
            bob.send(p)
        return [bob.expect(a).params for a in answers]

    baseline = probe()
    bob.drain()
    before = usage(server)
    counter = iter(range(1, 10**6))

    @settings(max_examples=45, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(clients=st.lists(st.tuples(st.booleans(), payloads, st.lists(st.integers(0, 10**6), max_size=4),
                                      st.sampled_from(ENDINGS)), min_size=1, max_size=4))
    def example(clients: list[tuple[bool, bytes, list[int], str]]) -> None:
        n = next(counter)
        errors: list[str] = []
        threads = [threading.Thread(target=run_fuzz_client,
                                    args=(server.port, f"127.0.0.{100 + i}", reg, split(data, cuts), end, errors))
                   for i, (reg, data, cuts, end) in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert server.proc.poll() is None, "the server died"
        alice.send(f"PRIVMSG #w :witness {n}")
        got = bob.expect(lambda m: m.verb == "PRIVMSG" and m.source.startswith("alice!"))
        assert got.params == ("#w", f"witness {n}")
        assert probe() == baseline
        alice.drain()
        bob.drain()

    example()
    # the fuzzing clients are gone: so are their fds and threads
    assert wait_until(lambda: settled(server, before)), f"leak: {usage(server)} > {before}"
    bad = [line for line in server.lines if BAD_LOG.search(line)]
    assert not bad, "\n".join(bad[:20])
    alice.send("PRIVMSG #w :the end")
    assert bob.expect("PRIVMSG").params[1] == "the end"
