"""A swarm: one generator process holding thousands of raw IRC connections.

The benchmark parent (:mod:`loadtest.bench`) starts several swarms
(``multiprocessing``, one per core or per ~15k sockets) and drives them with
small commands over a pipe; each swarm runs one ``epoll`` loop over its
sockets and its command pipe, so it keeps answering PINGs while it waits.

Cost model, so the generator is not what saturates:

* during set-up (connect, register, join) every line goes through
  ``server.protocol.Decoder``: slow, but set-up is paced;
* while measuring, a connection only counts: ``bytearray.count(b"PRIVMSG")`` on
  the raw receive buffer (C speed, no copy); a few *probe* connections per
  swarm also pull the send timestamp out of each line with one regex;
* senders write every message due in a tick in one ``send()`` per connection.

Time stamps are ``time.monotonic_ns()``, one clock for every process on the
machine, so a receiver in another swarm can subtract a sender's stamp.
"""

from __future__ import annotations

import errno
import itertools
import random
import re
import resource
import select
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from server.protocol import Decoder, Message

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
RECV_SIZE = 262144
TICK = 0.002
# A message sent while measuring: "T<monotonic ns> <step> <padding>".
_STAMP = re.compile(rb"PRIVMSG \S+ :T(\d+) (\d+)")
PAD = "lorem ipsum dolor sit amet, consectetur adipiscing elit"

SETUP, RAW = 0, 1


def raise_fd_limit() -> int:
    """Soft open-file limit up to the hard one (20000 here); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


class Conn:
    """One client connection and what the swarm knows of it."""

    __slots__ = (
        "channels",
        "decoder",
        "index",
        "joined",
        "mode",
        "nick",
        "out",
        "partial",
        "privmsgs",
        "probe",
        "registered",
        "samples",
        "sock",
        "started",
        "state",
        "tail",
    )

    def __init__(self, sock: socket.socket, nick: str, index: int) -> None:
        self.sock = sock
        self.nick = nick
        self.index = index
        self.decoder = Decoder(strict=False)
        self.mode = SETUP
        self.out = b""
        self.state = "connecting"  # connecting, registering, ready, closed
        self.started = time.monotonic()
        self.registered = 0.0
        self.joined: set[str] = set()
        self.channels: list[str] = []
        self.privmsgs = 0
        self.probe = False
        self.partial = b""
        self.tail = b""
        self.samples: list[tuple[int, int]] | None = None


class Swarm:
    """The loop of one generator process. Commands arrive as tuples on ``ctl``;
    every command is answered with exactly one tuple."""

    def __init__(self, ctl: Connection, wid: int, host: str, port: int, sources: list[str]) -> None:
        self.ctl = ctl
        self.wid = wid
        self.host = host
        self.port = port
        self.sources = sources or ["127.0.0.1"]
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.buf = bytearray(RECV_SIZE)
        self.view = memoryview(self.buf)
        self.failures: dict[str, int] = {}
        self.pending: list[Conn] = []  # sockets with unsent output
        self.running = True
        self.task: Callable[[float], bool] | None = None
        self.task_reply: Callable[[], tuple[Any, ...]] | None = None
        self.reg_times: list[float] = []
        self.churn: Churn | None = None
        self.ep.register(ctl.fileno(), select.EPOLLIN)

    # -- connection plumbing ----------------------------------------------------
    def fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    def open(self, nick: str, index: int) -> Conn | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        src = self.sources[index % len(self.sources)]
        try:
            if src != "127.0.0.1":
                # Pick the port at connect() time, per destination: past one address's
                # ~28k ephemeral ports.
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((src, 0))
            rc = sock.connect_ex((self.host, self.port))
        except OSError as exc:
            sock.close()
            self.fail(f"connect: {errno.errorcode.get(exc.errno or 0, exc)}")
            return None
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail(f"connect: {errno.errorcode.get(rc, rc)}")
            return None
        conn = Conn(sock, nick, index)
        self.conns[sock.fileno()] = conn
        self.ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
        return conn

    def close(self, conn: Conn, why: str | None = None) -> None:
        if conn.state == "closed":
            return
        if why is not None:
            self.fail(why)
        conn.state = "closed"
        fd = conn.sock.fileno()
        self.conns.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()
        if self.churn is not None:
            self.churn.closed(conn, why)

    def write(self, conn: Conn, data: bytes) -> None:
        if conn.state == "closed":
            return
        if conn.out:
            conn.out += data
            return
        try:
            n = conn.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.close(conn, f"send: {exc.strerror}")
            return
        if n < len(data):
            conn.out = data[n:]
            self.pending.append(conn)

    def flush_pending(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        for conn in pending:
            data, conn.out = conn.out, b""
            self.write(conn, data)

    # -- events -----------------------------------------------------------------
    def on_event(self, fd: int, ev: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        if conn.state == "connecting":
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.close(conn, f"connect: {errno.errorcode.get(err, err)}")
                return
            if ev & (select.EPOLLOUT | select.EPOLLIN):
                conn.state = "registering"
                self.ep.modify(fd, select.EPOLLIN)
                self.write(conn, Message("NICK", (conn.nick,)).to_bytes()
                           + Message("USER", (conn.nick[:9], "0", "*", "bench")).to_bytes())
                if not ev & select.EPOLLIN:
                    return
        try:
            n = conn.sock.recv_into(self.buf)
        except BlockingIOError:
            return
        except OSError as exc:
            self.close(conn, f"recv: {exc.strerror}")
            return
        if n == 0:
            self.close(conn, "closed by server" if conn.state != "quitting" else None)
            return
        if conn.mode == RAW:
            self.on_raw(conn, n)
        else:
            self.on_lines(conn, bytes(self.view[:n]))

    def on_raw(self, conn: Conn, n: int) -> None:
        buf = self.buf
        count = buf.count(b"PRIVMSG", 0, n)
        head = bytes(self.view[:6])
        if conn.tail:
            count += (conn.tail + head).count(b"PRIVMSG")
        conn.tail = bytes(self.view[n - 6:n]) if n >= 6 else b""
        conn.privmsgs += count
        if conn.probe or buf.find(b"PING", 0, n) >= 0 or buf.find(b"ERROR", 0, n) >= 0:
            data = conn.partial + bytes(self.view[:n])
            cut = data.rfind(b"\n") + 1
            conn.partial = data[cut:]
            whole = data[:cut]
            if conn.probe and conn.samples is not None:
                now = time.monotonic_ns()
                conn.samples.extend((int(step), now - int(ts)) for ts, step in _STAMP.findall(whole))
            if b"PING" in whole or b"ERROR" in whole:
                # rare: only these buffers go through the codec
                for msg in Decoder(strict=False).feed(whole):
                    if not isinstance(msg, Message):
                        continue
                    if msg.verb == "PING":
                        self.write(conn, Message("PONG", msg.params[-1:]).to_bytes())
                    elif msg.verb == "ERROR":
                        self.close(conn, "ERROR from server")
                        return

    def on_lines(self, conn: Conn, data: bytes) -> None:
        for msg in conn.decoder.feed(data):
            if not isinstance(msg, Message):
                continue
            verb = msg.command.upper()
            if verb == "PING":
                self.write(conn, Message("PONG", msg.params[-1:]).to_bytes())
            elif verb == "PRIVMSG":
                conn.privmsgs += 1
                if conn.samples is not None and msg.params[-1].startswith("T"):
                    ts, _, rest = msg.params[-1][1:].partition(" ")
                    conn.samples.append((int(rest.split(" ", 1)[0] or 0), time.monotonic_ns() - int(ts)))
            elif verb == "001":
                conn.state = "ready"
                conn.registered = time.monotonic()
                self.reg_times.append(conn.registered - conn.started)
                if self.churn is not None:
                    self.churn.on_welcome(conn)
            elif verb == "JOIN" and msg.source and msg.source.split("!", 1)[0] == conn.nick:
                conn.joined.add(msg.params[0].lower())
                if self.churn is not None:
                    self.churn.on_join(conn)
            elif verb == "ERROR":
                self.close(conn, None if conn.state == "quitting" else "ERROR: " + (msg.params[-1:] or ("",))[0])
                return
            elif verb in ("432", "433", "436", "471", "473", "474", "475", "403", "405"):
                self.fail(f"numeric {verb}")
                if conn.state == "registering":
                    self.close(conn)
                    return

    # -- the loop ---------------------------------------------------------------
    def run(self) -> None:
        poll = self.ep.poll
        on_event = self.on_event
        while self.running:
            for fd, ev in poll(TICK if self.task else 0.05, 4096):
                if fd == self.ctl.fileno():
                    self.on_command()
                else:
                    on_event(fd, ev)
            self.flush_pending()
            if self.task is not None and self.task(time.monotonic()):
                self.task = None
                reply = self.task_reply
                self.task_reply = None
                if reply is not None:
                    self.ctl.send(reply())

    def on_command(self) -> None:
        cmd, *args = self.ctl.recv()
        getattr(self, "cmd_" + cmd)(*args)

    def reply_later(self, task: Callable[[float], bool], reply: Callable[[], tuple[Any, ...]]) -> None:
        self.task = task
        self.task_reply = reply

    # -- commands ---------------------------------------------------------------
    def cmd_connect(self, first: int, count: int, rate: float, prefix: str, timeout: float) -> None:
        """Open ``count`` clients numbered from ``first`` at ``rate`` per second;
        answer when all are registered or failed, or after ``timeout``."""
        start = time.monotonic()
        opened = 0
        mine: list[Conn] = []

        def task(now: float) -> bool:
            nonlocal opened
            due = min(count, int((now - start) * rate) + 1)
            while opened < due:
                conn = self.open(f"{prefix}{first + opened}", first + opened)
                if conn is not None:
                    mine.append(conn)
                opened += 1
            if opened < count:
                return False
            # Each client gets ``timeout`` from its own connect(): the last ones
            # opened must not be given up on in the tick right after they were.
            waiting = [c for c in mine if c.state in ("connecting", "registering")]
            late = [c for c in waiting if now - c.started >= timeout]
            for c in late:
                self.close(c, "registration timed out")
            return len(late) == len(waiting)

        def reply() -> tuple[Any, ...]:
            ok = sum(1 for c in mine if c.state == "ready")
            times, self.reg_times = self.reg_times, []
            return ("connected", ok, dict(self.failures), times)

        self.reply_later(task, reply)

    def cmd_join(self, plan: dict[int, list[str]], timeout: float) -> None:
        """Join each client (by index) to its channels; answer when all are in."""
        by_index = {c.index: c for c in self.conns.values()}
        start = time.monotonic()
        want: list[tuple[Conn, str]] = []
        for index, channels in plan.items():
            conn = by_index.get(index)
            if conn is None or conn.state != "ready":
                continue
            conn.channels = channels
            for ch in channels:
                want.append((conn, ch.lower()))
            self.write(conn, Message("JOIN", (",".join(channels),)).to_bytes())

        def task(now: float) -> bool:
            return all(ch in c.joined or c.state == "closed" for c, ch in want) or now - start > timeout

        def reply() -> tuple[Any, ...]:
            ok = sum(1 for c, ch in want if ch in c.joined and c.state != "closed")
            return ("joined", ok, len(want), dict(self.failures))

        self.reply_later(task, reply)

    def cmd_status(self) -> None:
        ready = sum(1 for c in self.conns.values() if c.state == "ready")
        self.ctl.send(("status", ready, len(self.conns), dict(self.failures)))

    def cmd_measure(self, probes: int, senders: list[int], steps: list[tuple[float, float, float]],
                    gap: float, echo_to: str) -> None:
        """Switch to raw counting and send on a schedule.

        ``steps`` are ``(start, duration, rate)`` with ``start`` a shared
        ``monotonic()`` time; ``rate`` is this swarm's messages per second, spread
        round-robin over the clients whose index is in ``senders`` (each to its
        first channel). Counts are taken ``gap`` seconds after each step ends.
        """
        ready = [c for c in self.conns.values() if c.state == "ready"]
        ready.sort(key=lambda c: c.index)
        wanted = set(senders)
        talkers = [c for c in ready if c.index in wanted and c.channels]
        listeners = [c for c in ready if c.index not in wanted]
        for c in ready:
            c.mode = RAW
            c.privmsgs = 0
            c.partial = c.tail = b""
        for c in (listeners or ready)[:probes]:
            c.probe = True
            c.samples = []
        random.shuffle(talkers)
        cycle = itertools.cycle(talkers) if talkers else None
        pad = " " + PAD
        results: list[dict[str, Any]] = []
        state = {"step": 0, "sent": 0}

        def task(now: float) -> bool:
            i = state["step"]
            if i >= len(steps):
                return True
            t0, duration, rate = steps[i]
            if now < t0:
                return False
            if now < t0 + duration:
                due = int((now - t0) * rate) - state["sent"]
                if due > 0 and cycle is not None:
                    stamp = time.monotonic_ns()
                    out: dict[Conn, list[bytes]] = {}
                    for _ in range(due):
                        c = next(cycle)
                        out.setdefault(c, []).append(
                            Message("PRIVMSG", (c.channels[0], f"T{stamp} {i}{pad}")).to_bytes())
                    for c, lines in out.items():
                        self.write(c, b"".join(lines))
                    state["sent"] += due
                return False
            if now < t0 + duration + gap:
                return False
            samples: list[float] = []
            for c in ready:
                if c.samples:
                    samples.extend(lat for step, lat in c.samples if step == i)
            for c in ready:
                if c.samples is not None:
                    c.samples = [s for s in c.samples if s[0] > i]
            received = sum(c.privmsgs for c in ready)
            for c in ready:
                c.privmsgs = 0
            alive = sum(1 for c in ready if c.state != "closed")
            results.append({"sent": state["sent"], "received": received, "samples": samples,
                            "alive": alive, "failures": dict(self.failures)})
            state["step"] += 1
            state["sent"] = 0
            return state["step"] >= len(steps)

        def reply() -> tuple[Any, ...]:
            for c in ready:
                c.mode = SETUP
                c.probe = False
                c.samples = None
                c.decoder = Decoder(strict=False)
            return ("measured", results)

        self.reply_later(task, reply)

    def cmd_churn(self, start: float, duration: float, rate: float, prefix: str, channels: int,
                  timeout: float, max_inflight: int) -> None:
        self.churn = Churn(self, start, duration, rate, prefix, channels, timeout, max_inflight)
        churn = self.churn

        def reply() -> tuple[Any, ...]:
            self.churn = None
            return ("churned", churn.result())

        self.reply_later(churn.tick, reply)

    def cmd_quit(self) -> None:
        for conn in list(self.conns.values()):
            try:
                conn.sock.close()
            except OSError:
                pass
        self.conns.clear()
        self.running = False
        self.ctl.send(("bye",))


class Churn:
    """connect, register, join, speak, quit; a new cycle every 1/rate seconds."""

    def __init__(self, swarm: Swarm, start: float, duration: float, rate: float, prefix: str, channels: int,
                 timeout: float, max_inflight: int) -> None:
        self.swarm = swarm
        self.start = start
        self.duration = duration
        self.rate = rate
        self.prefix = prefix
        self.channels = channels
        self.timeout = timeout
        self.max_inflight = max_inflight
        self.started = 0
        self.done = 0
        self.errors: dict[str, int] = {}
        self.inflight: dict[Conn, float] = {}
        self.cycle_times: list[float] = []
        self.skipped = 0
        self.ended_at = 0.0

    def tick(self, now: float) -> bool:
        if now < self.start:
            return False
        end = self.start + self.duration
        if now < end:
            due = int((now - self.start) * self.rate) - self.started - self.skipped
            for _ in range(max(due, 0)):
                if len(self.inflight) >= self.max_inflight:
                    self.skipped += 1
                    continue
                n = self.started
                self.started += 1
                conn = self.swarm.open(f"{self.prefix}{n}", n)
                if conn is None:
                    self.error("connect failed")
                    continue
                self.inflight[conn] = now
        for conn, t in list(self.inflight.items()):
            if now - t > self.timeout:
                self.error(f"timed out while {conn.state}")
                self.inflight.pop(conn, None)
                self.swarm.close(conn)
        if now >= end and not self.inflight:
            self.ended_at = now
            return True
        return now >= end + self.timeout

    def error(self, why: str) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1

    def on_welcome(self, conn: Conn) -> None:
        ch = f"#churn{conn.index % self.channels}"
        conn.channels = [ch]
        self.swarm.write(conn, Message("JOIN", (ch,)).to_bytes())

    def on_join(self, conn: Conn) -> None:
        conn.state = "quitting"
        self.swarm.write(conn, Message("PRIVMSG", (conn.channels[0], f"hello from {conn.nick}")).to_bytes()
                         + Message("QUIT", ("bye",)).to_bytes())

    def closed(self, conn: Conn, why: str | None) -> None:
        t = self.inflight.pop(conn, None)
        if t is None:
            return
        if why is None and conn.state == "closed" and conn.joined:
            self.done += 1
            self.cycle_times.append(time.monotonic() - t)
        else:
            self.error(why or "closed early")

    def result(self) -> dict[str, Any]:
        return {"started": self.started, "done": self.done, "errors": self.errors, "skipped": self.skipped,
                "cycle_times": self.cycle_times}


def swarm_main(ctl: Connection, wid: int, host: str, port: int, sources: list[str]) -> None:
    """Entry point of a generator process."""
    raise_fd_limit()
    swarm = Swarm(ctl, wid, host, port, sources)
    try:
        swarm.run()
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
