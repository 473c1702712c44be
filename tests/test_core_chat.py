"""Two clients on different workers chat in a channel and privately."""

from __future__ import annotations

from tests.conftest import Server


def test_channel_and_private_chat_across_workers(server: Server) -> None:
    alice = server.client("alice", caps=("echo-message", "server-time", "message-tags"))
    bob = server.client("bob")
    assert server.worker_of("alice") != server.worker_of("bob")
    alice.join("#Lobby")
    bob.join("#lobby")
    join = alice.expect(lambda m: m.verb == "JOIN" and m.source.startswith("bob!"))
    assert join.params[0] == "#Lobby"

    alice.send("@+typing=active PRIVMSG #lobby :hello bob 👋")
    echo = alice.expect("PRIVMSG")
    assert echo.params == ("#Lobby", "hello bob 👋")
    assert "time" in echo.tags and "msgid" in echo.tags and echo.tags["+typing"] == "active"
    got = bob.expect("PRIVMSG")
    assert got.source == "alice!~alice@127.0.0.1"
    assert got.params == ("#Lobby", "hello bob 👋")
    assert got.tags == {}, "bob asked for no tags"

    bob.send("PRIVMSG alice :psst")
    pm = alice.expect("PRIVMSG")
    assert pm.source.startswith("bob!") and pm.params == ("alice", "psst")
    bob.sync()
    assert not [m for m in bob.drain() if m.verb == "PRIVMSG"], "no echo without echo-message"


def test_errors_for_bad_targets(server: Server) -> None:
    alice = server.client("alice")
    alice.send("PRIVMSG nobody :hi")
    assert alice.expect("401").params[1] == "nobody"
    alice.send("PRIVMSG #nowhere :hi")
    assert alice.expect("403").params[1] == "#nowhere"
    alice.send("PRIVMSG")
    alice.expect("411")
    alice.send("PRIVMSG alice")
    alice.expect("412")
    alice.send("NOTICE nobody :hi")
    alice.send("FOOBAR x")
    assert alice.expect("421").params[1] == "FOOBAR"
    alice.send("JOIN")
    assert alice.expect("461").params[1] == "JOIN"
    alice.sync()
    assert not [m for m in alice.drain() if m.verb == "401"], "NOTICE never gets an automatic reply"


def test_outside_messages_refused_by_default(server: Server) -> None:
    alice = server.client("alice")
    bob = server.client("bob")
    alice.join("#room")
    bob.send("PRIVMSG #room :let me in")
    assert bob.expect("404").params[1] == "#room"


def test_nick_change_seen_once_by_each_peer(server: Server) -> None:
    alice = server.client("alice")
    bob = server.client("bob")
    alice.join("#a")
    alice.join("#b")
    bob.join("#a")
    bob.join("#b")
    bob.send("NICK robert")
    assert bob.expect("NICK").params == ("robert",)
    change = alice.expect("NICK")
    assert change.source.startswith("bob!") and change.params == ("robert",)
    alice.sync()
    assert not [m for m in alice.drain() if m.verb == "NICK"], "one NICK line, not one per channel"
    alice.send("PRIVMSG robert :renamed")
    assert bob.expect("PRIVMSG").params[1] == "renamed"


def test_quit_reason_shown_and_nick_freed(server: Server) -> None:
    alice = server.client("alice")
    bob = server.client("bob")
    alice.join("#q")
    bob.join("#q")
    bob.send("QUIT :see you")
    err = bob.expect("ERROR")
    assert "see you" in err.params[0]
    q = alice.expect("QUIT")
    assert q.source.startswith("bob!") and q.params == ("Quit: see you",)
    again = server.client("bob")
    again.join("#q")


def test_nick_collision_across_workers(server: Server) -> None:
    server.client("alice")
    other = server.client()
    other.send("NICK ALICE")
    assert other.expect("433").params[1] == "ALICE"
    other.send("NICK Alice[1]")
    other.send("NICK alice{1}")  # rfc1459: [ and { are the same letter
    other.send("USER x 0 * :x")
    other.expect("001")
    third = server.client()
    third.send("NICK alice[1]")
    assert third.expect("433")


def test_nick_and_user_in_one_write_register_in_one_step_or_get_433(server: Server) -> None:
    """NICK then USER in one read are claimed and registered by one registry
    request; a taken nick still gets 433 and the client can pick another."""
    server.client("alice")
    taken = server.client()
    taken.send(b"NICK alice\r\nUSER x 0 * :x\r\n")
    err = taken.expect("433")
    assert err.params[:2] == ("*", "alice")
    taken.send("NICK alice_")
    assert taken.expect("001").params[0] == "alice_"
    fresh = server.client()
    fresh.send(b"NICK bob\r\nUSER b 0 * :Bob\r\n")
    assert fresh.expect("001").params[0] == "bob"
    fresh.expect("376|422")
    # A NICK with no USER after it is claimed before the thread waits again.
    half = server.client()
    half.send(b"NICK carol\r\nPING :p\r\n")
    half.expect("PONG")
    rival = server.client()
    rival.send("NICK carol")
    assert rival.expect("433").params[1] == "carol"
    half.send("USER c 0 * :Carol")
    assert half.expect("001").params[0] == "carol"
    taken.send("WHOIS bob")
    assert taken.expect("311").params[1] == "bob"


def test_join_several_channels_with_keys_and_join_zero(server: Server) -> None:
    alice = server.client("alice")
    alice.send("JOIN #one,#two,#three")
    for name in ("#one", "#two", "#three"):
        assert alice.expect("JOIN").params[0] == name
        assert alice.expect("366").params[1] == name
    alice.send("JOIN 0")
    parted = {alice.expect("PART").params[0] for _ in range(3)}
    assert parted == {"#one", "#two", "#three"}


def test_names_topic_and_whois(server: Server) -> None:
    alice = server.client("alice", caps=("multi-prefix",))
    bob = server.client("bob")
    alice.join("#t")
    bob.join("#t")
    bob.send("TOPIC #t :no ops")
    assert bob.expect("482").params[1] == "#t"
    alice.send("TOPIC #t :Welcome all")
    assert bob.expect("TOPIC").params == ("#t", "Welcome all")
    assert alice.expect("TOPIC").params == ("#t", "Welcome all")
    bob.send("TOPIC #t")
    assert bob.expect("332").params[2] == "Welcome all"
    assert bob.expect("333").params[2].startswith("alice!")
    bob.send("NAMES #t")
    names = bob.expect("353")
    assert sorted(names.params[3].split()) == ["@alice", "bob"]
    bob.expect("366")
    bob.send("WHOIS alice")
    assert bob.expect("311").params[1:4] == ("alice", "~alice", "127.0.0.1")
    assert bob.expect("319").params[2] == "@#t"
    bob.expect("318")
    carol = server.client("carol")
    burst = carol.join("#t")
    assert [m.params[2] for m in burst if m.verb == "332"] == ["Welcome all"]


def test_a_private_message_names_the_target_by_its_nick(server: Server) -> None:
    alice = server.client("alice", caps=("echo-message",))
    bob = server.client("BoB")
    alice.send("PRIVMSG bob :in any case")  # typed in another case, from another worker
    assert alice.expect("PRIVMSG").params == ("BoB", "in any case")
    assert bob.expect("PRIVMSG").params == ("BoB", "in any case")
    alice.send("NOTICE BOB :again")
    assert alice.expect("NOTICE").params == ("BoB", "again")
    assert bob.expect("NOTICE").params == ("BoB", "again")


def test_a_relayed_line_stays_within_512_bytes(server: Server) -> None:
    alice = server.client("alice", caps=("echo-message",))
    bob = server.client("bob")
    alice.join("#long")
    bob.join("#long")
    alice.expect(lambda m: m.verb == "JOIN" and m.source.startswith("bob!"))
    text = "é" * 246 + " xy"  # "PRIVMSG #long :" + 495 bytes: the longest line a client may send
    alice.send("PRIVMSG #long :" + text)
    got = bob.expect("PRIVMSG")
    assert alice.expect("PRIVMSG").params[1] == got.params[1], "the echo shows what the others got"
    room = 512 - len(f":{got.source} PRIVMSG #long :\r\n".encode())
    assert got.params[1] == "é" * (room // 2), "cut to fit, on a character boundary"
