"""Server operators: OPER blocks from the config, KILL, WALLOPS, KLINE, REHASH."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.ops.passwords import hash_password, verify_password
from tests.conftest import Server


@pytest.fixture
def opserver(start_server, tmp_path: Path) -> Server:
    conf = tmp_path / "ops.toml"
    conf.write_text(
        f'[[oper]]\nname = "root"\npassword = "{hash_password("hunter2")}"\n\n'
        f'[[oper]]\nname = "far"\npassword = "{hash_password("x")}"\nhostmask = "*@10.9.9.9"\n')
    return start_server("--config", str(conf))


def test_password_hashes() -> None:
    h = hash_password("s3cret")
    assert h.startswith("scrypt$") and "s3cret" not in h
    assert verify_password("s3cret", h) and not verify_password("S3cret", h)
    assert not verify_password("x", "not a hash")


def test_non_operators_get_481(opserver: Server) -> None:
    user = opserver.client("user")
    for line in ("KILL someone :x", "WALLOPS :hi", "KLINE *@1.2.3.4 :x", "UNKLINE *@1.2.3.4", "REHASH"):
        user.send(line)
        user.expect("481")


def test_oper_wrong_password_and_host(opserver: Server) -> None:
    user = opserver.client("user")
    user.send("OPER root wrong")
    user.expect("464")
    user.send("OPER nobody hunter2")
    user.expect("464")
    user.send("OPER far x")
    user.expect("491")
    assert not any("hunter2" in line or "wrong" in line.split()[-1:] for line in opserver.lines)


def test_oper_kill_and_wallops(opserver: Server) -> None:
    boss = opserver.client("boss")
    victim = opserver.client("victim")
    watcher = opserver.client("watcher")
    victim.join("#room")
    watcher.join("#room")
    boss.send("OPER root hunter2")
    boss.expect("381")
    assert boss.expect("MODE").params == ("boss", "+ow")
    watcher.send("WHOIS boss")
    watcher.expect("313")
    boss.send("WALLOPS :maintenance at noon")
    w = boss.expect("WALLOPS")
    assert w.params == ("maintenance at noon",)
    boss.send("KILL victim :spamming")
    err = victim.expect("ERROR")
    assert "Killed (boss (spamming))" in err.params[0]
    victim.wait_closed()
    q = watcher.expect("QUIT")
    assert q.source.startswith("victim!") and "Killed" in q.params[0]
    boss.send("KILL ghost :x")
    boss.expect("401")


def test_kline_cuts_off_and_keeps_out(opserver: Server) -> None:
    boss = opserver.client("boss")
    boss.send("OPER root hunter2")
    boss.expect("381")
    target = opserver.client("target")
    target.send("PING :x")  # registered and alive
    target.expect("PONG")
    boss.send("KLINE 5 ~target@127.0.0.1 :go away")
    assert "1 clients disconnected" in boss.expect("NOTICE").params[1]
    assert "K-Lined" in target.expect("ERROR").params[0]
    again = opserver.client()
    again.send("NICK target")
    again.send("USER target 0 * :t")
    assert "banned" in again.expect("465").params[-1]
    again.wait_closed()
    other = opserver.client("other")  # another user name is not banned
    boss.send("UNKLINE ~target@127.0.0.1")
    assert "removed" in boss.expect("NOTICE").params[1]
    opserver.client("target")
    other.close()


def test_rehash(opserver: Server) -> None:
    boss = opserver.client("boss")
    boss.send("OPER root hunter2")
    boss.expect("381")
    start = len(opserver.lines)
    boss.send("REHASH")
    assert boss.expect("382").params[2] == "Rehashing"
    opserver.wait_log(r".*worker 0: configuration reloaded.*", start=start)
