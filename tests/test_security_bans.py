"""Channel bans that cannot be dodged, and that cannot be used to probe.

* Ban evasion: a user banned in a channel they are in cannot change nick, out
  of the ban or into one (435 ERR_BANONCHAN); ops and voiced users can.
* Cloak probing: only bans (and exceptions, invite exceptions) set by a server
  operator match real addresses; a channel operator's ban on a guessed address
  says nothing about who has it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from server.ops.passwords import hash_password
from server.state.registry import Channel, Registry, User
from tests.conftest import Server
from tests.ircclient import IRCClient


def test_banned_user_cannot_change_nick_out_of_the_ban(server: Server) -> None:
    op = server.client("op")
    bob = server.client("bob")
    op.join("#c")
    bob.join("#c")
    op.send("MODE #c +b bob!*@*")
    op.expect("MODE")
    bob.expect("MODE")
    bob.send("NICK robert")
    err = bob.expect("435")
    assert err.params[1:3] == ("robert", "#c")
    bob.send("WHOIS bob")
    bob.expect("311")  # still bob
    # out of the channel, the ban no longer holds the nick
    bob.send("PART #c")
    bob.expect("PART")
    bob.send("NICK robert")
    assert bob.expect("NICK").params == ("robert",)


def test_banned_user_cannot_change_nick_into_a_ban_unless_voiced(server: Server) -> None:
    op = server.client("op")
    carol = server.client("carol")
    op.join("#c")
    carol.join("#c")
    op.send("MODE #c +b evil!*@*")
    op.expect("MODE")
    carol.send("NICK evil")
    assert carol.expect("435").params[1:3] == ("evil", "#c")
    carol.send("NICK fine")  # a nick no ban matches: allowed
    assert carol.expect("NICK").params == ("fine",)
    op.send("MODE #c +v fine")
    carol.expect("MODE")
    carol.send("NICK evil")  # voiced users may, as they may speak
    assert carol.expect("NICK").params == ("evil",)


@pytest.fixture
def cloaked(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    conf = tmp_path / "ops.toml"
    conf.write_text(f'[[oper]]\nname = "root"\npassword = "{hash_password("hunter2")}"\n')
    # loopback cloaked too, so the test's users stand for remote ones
    return start_server("--config", str(conf), "--set", "cloak_exempt=")


def test_channel_operator_bans_do_not_match_real_addresses(cloaked: Server) -> None:
    prober = cloaked.client("prober")
    prober.join("#probe")
    victim = IRCClient(cloaked.port, source="127.0.0.7")
    cloaked.clients.append(victim)
    victim.register("victim")
    prober.send("WHOIS victim")
    host = prober.expect("311").params[3]
    assert "127.0.0.7" not in host
    # the probe: ban a guessed address, watch for 474
    prober.send("MODE #probe +b *!*@127.0.0.7")
    prober.expect("MODE")
    victim.send("JOIN #probe")
    victim.expect("JOIN")  # no 474: the guess tells nothing
    victim.send("PART #probe")
    victim.expect("PART")
    # a ban on the cloak works
    prober.send(f"MODE #probe +b *!*@{host}")
    prober.expect("MODE")
    victim.send("JOIN #probe")
    victim.expect("474")


def test_operator_bans_match_real_addresses(cloaked: Server) -> None:
    boss = cloaked.client("boss")
    boss.send("OPER root hunter2")
    boss.expect("381")
    boss.join("#keep")
    victim = IRCClient(cloaked.port, source="127.0.0.8")
    cloaked.clients.append(victim)
    victim.register("victim")
    boss.send("MODE #keep +b *!*@127.0.0.8")
    boss.expect("MODE")
    victim.send("JOIN #keep")
    victim.expect("474")
    # an ordinary user's exception on the real address does not lift it either...
    helper = cloaked.client("helper")
    helper.join("#keep")
    boss.send("MODE #keep +o helper")
    helper.expect(lambda m: m.verb == "MODE" and m.params[1] == "+o")
    helper.send("MODE #keep +e *!*@127.0.0.8")
    helper.expect(lambda m: m.verb == "MODE" and m.params[1] == "+e")
    victim.send("JOIN #keep")
    victim.expect("474")
    # ...and once the operator's ban is gone, re-adding it as a channel operator does not match
    boss.send("MODE #keep -b *!*@127.0.0.8")
    boss.expect(lambda m: m.verb == "MODE" and m.params[1] == "-b")
    helper.send("MODE #keep -e+b *!*@127.0.0.8 *!*@127.0.0.8")
    helper.expect(lambda m: m.verb == "MODE" and m.params[1] == "-e+b")
    victim.send("JOIN #keep")
    victim.expect("JOIN")


def target_chanop_oper() -> tuple[Registry, Channel, User]:
    """A registry with a target (sid 1), the operator of #x (2) and a server
    operator (3), each on a real address and a cloak; returns it, #x, target."""
    reg = Registry(lambda workers, item: None)
    reg.connect(1, 0, "192.0.2.5", "abc.def.ip")
    reg.connect(2, 0, "198.51.100.1", "zzz.yyy.ip")
    reg.connect(3, 0, "203.0.113.9", "ooo.ppp.ip")
    for sid, nick in ((1, "target"), (2, "chanop"), (3, "oper")):
        reg.claim_nick(sid, nick)
        reg.register(sid, "~u", "real", 0.0)
    reg.users[3].modes = reg.users[3].modes | {"o"}
    reg.join(2, "#x", None, 0.0)
    return reg, reg.channels["#x"], reg.users[1]


def test_registry_real_address_rule() -> None:
    reg, ch, target = target_chanop_oper()
    reg.mode(2, "#x", [(True, "b", "*!*@192.0.2.5")], 0.0)
    assert not reg.is_banned(ch, target)
    reg.mode(2, "#x", [(True, "b", "*!*@abc.def.ip")], 0.0)
    assert reg.is_banned(ch, target)
    reg.mode(2, "#x", [(False, "b", "*!*@abc.def.ip"), (False, "b", "*!*@192.0.2.5")], 0.0)
    reg.mode(3, "#x", [(True, "b", "*!*@192.0.2.*")], 0.0)
    assert reg.is_banned(ch, target)
    assert ch.real_masks == {"b*!*@192.0.2.*"}
    reg.mode(3, "#x", [(False, "b", "*!*@192.0.2.*")], 0.0)
    assert not ch.real_masks and not reg.is_banned(ch, target)
