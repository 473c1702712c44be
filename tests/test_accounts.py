"""Accounts: REGISTER, SASL PLAIN, NickServ, nick protection, ChanServ."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

from tests.conftest import Server
from tests.ircclient import IRCClient


def sasl_plain(account: str, password: str) -> str:
    return base64.b64encode(f"{account}\0{account}\0{password}".encode()).decode()


def register_account(c: IRCClient, account: str, password: str) -> None:
    c.send(f"REGISTER {account} * :{password}")
    ok = c.expect("REGISTER")
    assert ok.params[:2] == ("SUCCESS", account)
    assert c.expect("900").params[2] == account


def found_home(founder: IRCClient) -> None:
    """A logged-in founder registers #home with ChanServ, with a topic and +m."""
    founder.join("#home")
    founder.send("TOPIC #home :Home sweet home")
    founder.expect("TOPIC")
    founder.send("PRIVMSG ChanServ :REGISTER #home")
    assert "registered" in founder.expect("NOTICE").params[1]
    founder.send("MODE #home +m")
    founder.expect("MODE")


def test_register_then_sasl_login(server: Server, tmp_path: Path) -> None:
    alice = server.client("alice")
    register_account(alice, "alice", "correct horse")
    alice.send("REGISTER alice * other pass")
    assert alice.expect("FAIL").params[:2] == ("REGISTER", "ALREADY_AUTHENTICATED")
    other = server.client("other")
    other.send("REGISTER alice * whatever1")
    assert other.expect("FAIL").params[:2] == ("REGISTER", "ACCOUNT_EXISTS")
    other.send("REGISTER newname * 123")
    assert other.expect("FAIL").params[:2] == ("REGISTER", "WEAK_PASSWORD")
    alice.send("QUIT")
    alice.wait_closed()

    c = server.client()
    c.send("CAP LS 302")
    assert "sasl=PLAIN" in c.expect("CAP").params[2].split()
    c.send("CAP REQ :sasl")
    c.expect("CAP")
    c.send("NICK alice")
    c.send("USER alice 0 * :Alice")
    c.send("AUTHENTICATE PLAIN")
    assert c.expect("AUTHENTICATE").params == ("+",)
    c.send("AUTHENTICATE " + sasl_plain("alice", "wrong"))
    c.expect("904")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + sasl_plain("alice", "correct horse"))
    assert c.expect("900").params[2] == "alice"
    c.expect("903")
    c.send("CAP END")
    c.expect("001")
    viewer = server.client("viewer")
    viewer.send("WHOIS alice")
    assert viewer.expect("330").params[1:3] == ("alice", "alice")
    # stored hashed, never in the clear, never logged
    db = sqlite3.connect(tmp_path / "data" / "chatroom.db")
    (stored,) = db.execute("SELECT password FROM accounts WHERE fold='alice'").fetchone()
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert not any("correct horse" in line for line in server.lines)


def test_sasl_abort_and_unknown_mechanism(server: Server) -> None:
    c = server.client()
    c.send("AUTHENTICATE EXTERNAL")
    assert c.expect("908").params[1] == "PLAIN"
    c.expect("904")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE *")
    c.expect("906")


def test_nickserv_flow(server: Server) -> None:
    bob = server.client("bob")
    bob.send("PRIVMSG NickServ :REGISTER hunter22")
    n = bob.expect("NOTICE")
    assert n.source.startswith("NickServ!") and "Registered bob" in n.params[1]
    bob.expect("900")
    bob.send("PRIVMSG NickServ :SET PASSWORD newpass1")
    assert "Password changed" in bob.expect("NOTICE").params[1]
    bob.send("PRIVMSG NickServ :LOGOUT")
    bob.expect("901")
    assert "logged out" in bob.expect("NOTICE").params[1]
    bob.send("PRIVMSG NickServ :IDENTIFY hunter22")
    assert "Invalid" in bob.expect("NOTICE").params[1]
    bob.send("PRIVMSG NickServ :IDENTIFY bob newpass1")
    assert bob.expect("900").params[2] == "bob"
    assert "identified" in bob.expect("NOTICE").params[1]
    bob.send("PRIVMSG NickServ :DROP newpass1")
    assert "dropped" in bob.expect("NOTICE").params[1]
    bob.send("PRIVMSG NickServ :INFO bob")
    assert "not registered" in bob.expect("NOTICE").params[1]


def test_account_notify_tag_and_extended_join(server: Server) -> None:
    watcher = server.client("watcher", caps=("account-notify", "extended-join", "message-tags", "account-tag"))
    dana = server.client("dana")
    watcher.join("#acc")
    dana.join("#acc")
    assert watcher.expect("JOIN").params[1] == "*"
    register_account(dana, "dana", "secret99")
    acc = watcher.expect("ACCOUNT")
    assert acc.source.startswith("dana!") and acc.params == ("dana",)
    dana.send("PRIVMSG #acc :tagged")
    assert watcher.expect("PRIVMSG").tags["account"] == "dana"
    dana.send("PART #acc")
    dana.join("#acc")
    assert watcher.expect("JOIN").params[1] == "dana"


def test_nick_protection_renames_after_grace(start_server) -> None:
    server: Server = start_server("--set", "nick_protection_grace=1")
    owner = server.client("owner")
    register_account(owner, "owner", "ownerpass")
    owner.send("QUIT")
    owner.wait_closed()
    squatter = server.client("owner")
    warn = squatter.expect("NOTICE")
    assert "registered" in warn.params[1]
    change = squatter.expect("NICK", timeout=15)
    assert change.source.startswith("owner!") and change.params[0].startswith("Guest")
    # logging in within the grace keeps the nick
    rightful = server.client("owner")
    rightful.send("PRIVMSG NickServ :IDENTIFY ownerpass")
    rightful.expect("900")
    rightful.send("PING :later")
    rightful.expect("PONG")
    rightful.expect_none("NICK", timeout=2.5)


def test_registration_limited_to_operators(start_server, tmp_path: Path) -> None:
    from server.ops.passwords import hash_password

    conf = tmp_path / "closed.toml"
    conf.write_text(f'account_registration = "opers"\n[[oper]]\nname = "admin"\npassword = "{hash_password("pw")}"\n')
    server: Server = start_server("--config", str(conf))
    user = server.client("user")
    user.send("REGISTER user * password1")
    assert user.expect("FAIL").params[:2] == ("REGISTER", "DISABLED")
    admin = server.client("admin")
    admin.send("OPER admin pw")
    admin.expect("381")
    register_account(admin, "admin", "password1")


def test_registered_channel_survives_restart(start_server) -> None:
    server: Server = start_server()
    founder = server.client("founder")
    register_account(founder, "founder", "founderpw")
    found_home(founder)
    server.stop()

    server2: Server = start_server()
    guest = server2.client("guest")
    burst = guest.join("#home")
    assert [m.params[2] for m in burst if m.verb == "332"] == ["Home sweet home"]
    guest.send("NAMES #home")
    assert guest.expect("353").params[3] == "guest", "no op for a first joiner without access"
    guest.send("MODE #home")
    assert "m" in guest.expect("324").params[2]
    founder = server2.client()
    founder.nick = "founder"
    founder.send("CAP REQ :sasl")
    founder.send("NICK founder")
    founder.send("USER founder 0 * :f")
    founder.send("AUTHENTICATE PLAIN")
    founder.expect("AUTHENTICATE")
    founder.send("AUTHENTICATE " + sasl_plain("founder", "founderpw"))
    founder.expect("903")
    founder.send("CAP END")
    founder.expect("001")
    founder.join("#home")
    founder.send("NAMES #home")
    assert "@founder" in founder.expect("353").params[3].split()
