"""Observability: /metrics and /healthz, STATS for operators, the resource log
line, logging (text and JSON). Figures are waited for (each worker ships its
counters once a second), never slept for."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.ops.passwords import hash_password
from tests.conftest import ROOT, Server
from tests.ircclient import IRCClient

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int) -> Samples:
    status, body = get(port, "/metrics")
    assert status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), float("nan"))


def wait_until(what: str, probe: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """Probe until ``ok(result)``; fail showing the last result."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {got!r}")
        time.sleep(0.1)


Key = tuple[str, tuple[tuple[str, str], ...]]


def wait_metrics(port: int, want: dict[Key, float], timeout: float = 20.0) -> Samples:
    """Scrape until every wanted sample has exactly its value."""
    def probe() -> dict[str, Any]:
        samples = scrape(port)
        return {"samples": samples, "got": {k: value(samples, k[0], **dict(k[1])) for k in want}}

    return wait_until("metrics", probe, lambda r: r["got"] == want, timeout)["samples"]  # type: ignore[no-any-return]


def m(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


@pytest.fixture
def metered(start_server: Callable[..., Server]) -> tuple[Server, int]:
    port = free_port()
    return start_server("--metrics-port", str(port)), port


def test_metrics_follow_clients_and_messages(metered: tuple[Server, int]) -> None:
    server, port = metered
    wait_metrics(port, {m("chatroom_connections"): 0, m("chatroom_connections_accepted_total"): 0,
                        m("chatroom_users"): 0})
    alice, bob, carol = server.client("alice"), server.client("bob"), server.client("carol")
    samples = wait_metrics(port, {
        m("chatroom_connections"): 3, m("chatroom_connections_accepted_total"): 3,
        m("chatroom_registrations_total"): 3, m("chatroom_users"): 3,
    })
    per_worker = [v for (name, _), v in samples.items() if name == "chatroom_worker_connections"]
    assert sorted(per_worker) in ([1, 2], [0, 3])  # two workers, least-loaded first
    alice.join("#obs")
    bob.join("#obs")
    for i in range(5):
        alice.send(f"PRIVMSG #obs :line {i} of something private")
    alice.send("NOTICE bob :psst")
    for _ in range(5):
        bob.expect("PRIVMSG")
    bob.expect("NOTICE")
    samples = wait_metrics(port, {
        m("chatroom_channels"): 1,
        m("chatroom_messages_in_total", kind="privmsg"): 5, m("chatroom_messages_in_total", kind="notice"): 1,
        m("chatroom_messages_in_total", kind="tagmsg"): 0,
        m("chatroom_deliveries_total", kind="message"): 6,  # bob's five lines and his notice
    })
    assert value(samples, "chatroom_deliveries_total", kind="event") >= 3  # the JOINs
    assert value(samples, "chatroom_bus_latency_seconds_count") > 0
    assert value(samples, "chatroom_bus_batch_size_count") > 0
    assert value(samples, "chatroom_bus_batches_total") > 0
    for proc in ("supervisor", "acceptor", "manager", "worker-0", "worker-1"):
        assert value(samples, "chatroom_process_resident_memory_bytes", process=proc) > 0
        assert value(samples, "chatroom_process_threads", process=proc) >= 1
        assert value(samples, "chatroom_process_open_fds", process=proc) > 0
    carol.send("QUIT :my secret farewell")
    carol.wait_closed()
    samples = wait_metrics(port, {
        m("chatroom_connections"): 2, m("chatroom_users"): 2, m("chatroom_disconnects_total", reason="quit"): 1,
        m("chatroom_connections_accepted_total"): 3,
        m("chatroom_idle_client_threads"): 1,  # carol's, kept for the next client (thread_keep)
    })
    held = sum(value(samples, "chatroom_process_connections", process=f"worker-{i}") for i in (0, 1))
    assert held == 2
    # message bodies (and quit messages) never reach the log
    assert not any("something private" in line or "psst" in line or "secret farewell" in line
                   for line in server.lines)
    # the connection lifecycle is logged with the peer address
    server.wait_log(r".*client 127\.0\.0\.1:\d+ connected.*")
    server.wait_log(r".*client 127\.0\.0\.1:\d+ \(carol\) left: Quit$")


def test_refused_connections_are_counted(start_server: Callable[..., Server]) -> None:
    port = free_port()
    server = start_server("--metrics-port", str(port), "--set", "max_per_ip=1", "--set", "per_ip_exempt=")
    first = server.client("first")
    with IRCClient(server.port) as second:
        closed = second.wait_closed()
        assert any(msg.verb == "ERROR" and "Too many connections" in msg.params[0] for msg in closed)
    wait_metrics(port, {m("chatroom_connections_refused_total", reason="per_ip"): 1,
                        m("chatroom_connections_accepted_total"): 1, m("chatroom_connections"): 1})
    first.send("QUIT")


@pytest.mark.server_errors  # on purpose: the log says what went wrong
def test_healthz_fails_when_a_worker_is_killed_and_recovers(metered: tuple[Server, int]) -> None:
    server, port = metered
    wait_until("healthz", lambda: get(port, "/healthz")[0], lambda code: code == 200)
    old = server.worker_pids()[1]
    start = len(server.lines)
    import os

    os.kill(old, signal.SIGKILL)
    server.wait_log(r".*health: failing \(.*worker 1 (down|starting).*\)", start=start)
    server.wait_log(r".*health: ok", start=start)
    server.wait_log(rf".*worker 1 ready \(pid (?!{old}\))\d+\).*", start=start)
    _, body = wait_until("healthz", lambda: get(port, "/healthz"), lambda r: r[0] == 200)
    assert json.loads(body) == {"status": "ok", "problems": []}
    wait_metrics(port, {m("chatroom_worker_restarts_total", worker="1"): 1, m("chatroom_healthy"): 1})


@pytest.mark.server_errors  # on purpose: the log says what went wrong
def test_healthz_fails_while_a_worker_hangs_and_recovers_after_respawn(start_server: Callable[..., Server]) -> None:
    import os

    port = free_port()
    server = start_server("--metrics-port", str(port), "--set", "worker_timeout=10")
    wait_until("healthz", lambda: get(port, "/healthz")[0], lambda code: code == 200)
    old = server.worker_pids()[0]
    start = len(server.lines)
    os.kill(old, signal.SIGSTOP)
    try:
        _, body = wait_until("healthz", lambda: get(port, "/healthz"), lambda r: r[0] == 503)
        assert "worker 0 not responding" in json.loads(body)["problems"]
        assert value(scrape(port), "chatroom_healthy") == 0
        server.wait_log(r".*worker 0 missed its heartbeat.*", start=start, timeout=20)
    finally:
        try:
            os.kill(old, signal.SIGCONT)
        except ProcessLookupError:
            pass  # the supervisor already killed the stopped worker: what the test waits for
    server.wait_log(rf".*worker 0 ready \(pid (?!{old}\))\d+\).*", start=start)
    wait_until("healthz", lambda: get(port, "/healthz")[0], lambda code: code == 200)


@pytest.fixture
def opserver(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    conf = tmp_path / "ops.toml"
    conf.write_text(f'[[oper]]\nname = "root"\npassword = "{hash_password("hunter2")}"\n')
    return start_server("--config", str(conf))


def stats(client: IRCClient, letter: str) -> list[str]:
    """One STATS query's 249/242 texts (waiting out the first report)."""
    def probe() -> list[str]:
        client.send(f"STATS {letter}")
        lines = []
        while True:
            msg = client.expect(lambda x: x.verb in ("249", "242", "219"))
            if msg.verb == "219":
                assert msg.params[1] == letter
                return lines
            lines.append(msg.params[-1])

    return wait_until(f"STATS {letter}", probe, lambda lines: not any("no resource report" in x for x in lines))


def test_stats_for_operators_and_481_for_others(opserver: Server) -> None:
    user = opserver.client("user")
    for letter in ("p", "u", "c", "s"):
        user.send(f"STATS {letter}")
        user.expect("481")
    user.send("STATS")
    user.expect("461")
    boss = opserver.client("boss")
    boss.send("OPER root hunter2")
    boss.expect("381")
    procs = stats(boss, "p")
    names = [line.split()[0] for line in procs]
    assert names[0] == "process"
    assert set(names[1:]) == {"supervisor", "acceptor", "manager", "worker-0", "worker-1", "total"}
    assert re.fullmatch(r"total - [\d.]+% [\d.]+MiB \d+ \d+ \d+ \d+ days \d+:\d\d:\d\d", procs[-1])
    assert re.fullmatch(r"Server Up \d+ days \d+:\d\d:\d\d", stats(boss, "u")[0])
    system = stats(boss, "s")
    assert system[0].startswith("load ") and "memory" in system[1]
    counters = wait_until("STATS c", lambda: stats(boss, "c"), lambda c: c[0].startswith("connections 2 users 2"))
    assert any(line.startswith("messages in privmsg=") for line in counters)
    assert stats(boss, "x") == []  # an unknown letter: just the end


def test_stats_lines_from_a_report() -> None:
    """The data path without a server: a report as the supervisor sends it."""
    from server.irc.stats import stats_lines
    from server.ops.metrics import Aggregator, report_for_workers

    agg = Aggregator()
    agg.update_worker({"index": 0, "time": 0.0, "sessions": 4, "local_channels": 1,
                       "messages_in": {"privmsg": 7}, "deliveries": {"message": 9, "event": 2},
                       "disconnects": {"quit": 1}, "batch_size": ([1] + [0] * 12, 1.0),
                       "latency": ([1] + [0] * 13, 0.0001)})
    agg.set_sample({"worker-0": {"pid": 42, "cpu": 12.5, "rss": 3 << 20, "threads": 9, "fds": 30, "conns": 0,
                                 "started": 100.0}},
                   {"load1": 0.5, "load5": 0.25, "load15": 0.125, "cpus": 2, "mem_total": 1 << 30,
                    "mem_available": 1 << 29, "mem_percent": 50.0},
                   {"users": 3, "channels": 1, "registrations": 5, "batches": 8, "published": 20, "depth": {0: 0}},
                   [6, 0, 1, 0])
    agg.retire_worker(0)  # a respawn keeps the counters
    agg.update_worker({"index": 0, "time": 1.0, "sessions": 1, "local_channels": 0, "messages_in": {"privmsg": 1},
                       "deliveries": {"message": 1, "event": 0}, "disconnects": {}, "batch_size": ([0] * 13, 0.0),
                       "latency": ([0] * 14, 0.0)})
    report = report_for_workers(agg.view())
    assert report["counters"]["messages_in"] == {"privmsg": 8}
    assert stats_lines("p", report, now=160.0)[1] == ("249", "p", "worker-0 42 12.5% 3.0MiB 9 30 1 0 days 0:01:00")
    c = [line[-1] for line in stats_lines("c", report)]
    assert c[0] == "connections 1 users 3 channels 1 registrations 5"
    assert "accepted 6 refused full=0 per_ip=1 busy=0" in c
    assert "worker restarts worker-0=1" in c
    assert stats_lines("s", report)[0][-1] == "load 0.50 0.25 0.12 cpus 2"
    assert stats_lines("p", None)[0][-1].startswith("no resource report")


def test_resource_line_in_the_log(start_server: Callable[..., Server]) -> None:
    server = start_server("--set", "report_interval=1")
    c = server.client("watched")
    server.wait_log(r".*\[supervisor\] server\.process\.supervisor: resources: 1 connections, 1 users, 0 channels; "
                    r"msgs in [\d.]+/s, deliveries [\d.]+/s, inbox depth \d+; cpu \d+% rss \d+ MiB threads \d+ "
                    r"fds \d+; load [\d.]+ mem \d+%; supervisor=.* acceptor=.* manager=.* worker-0=.* worker-1=.*")
    c.send("QUIT")
    assert not any("metrics on" in line for line in server.lines)  # off by default


def test_json_logs(start_server: Callable[..., Server]) -> None:
    server = start_server("--log-format", "json", "--set", "report_interval=1")
    server.client("jason").send("QUIT :bye now")
    server.wait_log(r'.*"message": "client 127\.0\.0\.1:\d+ \(jason\) left: Quit".*')
    server.wait_log(r'.*"message": "resources: .*')
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert len(records) >= 5
    assert all(set(r) >= {"time", "level", "process", "pid", "logger", "message"} for r in records)
    assert {"supervisor", "worker-0", "worker-1"} <= {r["process"] for r in records}
    assert not any("bye now" in line for line in server.lines)


def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "0",
                               "--workers", "1", "--metrics-port", str(port), "--data-dir", str(tmp_path / "d")],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr


def test_fd_count_counts_another_process_files_like_a_listing() -> None:
    import psutil

    from server.ops.resources import fd_count
    child = subprocess.Popen([sys.executable, "-c", "import os, sys; fds = [os.open(os.devnull, os.O_RDONLY)"
                              " for _ in range(300)]; print('ready', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        p = psutil.Process(child.pid)
        assert fd_count(p) == p.num_fds() >= 300
    finally:
        child.kill()
        child.wait()
