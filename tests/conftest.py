"""Fixtures: the real multi-process server on a free loopback port.

``server`` starts ``python -m server --host 127.0.0.1 --port 0 --workers 2``,
waits for its "listening on" log line and yields a :class:`Server`. Its log is
shown when a test fails. Tests wait on lines and events, never on sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ircclient import IRCClient

ROOT = Path(__file__).resolve().parent.parent
# an ERROR or CRITICAL record (text or JSON log format), or a traceback
SERVER_ERROR = re.compile(r" (ERROR|CRITICAL) \[|\"level\": ?\"(ERROR|CRITICAL)\"|^Traceback ")


def _die_with_parent(nofile: int | None = None) -> None:
    """In the server's child process: SIGTERM it if the test process dies, so a
    killed test run leaves no server behind; optionally cap its open files."""
    import ctypes
    import resource

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


class Server:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, tmp: Path | None = None,
                 nofile: int | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHATROOM_")}
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=tmp or ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=(lambda: _die_with_parent(nofile)),
        )
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        m = self.wait_log(r".*listening on 127\.0\.0\.1:(\d+) .*", timeout=30)
        self.port = int(m.group(1))
        self.clients: list[IRCClient] = []

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.lines):
                    m = rx.fullmatch(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and i >= len(self.lines)):
                    raise AssertionError(f"no log line matching {pattern!r}:\n" + "\n".join(self.lines[-40:]))
                self.cond.wait(min(left, 0.5))

    def client(self, nick: str | None = None, caps: tuple[str, ...] = (), **kw: object) -> IRCClient:
        c = IRCClient(self.port, **kw)  # type: ignore[arg-type]
        self.clients.append(c)
        if nick is not None:
            c.register(nick, caps)
        return c

    def worker_of(self, nick: str, timeout: float = 10.0) -> int:
        """Which worker holds ``nick`` (from the registration log line)."""
        m = self.wait_log(rf".*\[worker-(\d+)\] .* registered as {re.escape(nick)}\b.*", timeout)
        return int(m.group(1))

    def worker_pids(self) -> dict[int, int]:
        """The current pid of each worker (from the "worker N ready" log lines)."""
        out = {}
        with self.cond:
            for line in self.lines:
                m = re.search(r"worker (\d+) ready \(pid (\d+)\)", line)
                if m:
                    out[int(m.group(1))] = int(m.group(2))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        for c in self.clients:
            c.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.reader.join(5)
        # Nothing of ours may outlive the server.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.returncode


@pytest.fixture
def start_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str, workers: int = 2, env: dict[str, str] | None = None, nofile: int | None = None) -> Server:
        srv = Server(["--workers", str(workers), "--data-dir", str(tmp_path / "data"), *args], env, tmp_path, nofile)
        started.append(srv)
        return srv

    yield start
    stop_servers(request, started)


def stop_servers(request: pytest.FixtureRequest, started: list[Server], what: str = "server") -> None:
    """Stop ``started``; print their logs if the test failed, else fail it if
    one logged an error or a traceback (unless marked ``server_errors``): the
    log is part of what the server promises."""
    for srv in started:
        srv.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for srv in started:
            print(f"---- {what} log ----\n" + "\n".join(srv.lines[-200:]))
    elif request.node.get_closest_marker("server_errors") is None:
        for srv in started:
            bad = [line for line in srv.lines if SERVER_ERROR.search(line)]
            if bad:
                pytest.fail(f"the {what} logged errors:\n" + "\n".join(bad[:20]), pytrace=False)


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep
