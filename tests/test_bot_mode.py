"""IRCv3 bot mode: ``BOT=B`` in ISUPPORT, user mode +B, 335 RPL_WHOISBOT, the B
flag in WHO, and the ``bot`` tag on a bot's messages (message-tags clients only),
with the bot and its readers on different workers."""

from __future__ import annotations

from server.protocol import Message
from tests.conftest import Server


def test_bot_mode_across_workers(server: Server) -> None:
    bot = server.client()
    bot.register("robo", caps=("message-tags",))
    isupport = " ".join(" ".join(m.params) for m in bot.seen if m.verb == "005")
    assert "BOT=B" in isupport.split()
    my_info = next(m for m in bot.seen if m.verb == "004")
    assert "B" in my_info.params[3]
    tagged = server.client("alice", caps=("message-tags",))
    plain = server.client("carol", caps=("server-time",))
    assert server.worker_of("robo") != server.worker_of("alice")
    for c in (bot, tagged, plain):
        c.join("#bots")

    # before +B: no tag, no 335
    bot.send("PRIVMSG #bots :human for now")
    assert "bot" not in tagged.expect("PRIVMSG").tags
    tagged.send("WHOIS robo")
    whois: list[Message] = []
    while not whois or whois[-1].verb != "318":
        whois.append(tagged.expect(lambda m: m.verb in ("311", "319", "312", "317", "318", "335")))
    assert "335" not in [m.verb for m in whois]

    bot.send("MODE robo +B")
    assert bot.expect("MODE").params == ("robo", "+B")
    bot.send("MODE robo")
    assert "B" in bot.expect("221").params[1]

    bot.send("PRIVMSG #bots :beep")
    msg = tagged.expect("PRIVMSG")
    assert msg.params == ("#bots", "beep") and msg.tags.get("bot") == ""
    assert "bot" not in plain.expect("PRIVMSG").tags  # only for message-tags clients
    bot.send("NOTICE alice :boop")
    assert tagged.expect("NOTICE").tags.get("bot") == ""
    bot.send("@+typing=active TAGMSG #bots")
    assert tagged.expect("TAGMSG").tags.get("bot") == ""

    tagged.send("WHOIS robo")
    assert tagged.expect("335").params[1:] == ("robo", "is a bot")
    tagged.expect("318")
    tagged.send("WHO #bots")
    rows = {}
    while True:
        m = tagged.expect(lambda m: m.verb in ("352", "315"))
        if m.verb == "315":
            break
        rows[m.params[5]] = m.params[6]
    assert "B" in rows["robo"] and "B" not in rows["alice"]

    bot.send("MODE robo -B")
    assert bot.expect("MODE").params == ("robo", "-B")
    bot.send("PRIVMSG #bots :off duty")
    assert "bot" not in tagged.expect("PRIVMSG").tags


def test_bot_mode_is_for_oneself(server: Server) -> None:
    alice = server.client("alice")
    server.client("bob")
    alice.send("MODE bob +B")
    assert alice.expect("502")
