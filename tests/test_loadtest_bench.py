"""Smoke runs of every benchmark scenario: tiny sizes, a few seconds each.

They assert correctness only (everyone registered, nothing lost, no errors, the
JSON line parses); timings are never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.bench import ms_stats, percentile, split
from loadtest.irc_client import parse_host
from loadtest.report import load, render

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str, timeout: float = 60) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "loadtest.bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    result = json.loads(lines[-1])
    assert result["scenario"] == args[0]
    assert result["machine"]["nproc"] >= 1
    return result


@pytest.fixture
def target(start_server: Callable[..., Any]) -> list[str]:
    srv = start_server("--set", "flood_exempt=127.0.0.0/8", workers=2)
    return ["--target", f"127.0.0.1:{srv.port}", "--pid", str(srv.proc.pid)]


def test_connections_smoke_starts_its_own_server() -> None:
    r = bench("connections", "--workers", "1", "--clients", "60", "--ramp", "300", "--hold", "1", "--sources", "2")
    assert r["registered"] == 60
    assert r["held"] == 60
    assert r["failures"] == {}
    assert r["server"] == "chatroom-w1"
    assert r["rss_per_conn_kib"] is not None
    assert r["sources"] == ["127.0.0.2", "127.0.0.3"]


def test_connections_gives_each_client_its_own_registration_time(target: list[str]) -> None:
    """A ramp longer than --register-timeout: the clients opened last still get
    the whole timeout (they were once given up on in the tick they opened in)."""
    r = bench("connections", *target, "--clients", "30", "--ramp", "30", "--register-timeout", "0.5", "--hold", "0.2")
    assert r["failures"] == {}
    assert r["registered"] == 30


def test_fanout_smoke(target: list[str], tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    r = bench("fanout", *target, "--clients", "30", "--senders", "3", "--rates", "50,100", "--duration", "1",
              "--out", str(out))
    assert r["joined"] == 30
    assert len(r["steps"]) == 2
    for step in r["steps"]:
        assert step["sent"] > 0
        assert step["lost"] == 0
        assert step["received"] == step["expected"] == step["sent"] * 29
        assert step["samples"] > 0
    assert "server_cpu_pct" in r["steps"][0]
    # The same line renders as the tables of docs/benchmarks.md.
    text = render(load(str(out)))
    assert "| external |" in text
    assert "### Fan-out" in text


def test_rooms_smoke(target: list[str]) -> None:
    r = bench("rooms", *target, "--clients", "40", "--channels", "8", "--rates", "100", "--duration", "1")
    assert r["joined"] == 40
    (step,) = r["steps"]
    assert step["lost"] == 0
    assert step["received"] == step["sent"] * 4


def test_churn_smoke(target: list[str]) -> None:
    r = bench("churn", *target, "--rates", "20", "--duration", "1.5", "--channels", "3")
    (step,) = r["steps"]
    assert step["errors"] == 0, step["error_kinds"]
    assert step["done"] == step["started"] > 0


def test_helpers() -> None:
    assert parse_host("irc://127.0.0.1:6667") == ("127.0.0.1", 6667)
    assert parse_host("127.0.0.2:7000") == ("127.0.0.2", 7000)
    assert parse_host("localhost") == ("localhost", 6667)
    assert parse_host("[::1]:6697") == ("::1", 6697)
    assert split(10, 3) == [4, 3, 3]
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([], 0.5) is None
    assert ms_stats([0.001] * 99 + [0.5])["p99_ms"] == 1.0
