"""The GUI's model, commands and settings: no display, no sockets.

Lines go in as the server would send them; the updates and the state that come
out are checked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gui import model as m
from gui.commands import LINE_BUDGET, Context, interpret, split_text
from gui.settings import Settings, load, save
from server.protocol import parse

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def feed(model: m.ChatModel, *lines: str) -> list[m.Update]:
    out: list[m.Update] = []
    for line in lines:
        out += model.handle(parse(line), NOW)
    return out


def registered(nick: str = "alice") -> m.ChatModel:
    model = m.ChatModel(nick)
    feed(model, f":srv 001 {nick} :Welcome", f":srv 005 {nick} PREFIX=(ov)@+ CHANTYPES=# CASEMAPPING=rfc1459 :ok")
    return model


def joined(channel: str = "#lobby", names: str = "@alice +bob carol") -> m.ChatModel:
    model = registered()
    feed(model, f":alice!a@h JOIN {channel}", f":srv 353 alice = {channel} :{names}", f":srv 366 alice {channel} :End")
    return model


def test_join_names_prefixes_and_sorting() -> None:
    model = joined(names="carol +bob @alice dave!d@h")
    conv = model.conversation("#LOBBY")
    assert conv is not None and conv.joined and conv.kind == "channel"
    members = model.sorted_members("#lobby")
    assert [(model.prefix_of(x), x.nick) for x in members] == [("@", "alice"), ("+", "bob"), ("", "carol"),
                                                               ("", "dave")]


def test_multi_prefix_mode_changes_and_away() -> None:
    model = joined(names="@+alice bob")
    feed(model, ":alice!a@h MODE #lobby +ov-o bob bob alice", ":bob!b@h AWAY :lunch")
    conv = model.conversations["#lobby"]
    assert conv.members["bob"].modes == "ov" and conv.members["alice"].modes == "v"
    assert conv.members["bob"].away
    feed(model, ":srv 352 alice #lobby b h srv bob H :0 Bob")
    assert not conv.members["bob"].away
    # A key (+k) takes a parameter; the prefix mode after it must still find its nick.
    feed(model, ":alice!a@h MODE #lobby +kv secret alice")
    assert conv.members["alice"].modes == "v"


def test_messages_mentions_and_unread_counts() -> None:
    model = joined()
    model.open("#other", focus=False)
    updates = feed(model, ":bob!b@h PRIVMSG #lobby :hi Alice, look")
    assert any(isinstance(u, m.Mention) for u in updates)
    conv = model.conversations["#lobby"]
    assert conv.unread == 1 and conv.mentions == 1, "not the active conversation yet"
    feed(model, ":bob!b@h PRIVMSG #lobby :malice is not a mention", ":bob!b@h PRIVMSG #lobby :alice_ neither")
    assert conv.unread == 3 and conv.mentions == 1
    model.select("#lobby")
    assert conv.unread == 0 and conv.mentions == 0
    model.select(m.SERVER_KEY)
    feed(model, ":bob!b@h PRIVMSG #lobby :one more")
    model.select("#lobby")
    assert conv.first_unread == len(conv.lines) - 1, "the new-messages marker sits before the unseen line"


def test_private_messages_open_a_query_and_always_alert() -> None:
    model = registered()
    updates = feed(model, ":bob!b@h PRIVMSG alice :psst")
    assert "bob" in model.conversations and model.conversations["bob"].kind == "query"
    assert any(isinstance(u, m.Mention) for u in updates)
    # echo-message of our own private message lands in the conversation with bob
    feed(model, ":alice!a@h PRIVMSG bob :hello back")
    assert [ln.own for ln in model.conversations["bob"].lines] == [False, True]


def test_server_time_msgid_dedupe_and_actions() -> None:
    model = joined()
    line = "@time=2024-01-02T03:04:05.678Z;msgid=abc :bob!b@h PRIVMSG #lobby :\x01ACTION waves \U0001F44B\x01"
    feed(model, line)
    feed(model, line)
    lines = [ln for ln in model.conversations["#lobby"].lines if ln.kind == "action"]
    assert len(lines) == 1
    assert lines[0].text == "waves \U0001F44B"
    assert lines[0].time == datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_join_part_quit_nick_are_events() -> None:
    model = joined()
    feed(model, ":dave!d@h JOIN #lobby", ":bob!b@h NICK robert", ":carol!c@h PART #lobby :bye",
         ":dave!d@h QUIT :gone")
    conv = model.conversations["#lobby"]
    assert set(conv.members) == {"alice", "robert"}
    events = [ln.text for ln in conv.lines if ln.kind == "event"]
    assert events[-4:] == ["dave joined", "bob is now known as robert", "carol left (bye)", "dave quit (gone)"]
    feed(model, ":alice!a@h NICK alicia")
    assert model.nick == "alicia"


def test_topic_and_kick() -> None:
    model = joined()
    feed(model, ":srv 332 alice #lobby :Welcome all")
    assert model.conversations["#lobby"].topic == "Welcome all"
    feed(model, ":bob!b@h TOPIC #lobby :New topic")
    assert model.conversations["#lobby"].topic == "New topic"
    feed(model, ":bob!b@h KICK #lobby alice :behave")
    conv = model.conversations["#lobby"]
    assert not conv.joined and "#lobby" not in model.wanted
    assert "kicked" in conv.lines[-1].text


def test_typing_shown_and_expired() -> None:
    model = joined()
    feed(model, "@+typing=active :bob!b@h TAGMSG #lobby")
    assert model.typing_names("#lobby") == ["bob"]
    assert model.expire_typing(NOW) == []
    later = NOW.replace(second=7)
    assert model.expire_typing(later) == [m.TypingChanged("#lobby")]
    feed(model, "@+typing=active :bob!b@h TAGMSG #lobby", ":bob!b@h PRIVMSG #lobby :sent")
    assert model.typing_names("#lobby") == [], "a message ends typing"


def test_chathistory_batch_merges_in_time_order_without_duplicates() -> None:
    model = joined()
    model.caps = {"draft/chathistory", "batch", "server-time"}
    feed(model, "@time=2024-05-01T11:00:03.000Z;msgid=m3 :bob!b@h PRIVMSG #lobby :third (live)")
    updates = feed(
        model,
        ":srv BATCH +h1 chathistory #lobby",
        "@batch=h1;time=2024-05-01T11:00:01.000Z;msgid=m1 :bob!b@h PRIVMSG #lobby :first alice",
        "@batch=h1;time=2024-05-01T11:00:02.000Z;msgid=m2 :carol!c@h PRIVMSG #lobby :second",
        "@batch=h1;time=2024-05-01T11:00:03.000Z;msgid=m3 :bob!b@h PRIVMSG #lobby :third (live)",
        ":srv BATCH -h1",
    )
    assert m.Redraw("#lobby") in updates
    assert not any(isinstance(u, m.Mention) for u in updates), "history never alerts"
    texts = [ln.text for ln in model.conversations["#lobby"].lines if ln.kind == "message"]
    assert texts == ["first alice", "second", "third (live)"]


def test_reconnect_rejoins_and_asks_for_the_gap() -> None:
    model = joined()
    model.caps = {"draft/chathistory", "batch", "server-time"}
    feed(model, "@time=2024-05-01T11:00:03.000Z;msgid=m3 :bob!b@h PRIVMSG #lobby :before the cut")
    model.disconnected("connection reset", NOW)
    assert not model.conversations["#lobby"].joined and model.conversations["#lobby"].members == {}
    updates = feed(model, ":srv 001 alice :Welcome back")
    assert m.Send(parse("JOIN #lobby")) in updates
    updates = feed(model, ":alice!a@h JOIN #lobby")
    sends = [u.message.to_line() for u in updates if isinstance(u, m.Send)]
    assert sends == ["CHATHISTORY AFTER #lobby timestamp=2024-05-01T11:00:03.000Z 100"]


def test_nick_in_use_and_password_errors() -> None:
    model = m.ChatModel("alice")
    assert m.NickInUse("alice", False) in feed(model, ":srv 433 * alice :Nickname is already in use")
    assert any(isinstance(u, m.PasswordRejected) for u in feed(model, ":srv 464 * :Password incorrect"))


def test_completion_of_nicks_channels_and_commands() -> None:
    model = joined(names="@alice +bob bobby carol")
    assert model.complete("#lobby", "bo", True, []) == ["bob: ", "bobby: "]
    assert model.complete("#lobby", "CA", False, []) == ["carol"]
    assert model.complete("#lobby", "#l", False, []) == ["#lobby"]
    assert model.complete("#lobby", "/jo", True, ["join", "part"]) == ["/join"]
    assert model.complete("#lobby", "al", True, []) == [], "never complete to yourself"


def test_input_history_keeps_the_draft() -> None:
    h = m.InputHistory()
    h.add("one")
    h.add("two")
    assert h.older("draft") == "two"
    assert h.older("two") == "one"
    assert h.older("one") == "one"
    assert h.newer("one") == "two"
    assert h.newer("two") == "draft"


def test_links_and_non_bmp_display() -> None:
    parts = list(m.split_links("see https://example.org/a?b=1, or www.python.org."))
    assert parts == [("see ", None), ("https://example.org/a?b=1", "https://example.org/a?b=1"), (", or ", None),
                     ("www.python.org", "http://www.python.org"), (".", None)]
    assert m.bmp_safe("hi \U0001F44B \u00e9") == "hi [waving hand sign] \u00e9"
    assert m.strip_formatting("\x02bold\x02 \x0304,01red\x03") == "bold red"


@pytest.mark.parametrize(
    ("typed", "target", "expected"),
    [
        ("hello", "#lobby", ["PRIVMSG #lobby hello"]),
        ("/join lobby", None, ["JOIN #lobby"]),
        ("/join #a,#b key", None, ["JOIN #a,#b key"]),
        ("/part", "#lobby", ["PART #lobby"]),
        ("/part #x see you", "#lobby", ["PART #x :see you"]),
        ("/msg bob hi there", None, ["PRIVMSG bob :hi there"]),
        ("/me waves", "#lobby", ["PRIVMSG #lobby :\x01ACTION waves\x01"]),
        ("/nick alicia", None, ["NICK alicia"]),
        ("/topic New topic", "#lobby", ["TOPIC #lobby :New topic"]),
        ("/topic", "#lobby", ["TOPIC #lobby"]),
        ("/away lunch", None, ["AWAY lunch"]),
        ("/away", None, ["AWAY"]),
        ("/whois bob", None, ["WHOIS bob"]),
        ("/kick bob spam", "#lobby", ["KICK #lobby bob spam"]),
        ("/mode +o bob", "#lobby", ["MODE #lobby +o bob"]),
        ("/quote PRIVMSG #x :raw line", None, ["PRIVMSG #x :raw line"]),
        ("//not a command", "#lobby", ["PRIVMSG #lobby :/not a command"]),
    ],
)
def test_slash_commands(typed: str, target: str | None, expected: list[str]) -> None:
    out = interpret(typed, Context(target, "alice"))
    assert out.error is None
    assert [msg.to_line() for msg in out.send] == expected


def test_commands_that_act_locally_or_fail_politely() -> None:
    ctx = Context(None, "alice")
    assert interpret("hello", ctx).error and "join" in (interpret("hello", ctx).error or "")
    assert interpret("/frobnicate", ctx).error
    assert interpret("/quit bye", ctx).quit == "bye"
    assert interpret("/query bob", ctx).open == "bob"
    help_block = interpret("/help", ctx).block
    assert len(help_block) > 10 and all(ln.startswith("  /") for ln in help_block[2:-2])
    own = interpret("hello", Context("#x", "alice", echo=False)).own
    assert own == [("#x", "message", "hello")]
    assert interpret("hello", Context("#x", "alice", echo=True)).own == []


def test_long_text_is_split_on_character_boundaries() -> None:
    text = "\U0001F600" * 300 + " word" * 100
    pieces = split_text(text, LINE_BUDGET)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")
    assert all(len(p.encode()) <= LINE_BUDGET for p in pieces)
    out = interpret(text, Context("#x", "alice"))
    assert len(out.send) == len(pieces) and all(len(msg.to_bytes()) <= 512 for msg in out.send)


def test_settings_round_trip_and_password_kept_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "gui.json"
    save(Settings(host="irc.example.org", port=6697, nick="zoe", password="s3cret", tls=True), path)
    loaded = load(path)
    assert (loaded.host, loaded.port, loaded.nick, loaded.tls, loaded.password) == ("irc.example.org", 6697, "zoe",
                                                                                    True, "")
    assert path.stat().st_mode & 0o077 == 0
    save(Settings(nick="zoe", password="s3cret", remember_password=True), path)
    assert load(path).password == "s3cret"
    path.write_text("{not json")
    assert load(path) == Settings()
