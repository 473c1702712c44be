"""Process-level behaviour: entry points, boot failure, reload."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, Server


def test_script_entry_point_serves(tmp_path: Path) -> None:
    """``python server/main.py`` (the README's command) starts a working server."""
    srv = Server.__new__(Server)
    proc = subprocess.Popen([sys.executable, str(ROOT / "server" / "main.py"), "--host", "127.0.0.1", "--port", "0",
                             "--workers", "1"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if b"listening on" in raw:
                port = int(raw.split(b"127.0.0.1:")[1].split()[0])
                break
        else:
            raise AssertionError("no listening line")
        from tests.ircclient import IRCClient

        with IRCClient(port) as c:
            c.register("scripted")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    del srv


def test_worker_that_cannot_boot_stops_the_server_clearly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "0", "--workers", "2",
         "--set", "thread_stack_kib=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "failed to boot" in proc.stderr


def test_port_in_use_is_a_clear_error(server: Server) -> None:
    proc = subprocess.run([sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(server.port)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{server.port}" in proc.stderr


def test_sighup_reloads_the_motd(start_server, tmp_path: Path) -> None:
    motd = tmp_path / "motd.txt"
    motd.write_text("first words\n")
    conf = tmp_path / "chatroom.toml"
    conf.write_text(f'motd_file = "{motd}"\nnetwork = "TestNet"\n')
    server: Server = start_server("--config", str(conf))
    c = server.client("reader")
    assert any(m.verb == "372" and "first words" in m.params[1] for m in c.seen)
    assert any(m.verb == "005" and "NETWORK=TestNet" in m.params for m in c.seen)
    motd.write_text("second words\n")
    conf.write_text(f'motd_file = "{motd}"\nnetwork = "TestNet"\nserver_name = "irc.reloaded.test"\n')
    start = len(server.lines)
    server.proc.send_signal(signal.SIGHUP)
    for i in range(2):
        server.wait_log(rf".*worker {i}: configuration reloaded.*", start=start)
    c.drain()
    c.send("MOTD")
    line = c.expect("372")
    assert "second words" in line.params[1]
    assert line.source == "irc.reloaded.test"


def test_config_precedence(tmp_path: Path) -> None:
    from server.ops import config

    conf = tmp_path / "c.toml"
    conf.write_text('port = 7001\nworkers = 3\nnetwork = "FromFile"\n')
    env = {"CHATROOM_PORT": "7002", "CHATROOM_NETWORK": "FromEnv"}
    cfg = config.load(["--config", str(conf), "--port", "7003"], env)
    assert (cfg.port, cfg.workers, cfg.network) == (7003, 3, "FromEnv")
