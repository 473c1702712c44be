"""Conformance (issue #14): draft/account-registration, SASL and account-tag,
against the real server on four workers."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

from server.ops.passwords import hash_password
from server.protocol import casefold
from server.state.store import Store
from tests.conftest import Server
from tests.ircclient import IRCClient

WORKERS = 4


def make_accounts(tmp_path: Path, **accounts: str) -> None:
    """Accounts in the database before the server starts (for passwords too
    long for a REGISTER line)."""
    store = Store(tmp_path / "data")
    for name, password in accounts.items():
        assert store.create_account(casefold(name), name, hash_password(password), None)
    store.close()


def payload(account: str, password: str) -> str:
    return base64.b64encode(f"{account}\0{account}\0{password}".encode()).decode()


def authenticate(c: IRCClient, data: str) -> None:
    """One SASL PLAIN exchange: the payload in 400-byte chunks, and a ``+``
    after a last chunk of exactly 400."""
    c.send("AUTHENTICATE PLAIN")
    assert c.expect("AUTHENTICATE").params == ("+",)
    chunks = [data[i:i + 400] for i in range(0, len(data), 400)]
    if len(chunks[-1]) == 400:
        chunks.append("+")
    for chunk in chunks:
        c.send("AUTHENTICATE " + chunk)


def cap_ls(c: IRCClient) -> dict[str, str]:
    c.send("CAP LS 302")
    offered = c.expect("CAP").params[-1].split()
    return dict(item.partition("=")[::2] for item in offered)


# -- draft/account-registration ---------------------------------------------------------
def test_register_before_connect_when_advertised(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    c = srv.client()
    caps = cap_ls(c)
    keys = caps["draft/account-registration"].split(",")
    assert "before-connect" in keys and "custom-account-name" in keys and "email-required" not in keys
    c.send("REGISTER * * longenough1")
    assert c.expect("FAIL").params[:3] == ("REGISTER", "NEED_NICK", "*")
    c.send("NICK early")
    c.send("REGISTER * * longenough1")
    ok = c.expect("REGISTER")
    assert ok.params[:2] == ("SUCCESS", "early")
    logged = c.expect("900")
    assert re.fullmatch(r"early![^!@\s]+@\S+", logged.params[1]), logged.params[1]
    c.send("USER early 0 * :Early")
    c.send("CAP END")
    c.expect("001")
    viewer = srv.client("viewer")
    viewer.send("WHOIS early")
    assert viewer.expect("330").params[1:3] == ("early", "early")


def test_register_policy_keys_and_their_fail_codes(start_server: Callable[..., Server]) -> None:
    srv = start_server("--set", "account_registration_before_connect=false", "--set", "account_email_required=true",
                       "--set", "account_custom_name=false", "--set", "password_min_length=12", workers=WORKERS)
    c = srv.client()
    keys = cap_ls(c)["draft/account-registration"].split(",")
    assert "before-connect" not in keys and "custom-account-name" not in keys and "email-required" in keys
    c.send("NICK strict")
    c.send("REGISTER * a@example.org longenough12")
    assert c.expect("FAIL").params[:2] == ("REGISTER", "COMPLETE_CONNECTION_REQUIRED")
    c.send("USER strict 0 * :s")
    c.send("CAP END")
    c.expect("001")
    c.send("REGISTER other a@example.org longenough12")
    assert c.expect("FAIL").params[:3] == ("REGISTER", "ACCOUNT_NAME_MUST_BE_NICK", "other")
    c.send("REGISTER * * longenough12")
    assert c.expect("FAIL").params[:2] == ("REGISTER", "INVALID_EMAIL")
    c.send("REGISTER * not-an-address longenough12")
    assert c.expect("FAIL").params[:2] == ("REGISTER", "INVALID_EMAIL")
    c.send("REGISTER * a@example.org short12345")  # 10 characters
    weak = c.expect("FAIL")
    assert weak.params[:2] == ("REGISTER", "WEAK_PASSWORD")
    assert "12" in weak.params[-1]
    c.send("REGISTER * a@example.org longenough12")
    assert c.expect("REGISTER").params[:2] == ("SUCCESS", "strict")


def test_password_min_length_applies_to_nickserv(start_server: Callable[..., Server]) -> None:
    srv = start_server("--set", "password_min_length=10", workers=WORKERS)
    c = srv.client("nsuser")
    c.send("PRIVMSG NickServ :REGISTER ninechars")
    assert "10" in c.expect("NOTICE").params[-1]


# -- SASL ------------------------------------------------------------------------------------
def test_sasl_reauthentication_switches_account(start_server: Callable[..., Server], tmp_path: Path) -> None:
    make_accounts(tmp_path, first="password-one", second="password-two")
    srv = start_server(workers=WORKERS)
    peer = srv.client("peer", ("account-notify",))
    c = srv.client()
    c.send("CAP LS 302")
    c.send("CAP REQ :sasl")
    c.expect("CAP")
    c.send("NICK switcher")
    c.send("USER switcher 0 * :s")
    c.nick = "switcher"
    authenticate(c, payload("first", "password-one"))
    assert c.expect("900").params[2] == "first"
    c.expect("903")
    c.send("CAP END")
    c.expect("001")
    c.join("#acc")
    peer.join("#acc")
    authenticate(c, payload("second", "password-two"))
    assert c.expect("900").params[2] == "second"
    c.expect("903")
    note = peer.expect("ACCOUNT")
    assert note.params == ("second",) and note.source is not None and note.source.startswith("switcher!")
    peer.send("WHOIS switcher")
    assert peer.expect("330").params[2] == "second"


def test_sasl_800_byte_payload_in_400_byte_chunks(start_server: Callable[..., Server], tmp_path: Path) -> None:
    password = "p" * (800 - 2 * len("longpw") - 2)
    even = "q" * (600 - 2 * len("evenpw") - 2)  # 800 characters of base64: two full chunks, then "+"
    make_accounts(tmp_path, longpw=password, evenpw=even)
    data = payload("longpw", password)
    assert len(base64.b64decode(data)) == 800
    srv = start_server(workers=WORKERS)
    c = srv.client()
    c.send("CAP REQ :sasl")
    c.expect("CAP")
    authenticate(c, data)
    logged = c.expect("900")
    assert logged.params[2] == "longpw"
    assert re.fullmatch(r"[^!@\s]+![^!@\s]+@\S+", logged.params[1]), logged.params[1]  # before NICK too
    c.expect("903")
    d = srv.client()
    d.send("CAP REQ :sasl")
    d.expect("CAP")
    data2 = payload("evenpw", even)
    assert len(data2) == 800
    authenticate(d, data2)
    assert d.expect("900").params[2] == "evenpw"
    d.expect("903")


def test_endless_sasl_chunks_end_with_904(start_server: Callable[..., Server]) -> None:
    srv = start_server("--set", "flood_exempt=127.0.0.0/8", workers=WORKERS)
    c = srv.client()
    c.send("CAP REQ :sasl")
    c.expect("CAP")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    for _ in range(12):  # more than any legal payload: 4800 characters of base64
        c.send("AUTHENTICATE " + "A" * 400)
    failed = c.expect(lambda m: m.verb in ("904", "905", "903", "900"))
    assert failed.verb == "904"
    c.sync()
    c.drain()  # (the 12th chunk, not a mechanism name, got its own 908 and 904)
    c.send("AUTHENTICATE PLAIN")  # the exchange was reset: a new one starts cleanly
    assert c.expect("AUTHENTICATE").params == ("+",)
    c.send("AUTHENTICATE " + "B" * 401)  # one chunk over 400 bytes
    assert c.expect(lambda m: m.verb in ("904", "905")).verb == "905"


# -- account-tag ------------------------------------------------------------------------------
def test_account_tag_without_message_tags(start_server: Callable[..., Server]) -> None:
    srv = start_server(workers=WORKERS)
    alice = srv.client("alice")
    alice.send("REGISTER * * longenough1")
    alice.expect("900")
    only = srv.client("only", ("account-tag",))
    timed = srv.client("timed", ("account-tag", "server-time", "invite-notify"))
    for c in (alice, only, timed):
        c.join("#at")
    alice.send("PRIVMSG only :direct")
    alice.send("NOTICE only :notice")
    alice.send("PRIVMSG #at :to the channel")
    got = [only.expect(lambda m: m.verb in ("PRIVMSG", "NOTICE")) for _ in range(3)]
    assert [m.params[1] for m in got] == ["direct", "notice", "to the channel"]
    assert all(m.tags == {"account": "alice"} for m in got), [m.to_line() for m in got]
    m = timed.expect("PRIVMSG")
    assert set(m.tags) == {"account", "time"} and m.tags["account"] == "alice"
    joined = only.expect(lambda m: m.verb == "JOIN" and (m.source or "").startswith("timed!"))
    assert joined.tags == {}  # timed is not logged in
    alice.send("JOIN #at2")
    alice.expect("366")
    only.join("#at2")
    alice.send("PART #at2")
    alice.send("JOIN #at2")
    assert only.expect(lambda m: m.verb == "JOIN" and (m.source or "").startswith("alice!")).tags == {
        "account": "alice"}
    alice.send("MODE #at +i")
    outside = srv.client("outside", ("account-tag",))
    alice.send("INVITE outside #at")
    inv = outside.expect("INVITE")
    assert inv.tags == {"account": "alice"} and inv.params == ("outside", "#at")
    note = timed.expect("INVITE")  # invite-notify for members
    assert note.tags.get("account") == "alice"
    # an anonymous sender: no tag at all
    anon = srv.client("anon")
    anon.send("PRIVMSG only :hi")
    assert only.expect(lambda m: m.verb == "PRIVMSG" and m.params[1] == "hi").tags == {}


def test_account_tag_on_membership_and_user_events(start_server: Callable[..., Server]) -> None:
    """The account-tag spec: every message a logged-in user causes carries their account, for
    clients that asked for the cap: PART, TOPIC, MODE, KICK, NICK, AWAY, SETNAME, QUIT too."""
    srv = start_server(workers=WORKERS)
    alice = srv.client("alice", ("setname",))
    alice.send("REGISTER * * longenough1")
    alice.expect("900")
    watcher = srv.client("watcher", ("account-tag", "away-notify", "setname"))
    plain = srv.client("plain", ("away-notify",))
    victim = srv.client("victim")
    assert len({srv.worker_of(n) for n in ("alice", "watcher", "plain")}) > 1
    for c in (alice, watcher, plain, victim):
        c.join("#ev")
    for c in (watcher, plain):
        c.sync()
        c.drain()
    for line in ("TOPIC #ev :news", "MODE #ev +m", "KICK #ev victim :out", "AWAY :later", "SETNAME :Alice A",
                 "NICK alice2", "PART #ev :bye"):
        alice.send(line)
    alice.sync()
    verbs = ["TOPIC", "MODE", "KICK", "AWAY", "SETNAME", "NICK", "PART"]
    got = [watcher.expect(lambda m, v=v: m.verb == v and (m.source or "").startswith("alice")) for v in verbs]
    assert [m.tags.get("account") for m in got] == ["alice"] * len(verbs), [m.to_line() for m in got]
    plain_got = [plain.expect(lambda m, v=v: m.verb == v and (m.source or "").startswith("alice"))
                 for v in ("TOPIC", "MODE", "KICK", "AWAY", "NICK", "PART")]
    assert all(m.tags == {} for m in plain_got)  # no cap: no tags
    watcher.send("JOIN #ev2")
    watcher.expect("366")
    alice.send("JOIN #ev2")
    alice.expect("366")
    alice.send("QUIT :gone")
    quit_ = watcher.expect("QUIT")
    assert quit_.tags.get("account") == "alice"


def test_register_before_connect_refused_to_a_banned_address(start_server: Callable[..., Server],
                                                             tmp_path: Path) -> None:
    conf = tmp_path / "ops.toml"
    conf.write_text(f'[[oper]]\nname = "root"\npassword = "{hash_password("hunter2")}"\n')
    srv = start_server("--config", str(conf), workers=WORKERS)
    boss = srv.client("boss")
    boss.send("OPER root hunter2")
    boss.expect("381")
    boss.send("KLINE *@127.0.0.1 :go away")
    boss.expect("NOTICE")
    c = srv.client()
    c.send("NICK sneaky")
    c.send("REGISTER * * longenough1")
    assert "banned" in c.expect(lambda m: m.verb in ("465", "REGISTER", "FAIL")).params[-1]
    c.wait_closed()
    store = Store(tmp_path / "data")
    assert store.account("sneaky") is None
    store.close()
