"""Channel modes and moderation, with the users on different workers."""

from __future__ import annotations

import pytest

from tests.conftest import Server
from tests.ircclient import IRCClient


@pytest.fixture
def pair(server: Server) -> tuple[IRCClient, IRCClient]:
    """alice (channel operator of #c) and bob, on different workers."""
    alice = server.client("alice")
    bob = server.client("bob")
    assert server.worker_of("alice") != server.worker_of("bob")
    alice.join("#c")
    return alice, bob


def mode_line(c: IRCClient) -> tuple[str, ...]:
    return c.expect("MODE").params


def test_first_user_is_operator_and_mode_query(pair, server: Server) -> None:
    alice, bob = pair
    alice.send("NAMES #c")
    assert alice.expect("353").params[3] == "@alice"
    bob.send("MODE #c")
    assert bob.expect("324").params[1:] == ("#c", "+nt")
    assert int(bob.expect("329").params[2]) > 0


def test_op_and_voice_broadcast_once_to_members(pair) -> None:
    alice, bob = pair
    bob.join("#c")
    alice.send("MODE #c +ov-n bob bob")
    assert mode_line(bob) == ("#c", "+ov-n", "bob", "bob")
    assert mode_line(alice) == ("#c", "+ov-n", "bob", "bob")
    bob.send("NAMES #c")
    assert sorted(bob.expect("353").params[3].split()) == ["@alice", "@bob"]
    bob.send("MODE #c -o alice")
    assert mode_line(alice) == ("#c", "-o", "alice")
    alice.send("MODE #c +o bob")
    assert alice.expect("482").params[1] == "#c"
    bob.send("MODE #c +o nobody")
    assert bob.expect("401").params[1] == "nobody"


def test_non_operator_cannot_change_modes(pair) -> None:
    _, bob = pair
    bob.join("#c")
    bob.send("MODE #c +m")
    assert bob.expect("482").params[1] == "#c"
    bob.send("MODE #c +Z")
    assert bob.expect("472").params[1] == "Z"


def test_ban_keeps_people_out_and_silences(pair) -> None:
    alice, bob = pair
    bob.join("#c")
    alice.send("MODE #c +b bob!*@*")
    assert mode_line(bob) == ("#c", "+b", "bob!*@*")
    assert mode_line(alice) == ("#c", "+b", "bob!*@*")
    bob.send("PRIVMSG #c :can I talk?")
    assert bob.expect("404").params[1] == "#c"
    bob.send("PART #c")
    bob.expect("PART")
    bob.send("JOIN #c")
    assert bob.expect("474").params[1] == "#c"
    alice.send("MODE #c b")
    entry = alice.expect("367")
    assert entry.params[1:4] == ("#c", "bob!*@*", "alice!~alice@127.0.0.1")
    alice.expect("368")
    alice.send("MODE #c +e bob!~bob@*")
    assert mode_line(alice) == ("#c", "+e", "bob!~bob@*")
    bob.join("#c")
    alice.send("MODE #c -be bob!*@* bob!~bob@*")
    assert mode_line(bob) == ("#c", "-be", "bob!*@*", "bob!~bob@*")


def test_ban_by_host_mask(pair) -> None:
    alice, bob = pair
    alice.send("MODE #c +b *!*@127.0.0.1")
    mode_line(alice)
    bob.send("JOIN #c")
    bob.expect("474")


def test_invite_only_and_invite(server: Server, pair) -> None:
    alice, bob = pair
    carol = server.client("carol", caps=("invite-notify",))
    carol.join("#c")
    alice.send("MODE #c +i")
    mode_line(alice)
    bob.send("JOIN #c")
    assert bob.expect("473").params[1] == "#c"
    carol.send("INVITE bob #c")
    assert carol.expect("482").params[1] == "#c"
    alice.send("INVITE bob #c")
    assert alice.expect("341").params[1:] == ("bob", "#c")
    inv = bob.expect("INVITE")
    assert inv.source.startswith("alice!") and inv.params == ("bob", "#c")
    note = carol.expect("INVITE")
    assert note.params == ("bob", "#c")
    bob.join("#c")
    alice.send("INVITE bob #c")
    assert alice.expect("443").params[1:3] == ("bob", "#c")
    alice.send("INVITE nobody #c")
    alice.expect("401")


def test_invite_exception_lets_in(pair) -> None:
    alice, bob = pair
    alice.send("MODE #c +iI *!~bob@*")
    mode_line(alice)
    bob.join("#c")


def test_key(pair) -> None:
    alice, bob = pair
    alice.send("MODE #c +k sesame")
    assert mode_line(alice) == ("#c", "+k", "sesame")
    bob.send("JOIN #c")
    assert bob.expect("475").params[1] == "#c"
    bob.send("JOIN #c wrong")
    bob.expect("475")
    bob.send("MODE #c")
    assert bob.expect("324").params[2:] == ("+ntk", "*"), "non-members do not see the key"
    bob.send("JOIN #c sesame")
    bob.expect("366")
    bob.send("MODE #c")
    assert bob.expect("324").params[2:] == ("+ntk", "sesame")


def test_limit(server: Server, pair) -> None:
    alice, bob = pair
    alice.send("MODE #c +l 1")
    assert mode_line(alice) == ("#c", "+l", "1")
    bob.send("JOIN #c")
    assert bob.expect("471").params[1] == "#c"
    alice.send("MODE #c -l")
    mode_line(alice)
    bob.join("#c")


def test_moderated_silences_until_voiced(pair) -> None:
    alice, bob = pair
    bob.join("#c")
    alice.send("MODE #c +m")
    mode_line(bob)
    bob.send("PRIVMSG #c :hello?")
    assert bob.expect("404").params[1] == "#c"
    alice.sync()
    assert not [m for m in alice.drain() if m.verb == "PRIVMSG"]
    alice.send("MODE #c +v bob")
    mode_line(bob)
    bob.send("PRIVMSG #c :now I can")
    assert alice.expect("PRIVMSG").params[1] == "now I can"


def test_no_outside_messages_toggle(pair) -> None:
    alice, bob = pair
    bob.send("PRIVMSG #c :from outside")
    bob.expect("404")
    alice.send("MODE #c -n")
    mode_line(alice)
    bob.send("PRIVMSG #c :from outside")
    msg = alice.expect("PRIVMSG")
    assert msg.source.startswith("bob!") and msg.params == ("#c", "from outside")


def test_topic_lock(pair) -> None:
    alice, bob = pair
    bob.join("#c")
    bob.send("TOPIC #c :mine")
    bob.expect("482")
    alice.send("MODE #c -t")
    mode_line(bob)
    bob.send("TOPIC #c :mine now")
    assert alice.expect("TOPIC").params == ("#c", "mine now")


def test_secret_channels_hidden(server: Server, pair) -> None:
    alice, bob = pair
    alice.join("#open")
    alice.send("MODE #c +s")
    mode_line(alice)
    bob.send("LIST")
    bob.expect("321")
    listed = []
    while True:
        m = bob.expect("322|323")
        if m.verb == "323":
            break
        listed.append(m.params[1])
    assert "#open" in listed and "#c" not in listed
    bob.send("WHOIS alice")
    assert bob.expect("319").params[2] == "@#open"
    alice.send("NAMES #c")
    assert alice.expect("353").params[1] == "@"


def test_kick(server: Server, pair) -> None:
    alice, bob = pair
    bob.join("#c")
    bob.send("KICK #c alice :nope")
    assert bob.expect("482").params[1] == "#c"
    alice.send("KICK #c bob :behave")
    kick = bob.expect("KICK")
    assert kick.source.startswith("alice!") and kick.params == ("#c", "bob", "behave")
    assert alice.expect("KICK").params == ("#c", "bob", "behave")
    alice.send("PRIVMSG #c :after the kick")
    alice.send("NAMES #c")
    assert alice.expect("353").params[3] == "@alice"
    bob.sync()
    assert not [m for m in bob.drain() if m.verb == "PRIVMSG"], "a kicked user hears nothing more"
    alice.send("KICK #c bob")
    assert alice.expect("441").params[1:3] == ("bob", "#c")


def test_list_filters(server: Server, pair) -> None:
    alice, bob = pair
    bob.join("#c")
    alice.send("TOPIC #c :the topic")
    alice.join("#lonely")
    bob.send("LIST >1")
    bob.expect("321")
    row = bob.expect("322")
    assert row.params[1:3] == ("#c", "2") and row.params[3].endswith("the topic")
    bob.expect("323")
    bob.send("LIST #lone*")
    bob.expect("321")
    assert bob.expect("322").params[1] == "#lonely"
    bob.expect("323")


def test_empty_channel_disappears(pair) -> None:
    alice, bob = pair
    alice.send("TOPIC #c :old topic")
    alice.expect("TOPIC")
    alice.send("PART #c")
    alice.expect("PART")
    bob.join("#c")
    bob.send("NAMES #c")
    assert bob.expect("353").params[3] == "@bob"
    bob.send("TOPIC #c")
    bob.expect("331")


def test_mode_changes_and_kicks_keep_the_channel_order(server: Server, pair) -> None:
    alice, bob = pair
    carol = server.client("carol")
    dave = server.client("dave")
    for c in (bob, carol, dave):
        c.join("#c")
    alice.send("PRIVMSG #c :one")
    alice.send("MODE #c +v bob")
    alice.send("PRIVMSG #c :two")
    alice.send("KICK #c carol :bye")
    alice.send("PRIVMSG #c :three")
    want = ["PRIVMSG one", "MODE +v", "PRIVMSG two", "KICK carol", "PRIVMSG three"]
    for c in (bob, dave):
        seen = []
        while len(seen) < len(want):
            m = c.expect(lambda m: m.verb in ("PRIVMSG", "MODE", "KICK"))
            seen.append(f"{m.verb} {m.params[1]}")
        assert seen == want
