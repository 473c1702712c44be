"""The server under test: ours started as a subprocess, ngIRCd started with a
temporary configuration, or any server already running at host:port.

:class:`Usage` samples CPU time and RSS of every process of the server
(psutil, children included) and of the generator, so a reader sees who
saturated.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


class Target:
    """A server to load. ``pid`` is None for a server we did not start (then
    only the generator's CPU is reported, unless ``--pid`` names it)."""

    name = "external"

    def __init__(self, host: str, port: int, pid: int | None = None) -> None:
        self.host = host
        self.port = port
        self.pid = pid
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp: str | None = None
        self.log: list[str] = []

    def processes(self) -> list[psutil.Process]:
        if self.pid is None:
            return []
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def describe(self) -> str:
        return f"{self.name} {self.host}:{self.port}"


class Chatroom(Target):
    """``python -m server`` with N workers, flood control off for loopback."""

    def __init__(self, workers: int, host: str = "127.0.0.1", extra: list[str] | None = None,
                 root: str | None = None) -> None:
        super().__init__(host, free_port(host))
        self.root = str(root or ROOT)
        self.workers = workers
        self.name = f"chatroom-w{workers}"
        self.tmp = tempfile.mkdtemp(prefix="chatroom-bench-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATROOM_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.root, env.get("PYTHONPATH")]))
        self.argv = [sys.executable, "-m", "server", "--host", host, "--port", str(self.port),
                     "--workers", str(workers), "--data-dir", os.path.join(self.tmp, "data"),
                     "--set", "flood_exempt=127.0.0.0/8",
                     "--set", "report_interval=3600", *(extra or [])]
        self.proc = subprocess.Popen(self.argv, cwd=self.tmp, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for raw in self.proc.stdout:
                if len(self.log) < 2000:
                    self.log.append(raw.decode("utf-8", "replace").rstrip())

        threading.Thread(target=read, daemon=True).start()
        # With --log-level WARNING there is no "listening on" line: wait for the port.
        if not wait_listening(host, self.port, self.proc, 60):
            self.stop()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.log[-30:]))
        # Let the workers connect to the bus before the first client.
        time.sleep(0.5)


NGIRCD_CONF = """\
[Global]
    Name = irc.bench.local
    Info = benchmark
    Listen = {host}
    Ports = {port}
    MotdPhrase = "bench"
    PidFile = {tmp}/ngircd.pid
[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 30
    MaxPenaltyTime = 0
    PingTimeout = {ping}
    PongTimeout = 60
[Options]
    DNS = no
    Ident = no
    PAM = no
    MorePrivacy = no
    OperCanUseMode = yes
"""


class NgIRCd(Target):
    """ngIRCd (the Debian package) on a loopback port with a temporary config."""

    name = "ngircd"

    def __init__(self, port: int, host: str = "127.0.0.1", ping: int = 120) -> None:
        super().__init__(host, port)
        exe = shutil.which("ngircd") or "/usr/sbin/ngircd"
        if not os.path.exists(exe):
            raise RuntimeError("ngircd is not installed (apt-get install ngircd)")
        self.tmp = tempfile.mkdtemp(prefix="ngircd-bench-")
        conf = os.path.join(self.tmp, "ngircd.conf")
        with open(conf, "w") as fh:
            fh.write(NGIRCD_CONF.format(host=host, port=port, tmp=self.tmp, ping=ping))

        def limits() -> None:
            import resource
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        self.proc = subprocess.Popen([exe, "-n", "-f", conf], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=limits)
        self.pid = self.proc.pid
        if not wait_listening(host, port, self.proc, 15):
            self.stop()
            raise RuntimeError(f"ngircd did not start listening (exit code {self.proc.returncode})")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # An IRC-less probe: connect and close at once.
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            if proc.poll() is not None:
                return False
            time.sleep(0.1)
    return False


def source_version(root: str | Path) -> str:
    """The commit of a server checkout ("+dirty" when it has local changes), or the
    content of a ``.commit`` file left by ``git archive`` exports."""
    marker = Path(root) / ".commit"
    if marker.exists():
        return marker.read_text().strip()
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "server"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


class Usage:
    """CPU seconds and RSS of a set of processes between ``start()`` and ``stop()``."""

    def __init__(self, target: Target, generator_pids: list[int]) -> None:
        self.target = target
        self.generator_pids = generator_pids
        self.t0 = 0.0
        self.server0: dict[int, float] = {}
        self.gen0: dict[int, float] = {}

    @staticmethod
    def _cpu(procs: list[psutil.Process]) -> dict[int, float]:
        out = {}
        for p in procs:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    @staticmethod
    def _pcts(before: dict[int, float], after: dict[int, float], wall: float) -> list[float]:
        return sorted((round(100 * (t - before.get(pid, 0.0)) / wall, 1) for pid, t in after.items()), reverse=True)

    def _gen(self) -> list[psutil.Process]:
        out = [psutil.Process()]
        for pid in self.generator_pids:
            try:
                out.append(psutil.Process(pid))
            except psutil.Error:
                pass
        return out

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.server0 = self._cpu(self.target.processes())
        self.gen0 = self._cpu(self._gen())

    def stop(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.t0, 1e-6)
        procs = self.target.processes()
        gen = self._pcts(self.gen0, self._cpu(self._gen()), wall)
        out: dict[str, Any] = {"gen_cpu_pct": round(sum(gen), 1), "gen_cpu_max_proc_pct": gen[0] if gen else 0.0}
        if procs:
            # Per process, busiest first: shows whether one process (the manager, a
            # worker, ngIRCd's single one) is the wall.
            server = self._pcts(self.server0, self._cpu(procs), wall)
            out["server_cpu_pct"] = round(sum(server), 1)
            out["server_cpu_procs_pct"] = server
            out["server_rss_mib"] = round(rss(procs) / 2**20, 1)
            out["server_procs"] = len(procs)
        return out


def rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total
