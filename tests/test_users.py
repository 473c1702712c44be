"""User-facing commands: WHO/WHOIS/WHOWAS, ISON, USERHOST, AWAY, user modes,
server information, and the IRCv3 caps around users."""

from __future__ import annotations

from tests.conftest import Server


def test_whois_full(server: Server) -> None:
    alice = server.client("alice")
    bob = server.client("bob")
    alice.join("#w")
    alice.send("AWAY :lunch")
    alice.expect("306")
    bob.send("WHOIS alice")
    assert bob.expect("311").params[1:] == ("alice", "~alice", "127.0.0.1", "*", "Real alice")
    assert bob.expect("319").params[2] == "@#w"
    assert bob.expect("312").params[2] == "irc.chatroom.local"
    assert bob.expect("301").params[2] == "lunch"
    idle = bob.expect("317")
    assert idle.params[2].isdigit() and int(idle.params[3]) > 0
    bob.expect("318")
    bob.send("WHOIS nobody")
    assert bob.expect("401").params[1] == "nobody"
    assert bob.expect("318").params[1] == "nobody"


def test_away_replies_and_away_notify(server: Server) -> None:
    alice = server.client("alice")
    bob = server.client("bob", caps=("away-notify",))
    alice.join("#a")
    bob.join("#a")
    alice.send("AWAY :brb")
    assert alice.expect("306")
    note = bob.expect("AWAY")
    assert note.source.startswith("alice!") and note.params == ("brb",)
    bob.send("PRIVMSG alice :are you there")
    away = bob.expect("301")
    assert away.params[1:] == ("alice", "brb")
    alice.send("AWAY")
    alice.expect("305")
    back = bob.expect("AWAY")
    assert back.params == ()


def test_who_and_whox(server: Server) -> None:
    alice = server.client("alice")
    bob = server.client("bob")
    alice.join("#who")
    bob.join("#who")
    bob.send("WHO #who")
    rows = {}
    for _ in range(2):
        r = bob.expect("352")
        rows[r.params[5]] = r.params
    bob.expect("315")
    assert rows["alice"][1:5] == ("#who", "~alice", "127.0.0.1", "irc.chatroom.local")
    assert rows["alice"][6] == "H@" and rows["alice"][7] == "0 Real alice"
    bob.send("WHO #who %tcnfr,42")
    got = {}
    for _ in range(2):
        r = bob.expect("354")
        got[r.params[3]] = r.params[1:]
    assert got["bob"] == ("42", "#who", "bob", "H", "Real bob")
    bob.expect("315")
    bob.send("WHO ali*")
    assert bob.expect("352").params[5] == "alice"
    bob.expect("315")


def test_invisible_users_hidden_from_who_masks(server: Server) -> None:
    alice = server.client("alice")
    bob = server.client("bob")
    alice.send("MODE alice +i")
    assert alice.expect("MODE").params == ("alice", "+i")
    alice.send("MODE alice")
    assert alice.expect("221").params[1] == "+i"
    bob.send("WHO alice")
    end = bob.expect("315")
    assert not [m for m in bob.drain() if m.verb == "352"] and end
    alice.join("#shared")
    bob.join("#shared")
    bob.send("WHO alice")
    assert bob.expect("352").params[5] == "alice"


def test_whowas_ison_userhost(server: Server) -> None:
    alice = server.client("alice")
    bob = server.client("bob")
    bob.send("QUIT")
    bob.wait_closed()
    alice.send("ISON alice bob carol")
    alice.expect(lambda m: m.verb == "303" and m.params[1] == "alice")
    alice.send("WHOWAS bob")
    assert alice.expect("314").params[1:4] == ("bob", "~bob", "127.0.0.1")
    alice.expect("369")
    alice.send("WHOWAS never")
    alice.expect("406")
    alice.send("USERHOST alice")
    assert alice.expect("302").params[1] == "alice=+~alice@127.0.0.1"


def test_server_information_commands(server: Server) -> None:
    c = server.client("curious")
    for command, numerics in [("MOTD", ["422"]), ("LUSERS", ["251", "255"]), ("VERSION", ["351"]),
                              ("TIME", ["391"]), ("ADMIN", ["256", "257", "258", "259"]),
                              ("INFO", ["371", "374"])]:
        c.send(command)
        for n in numerics:
            c.expect(n)


def test_extended_join_userhost_in_names_and_setname(server: Server) -> None:
    alice = server.client("alice", caps=("extended-join", "userhost-in-names", "setname"))
    bob = server.client("bob")
    alice.join("#x")
    bob.join("#x")
    j = alice.expect("JOIN")
    assert j.params == ("#x", "*", "Real bob")
    alice.send("NAMES #x")
    names = alice.expect("353").params[3].split()
    assert sorted(names) == ["@alice!~alice@127.0.0.1", "bob!~bob@127.0.0.1"]
    bob.send("SETNAME :Robert Tables")
    sn = alice.expect("SETNAME")
    assert sn.source.startswith("bob!") and sn.params == ("Robert Tables",)
    alice.send("WHOIS bob")
    assert alice.expect("311").params[5] == "Robert Tables"
    alice.send("SETNAME :")
    assert alice.expect("FAIL").params[:2] == ("SETNAME", "INVALID_REALNAME")
