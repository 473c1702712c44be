"""MONITOR and extended-monitor, and extended bans (a:, m:), on four workers
with the clients on different workers."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from tests.conftest import Server
from tests.ircclient import IRCClient
from tests.test_security_bans import target_chanop_oper
from tests.test_supervision import check_log, pid_of

EXEMPT = ("--set", "flood_exempt=127.0.0.0/8")


def spread(server: Server, specs: list[tuple[str, tuple[str, ...]]]) -> list[IRCClient]:
    clients = [server.client(n, caps) for n, caps in specs]
    workers = {server.worker_of(n) for n, _ in specs}
    assert len(workers) == min(len(specs), 4), f"clients all on workers {workers}"
    return clients


def register_account(c: IRCClient, account: str, password: str) -> None:
    c.send(f"REGISTER {account} * :{password}")
    c.expect("REGISTER")


def test_isupport_and_caps_advertised(start_server: Callable[..., Server]) -> None:
    server = start_server("--set", "monitor_max=7", workers=4)
    c = server.client()
    c.send("CAP LS 302")
    ls = c.expect("CAP").params[-1].split()
    for cap in ("extended-monitor", "draft/read-marker", "draft/message-redaction"):
        assert cap in ls
    c.send("CAP END")
    c.register("probe")
    tokens = [t for m in c.seen if m.verb == "005" for t in m.params[1:-1]]
    assert "MONITOR=7" in tokens and "EXTBAN=,am" in tokens and "ACCOUNTEXTBAN=a" in tokens


def test_monitor_online_offline_across_workers(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    watcher, _, _ = spread(server, [("watcher", ()), ("w2", ()), ("w3", ())])
    watcher.send("MONITOR + alice,Bob")
    offline = watcher.expect("731")
    assert sorted(offline.params[-1].split(",")) == ["Bob", "alice"]
    watcher.send("MONITOR L")
    assert sorted(watcher.expect("732").params[-1].split(",")) == ["Bob", "alice"]
    watcher.expect("733")
    # alice registers on some worker: online, with her full prefix
    alice = server.client("alice")
    assert watcher.expect("730").params[-1].startswith("alice!")
    watcher.send("MONITOR S")
    assert watcher.expect("730").params[-1].startswith("alice!")
    assert watcher.expect("731").params[-1] == "Bob"
    # a nick change: alice offline, Bob online
    alice.send("NICK bob")
    alice.expect("NICK")
    assert watcher.expect("731").params[-1] == "alice"
    assert watcher.expect("730").params[-1].startswith("bob!")
    # leaving: offline
    alice.send("QUIT :bye")
    alice.wait_closed()
    assert watcher.expect("731").params[-1] == "bob"
    # removed from the list: no more news
    watcher.send("MONITOR - alice,bob")
    watcher.sync()
    again = server.client("alice")
    again.sync()
    watcher.sync()
    watcher.expect_none("730")
    watcher.send("MONITOR L")
    watcher.expect("733")
    assert not [m for m in watcher.drain() if m.verb == "732"]


def test_monitor_limit_and_bad_input(start_server: Callable[..., Server]) -> None:
    server = start_server("--set", "monitor_max=3", workers=4)
    c = server.client("limited")
    c.send("MONITOR + a1,a2")
    c.expect("731")
    c.send("MONITOR + a2,a3,a4,a5")  # a2 is already there; a3 fits; a4, a5 do not
    full = c.expect("734")
    assert full.params[1:3] == ("3", "a4,a5")
    c.send("MONITOR L")
    assert sorted(c.expect("732").params[-1].split(",")) == ["a1", "a2", "a3"]
    c.send("MONITOR +")
    c.expect("461")
    c.send("MONITOR X")
    c.expect("421")
    c.send("MONITOR + bad!nick,#chan")  # not nicks: ignored
    c.send("MONITOR C")
    c.send("MONITOR L")
    c.expect("733")
    assert not [m for m in c.drain() if m.verb in ("732", "734")]


def test_monitor_list_cleared_on_disconnect(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    first = server.client("first")
    first.send("MONITOR + target1")
    first.expect("731")
    first.send("QUIT")
    first.wait_closed()
    probe = server.client("probe")
    probe.send("MONITOR + target1")
    probe.expect("731")
    target = server.client("target1")
    target.sync()
    probe.expect("730")  # the live watcher hears it; the gone one's list is gone (no error logged)


def test_extended_monitor_changes(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    caps = ("extended-monitor", "away-notify", "account-notify", "setname")
    ext, plain, subject = spread(server, [("ext", caps), ("plain", ("away-notify",)), ("subject", ("setname",))])
    for c in (ext, plain):
        c.send("MONITOR + subject")
        assert c.expect("730").params[-1].startswith("subject!")
    subject.send("AWAY :lunch")
    subject.expect("306")
    away = ext.expect("AWAY")
    assert away.source.startswith("subject!") and away.params == ("lunch",)
    subject.send("SETNAME :New Name")
    subject.expect("SETNAME")
    assert ext.expect("SETNAME").params == ("New Name",)
    register_account(subject, "subject", "correct horse")
    assert ext.expect("ACCOUNT").params == ("subject",)
    # sharing a channel: the notification comes once, through the channel
    ext.join("#both")
    subject.join("#both")
    assert ext.expect("AWAY").params == ("lunch",)  # away-notify's line for an away joiner
    subject.send("AWAY")
    subject.expect("305")
    assert ext.expect("AWAY").params == ()
    ext.sync()
    subject.sync()
    ext.sync()
    ext.expect_none("AWAY")
    plain.sync()
    plain.expect_none(lambda m: m.verb in ("AWAY", "SETNAME", "ACCOUNT"))


def test_extban_account_and_mute(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    op, acc, muted = spread(server, [("op", ()), ("acc", ()), ("muted", ())])
    register_account(acc, "accname", "correct horse")
    op.join("#x")
    # bad extbans are refused
    op.send("MODE #x +b z:foo")
    assert op.expect("696").params[1:3] == ("#x", "b")
    op.send("MODE #x +I m:*!*@*")
    op.expect("696")
    # a:account bans by account
    op.send("MODE #x +b a:accname")
    op.expect(lambda m: m.verb == "MODE" and m.params[1:] == ("+b", "a:accname"))
    acc.send("JOIN #x")
    acc.expect("474")
    # ... unless excepted by account too
    op.send("MODE #x +e a:acc*")
    op.expect("MODE")
    acc.join("#x")
    # m: mute: may join, may not speak; +e m: lifts it
    op.send("MODE #x +b m:muted!*@*")
    op.expect("MODE")
    muted.join("#x")
    muted.send("PRIVMSG #x :can you hear me")
    assert muted.expect("404").params[1] == "#x"
    op.sync()
    op.expect_none("PRIVMSG")
    op.send("MODE #x +e m:muted!*@*")
    op.expect("MODE")
    muted.send("PRIVMSG #x :now?")
    assert op.expect("PRIVMSG").params == ("#x", "now?")
    op.send("MODE #x +b")
    bans = [m.params[2] for m in op.collect("368") if m.verb == "367"]
    assert set(bans) == {"a:accname", "m:muted!*@*"}
    # +I a: lets a logged-in account into +i
    op.send("MODE #x +i")
    op.expect("MODE")
    op.send("MODE #x -b a:accname")
    op.expect("MODE")
    acc.send("PART #x")
    acc.expect("PART")
    acc.send("JOIN #x")
    acc.expect("473")
    op.send("MODE #x +I a:accname")
    op.expect("MODE")
    acc.join("#x")


def test_extban_mute_by_account_across_workers(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    op, acc = spread(server, [("op", ()), ("acc", ())])
    register_account(acc, "quiet", "correct horse")
    op.join("#q")
    op.send("MODE #q +b m:a:quiet")
    op.expect(lambda m: m.verb == "MODE" and m.params[1:] == ("+b", "m:a:quiet"))
    acc.join("#q")  # a mute does not keep out
    acc.send("PRIVMSG #q :hello?")
    assert acc.expect("404").params[1] == "#q"
    op.send("MODE #q -b m:a:quiet")
    op.expect("MODE")
    acc.send("PRIVMSG #q :hello!")
    assert op.expect("PRIVMSG").params == ("#q", "hello!")


def test_extbans_and_the_real_address_rule() -> None:
    """A channel operator's m: on a real address mutes nobody (it would tell
    who has the address); a server operator's does; a: entries match accounts."""
    reg, ch, target = target_chanop_oper()
    reg.mode(2, "#x", [(True, "b", "m:*!*@192.0.2.5")], 0.0)
    assert not reg.is_muted(ch, target) and not reg.is_banned(ch, target)
    reg.mode(2, "#x", [(True, "b", "m:*!*@abc.def.ip")], 0.0)
    assert reg.is_muted(ch, target) and not reg.is_banned(ch, target)
    reg.mode(2, "#x", [(False, "b", "m:*!*@abc.def.ip"), (False, "b", "m:*!*@192.0.2.5")], 0.0)
    assert not reg.is_muted(ch, target)
    reg.mode(3, "#x", [(True, "b", "m:*!*@192.0.2.*")], 0.0)
    assert reg.is_muted(ch, target)
    reg.mode(3, "#x", [(False, "b", "m:*!*@192.0.2.*")], 0.0)
    reg.mode(2, "#x", [(True, "b", "a:Acc*")], 0.0)
    assert not reg.is_banned(ch, target)
    reg.login(1, "account1")
    assert reg.is_banned(ch, target)


@pytest.mark.server_errors  # the supervisor logs the manager's death at ERROR; check_log allows only that
def test_monitor_lists_survive_a_manager_death(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    pid, line = pid_of(server, "manager")
    watcher, subject = spread(server, [("watcher", ()), ("subject", ())])
    watcher.send("MONITOR + subject,Later")
    assert watcher.expect("730").params[-1].startswith("subject!")
    watcher.expect("731")
    os.kill(pid, signal.SIGKILL)
    assert pid_of(server, "manager", line + 1)[0] != pid
    for i in range(4):  # every worker has re-registered its clients
        server.wait_log(rf".*worker {i}: re-registered .* with the new manager.*", timeout=20, start=line)
    # the new manager knows the list: L shows it, and changes are announced
    watcher.send("MONITOR L")
    listed = watcher.expect("732")
    assert sorted(listed.params[-1].split(",")) == ["Later", "subject"]
    watcher.expect("733")
    later = server.client("later")
    assert watcher.expect("730").params[-1].startswith("later!")
    subject.send("QUIT")
    subject.wait_closed()
    assert watcher.expect("731").params[-1] == "subject"
    later.sync()
    check_log(server)
