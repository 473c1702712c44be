"""Password guessing costs the guesser: the failed-login back-off (per address,
per account) for OPER, NickServ IDENTIFY, SASL and PASS, the hash gate, and
OPER's dummy hash for unknown names.

The live tests connect from several loopback addresses (127.0.0.N) to stand
for several attackers or users, and use a long ``login_backoff`` so that no
window opens while a test runs: the counts they assert do not depend on timing.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from server.irc import operators
from server.ops.config import Config
from server.ops.passwords import GATE, HashBusy, HashGate, dummy_hash, hash_password
from server.protocol import Message, RemoteProtocolError
from server.state.logins import MAX_KEYS, LoginThrottle, Policy, delay
from tests.conftest import Server
from tests.ircclient import IRCClient

SLOW = ("--set", "login_free_attempts=3", "--set", "login_backoff=300", "--set", "login_backoff_max=600")


# -- the back-off, without a server ---------------------------------------------------
def test_delay_is_exponential_and_capped() -> None:
    p = Policy(free=3, base=1.0, cap=60.0, reset=900.0)
    assert [delay(n, p) for n in range(10)] == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60]
    assert delay(10**9, p) == 60.0  # no overflow for a huge count


def test_throttle_charges_before_the_check_and_refunds_success() -> None:
    t = LoginThrottle()
    p = Policy(free=2, base=10.0, cap=100.0, reset=1000.0)
    assert t.attempt("ip:a", "account:x", 0.0, p) == 0
    assert t.attempt("ip:a", "account:x", 0.0, p) == 0
    # the third attempt waits, whichever key is backed off, and is not charged
    assert t.attempt("ip:a", "account:x", 1.0, p) == pytest.approx(9.0)
    assert t.attempt("ip:a", "account:y", 1.0, p) == pytest.approx(9.0)  # the address
    assert t.attempt("ip:b", "account:x", 1.0, p) == pytest.approx(9.0)  # the account
    assert t.records["ip:a"] == (2, 0.0)
    assert t.attempt("ip:b", "account:y", 1.0, p) == 0  # neither
    # waiting it out is enough; then the wait doubles
    assert t.attempt("ip:a", "account:x", 10.0, p) == 0
    assert t.attempt("ip:a", "account:x", 10.0, p) == pytest.approx(20.0)
    # a success refunds its charge
    t.refund("ip:b", "account:y")
    assert "ip:b" not in t.records and "account:y" not in t.records
    # quiet for `reset` seconds: forgotten
    assert t.attempt("ip:a", "account:x", 1010.0, p) == 0
    assert t.records["ip:a"] == (1, 1010.0)


def test_account_backoff_spares_addresses_that_logged_in_before() -> None:
    t = LoginThrottle()
    p = Policy(free=1, base=10.0, cap=100.0, reset=1000.0)
    assert t.attempt("ip:home", "account:x", 0.0, p) == 0
    t.succeeded("ip:home", "account:x")
    assert t.attempt("ip:evil", "account:x", 1.0, p) == 0
    assert t.attempt("ip:other", "account:x", 2.0, p) > 0  # the account is backed off...
    assert t.attempt("ip:home", "account:x", 2.0, p) == 0  # ...but not for its owner's address
    assert t.attempt("ip:evil", "account:z", 3.0, p) > 0  # and the guesser's address still is


def test_throttle_memory_is_bounded() -> None:
    t = LoginThrottle()
    p = Policy()
    for i in range(MAX_KEYS + 10):
        t.attempt(None, f"account:{i}", 0.0, p)
    assert len(t.records) == MAX_KEYS
    assert "account:0" not in t.records and f"account:{MAX_KEYS + 9}" in t.records


# -- the hash gate ----------------------------------------------------------------------
def test_hash_gate_bounds_concurrent_hashes() -> None:
    gate = HashGate()
    inside = threading.Semaphore(0)
    release = threading.Event()
    peak = [0]

    def hold() -> None:
        with gate.slot(2, 10.0):
            peak[0] = max(peak[0], gate.busy)
            inside.release()
            release.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for th in threads:
        th.start()
    for _ in threads:
        assert inside.acquire(timeout=10)
    with pytest.raises(HashBusy), gate.slot(2, 0.05):  # a third one waits, then gets a clean refusal
        pass
    assert gate.waiting == 0
    waiter = threading.Thread(target=hold)
    waiter.start()
    release.set()  # a slot frees up: the waiter gets it
    for th in [*threads, waiter]:
        th.join(10)
    assert inside.acquire(timeout=10)
    assert peak[0] == 2 and gate.busy == 0


def test_unknown_oper_name_costs_the_same_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPER checks a password for an unknown name too (against a dummy hash),
    under the back-off and the hash gate like a known one."""
    known = hash_password("right")
    checked: list[str] = []
    def verify(password: str, stored: str) -> bool:
        checked.append(stored)
        return False

    monkeypatch.setattr(operators, "verify_password", verify)
    requests: list[tuple[Any, ...]] = []

    def request(op: str, *args: Any) -> float:
        requests.append((op, *args))
        return 0.0

    s = SimpleNamespace(config=Config(opers=[{"name": "root", "password": known}]), ip="192.0.2.7",
                        request=request, notify=lambda *a: None)
    for name in ("root", "nobody"):
        with pytest.raises(RemoteProtocolError) as info:
            operators.oper(s, Message("OPER", (name, "guess")))  # type: ignore[arg-type]
        assert info.value.numeric == "464"
    assert checked == [known, dummy_hash()]
    assert dummy_hash().split("$")[:4] == known.split("$")[:4]  # the same cost parameters
    assert [(r[0], r[1], r[2]) for r in requests] == [("login_attempt", "ip:192.0.2.7", "oper:root"),
                                                        ("login_attempt", "ip:192.0.2.7", "oper:nobody")]
    assert GATE.busy == 0


# -- on a live server ----------------------------------------------------------------
@pytest.fixture
def opconf(tmp_path: Path) -> Path:
    conf = tmp_path / "ops.toml"
    conf.write_text(f'[[oper]]\nname = "root"\npassword = "{hash_password("hunter2")}"\n')
    return conf


def client_from(server: Server, source: str, nick: str) -> IRCClient:
    c = IRCClient(server.port, source=source)
    server.clients.append(c)
    return c.register(nick)


def oper_reply(c: IRCClient, password: str, name: str = "root") -> Message:
    c.send(f"OPER {name} {password}")
    return c.expect(lambda m: m.verb in ("381", "464"))


def test_oper_backs_off_per_address_and_per_name(start_server: Callable[..., Server], opconf: Path) -> None:
    server = start_server("--config", str(opconf), *SLOW)
    owner = client_from(server, "127.0.0.3", "owner")
    assert oper_reply(owner, "hunter2").verb == "381"  # 127.0.0.3 is now known for "root"
    evil = client_from(server, "127.0.0.1", "evil")
    for i in range(3):
        r = oper_reply(evil, f"guess{i}")
        assert r.verb == "464" and "try again" not in r.params[-1]
    # backed off: refused without a check, even with the right password
    r = oper_reply(evil, "hunter2")
    assert r.verb == "464" and "try again in" in r.params[-1]
    r = oper_reply(evil, "x", name="someone-else")  # the address is backed off for every name
    assert "try again in" in r.params[-1]
    # another address: the name "root" is backed off for it...
    other = client_from(server, "127.0.0.2", "other")
    assert "try again in" in oper_reply(other, "hunter2").params[-1]
    # ...but not for the address that logged in as root before
    owner2 = client_from(server, "127.0.0.3", "owner2")
    assert oper_reply(owner2, "hunter2").verb == "381"
    assert len([line for line in server.lines if "failed OPER attempt" in line]) == 3
    assert not [line for line in server.lines if "Traceback" in line]


def test_twelve_connections_at_once_get_only_the_free_guesses(start_server: Callable[..., Server],
                                                              opconf: Path) -> None:
    """Every guess is charged before its hash: concurrent guesses from one
    address cannot slip in before the failures are counted."""
    server = start_server("--config", str(opconf), "--set", "flood_exempt=127.0.0.0/8", *SLOW)
    clients = [client_from(server, "127.0.0.1", f"g{i}") for i in range(12)]
    for i, c in enumerate(clients):
        c.send(f"OPER root guess{i}")
    replies = [c.expect("464").params[-1] for c in clients]
    assert len([r for r in replies if "try again" not in r]) == 3
    assert len([r for r in replies if "try again in" in r]) == 9


def test_identify_and_sasl_back_off(start_server: Callable[..., Server]) -> None:
    server = start_server(*SLOW)
    owner = client_from(server, "127.0.0.3", "victim")
    owner.send("PRIVMSG NickServ :REGISTER correct-horse")
    owner.expect("900")
    evil = client_from(server, "127.0.0.1", "evil")
    for i in range(3):
        evil.send(f"PRIVMSG NickServ :IDENTIFY victim guess{i}")
        assert "Invalid account or password" in evil.expect("NOTICE").params[-1]
        evil.expect("904")
    evil.send("PRIVMSG NickServ :IDENTIFY victim correct-horse")
    assert "try again in" in evil.expect("NOTICE").params[-1]
    assert "try again in" in evil.expect("904").params[-1]
    # SASL from a fresh address: the account is backed off for it
    c = IRCClient(server.port, source="127.0.0.2")
    server.clients.append(c)
    c.send("CAP REQ :sasl")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + base64.b64encode(b"victim\0victim\0correct-horse").decode())
    assert "try again in" in c.expect("904").params[-1]
    # SASL from the owner's address still works
    c = IRCClient(server.port, source="127.0.0.3")
    server.clients.append(c)
    c.send("CAP REQ :sasl")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + base64.b64encode(b"victim\0victim\0correct-horse").decode())
    c.expect("903")


def test_server_password_backs_off_per_address(start_server: Callable[..., Server]) -> None:
    server = start_server("--password", "letmein", *SLOW)

    def attempt(source: str, password: str) -> list[Message]:
        c = IRCClient(server.port, source=source)
        server.clients.append(c)
        c.send(f"PASS {password}")
        c.send("NICK guesser")
        c.send("USER g 0 * :g")
        return [m for m in c.wait_closed() if m.verb in ("464", "001")]

    for i in range(3):
        (r,) = attempt("127.0.0.1", f"guess{i}")
        assert r.verb == "464" and "try again" not in r.params[-1]
    (r,) = attempt("127.0.0.1", "letmein")
    assert r.verb == "464" and "try again in" in r.params[-1]
    ok = IRCClient(server.port, source="127.0.0.2")  # another address is not affected
    server.clients.append(ok)
    ok.register("fine", password="letmein")
