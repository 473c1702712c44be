"""The locust client and locustfile against the real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.irc_client import IRCClient

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def fire(self, **kw: Any) -> None:
        with self.lock:
            self.events.append(kw)

    def names(self) -> list[str]:
        return [e["name"] for e in self.events]


def test_client_fires_request_events(start_server: Callable[..., Any]) -> None:
    srv = start_server("--set", "flood_exempt=127.0.0.0/8")
    rec = Recorder()
    a = IRCClient("127.0.0.1", srv.port, rec)
    b = IRCClient("127.0.0.1", srv.port, rec)
    a.connect("lt_alice")
    b.connect("lt_bob", caps=())
    a.join("#load")
    b.join("#load")
    assert "echo-message" in a.caps
    a.say("#load", "round trip")  # echo-message: timed until our copy returns
    b.say("#load", "peer")  # no echo-message: timed until a peer (alice) hears it
    a.wait_for(lambda m: m.command == "PRIVMSG" and m.params[-1].endswith(" peer"), what="peer line")
    a.quit()
    b.quit()
    assert all(e["exception"] is None for e in rec.events), rec.events
    names = rec.names()
    assert names.count("connect+register") == 2
    assert names.count("join") == 2
    assert "privmsg rtt" in names
    assert "privmsg peer" in names


@pytest.mark.skipif(shutil.which("locust", path=os.path.dirname(sys.executable)) is None
                    and shutil.which("locust") is None, reason="locust is not installed")
def test_locust_headless_runs(start_server: Callable[..., Any]) -> None:
    srv = start_server("--set", "flood_exempt=127.0.0.0/8")
    exe = shutil.which("locust", path=os.path.dirname(sys.executable)) or shutil.which("locust")
    assert exe is not None
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([exe, "-f", "loadtest/locustfile.py", "--headless", "-u", "12", "-r", "12", "-t", "4s",
                           "--host", f"irc://127.0.0.1:{srv.port}", "--stop-timeout", "3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "connect+register" in out
    # The last table is the final one.
    totals = re.findall(r"^\s*Aggregated\s+(\d+)\s+(\d+)\(", out, re.M)
    assert totals, out
    requests, failures = map(int, totals[-1])
    assert requests >= 12
    assert failures == 0, out
