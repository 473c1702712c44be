"""The model's side of the v2 client (issue 18): no display, no sockets.

The reconnect state line, the topic after a rejoin, away after a reconnect,
mentions in history, numerics in words, links with brackets, private
conversations restored and found with TARGETS, older pages, ignore, highlight
words, mute, multi-line messages, reactions and replies, mIRC formatting and
how lines are grouped and separated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gui import model as m
from gui.commands import Context, interpret
from server.protocol import parse

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def feed(model: m.ChatModel, *lines: str, now: datetime = NOW) -> list[m.Update]:
    out: list[m.Update] = []
    for line in lines:
        out += model.handle(parse(line), now)
    return out


def joined(nick: str = "alice", channel: str = "#lobby") -> m.ChatModel:
    model = m.ChatModel(nick)
    model.caps = {"draft/chathistory", "batch", "server-time", "message-tags", "echo-message"}
    feed(model, f":srv 001 {nick} :Welcome", f":srv 005 {nick} PREFIX=(ov)@+ CHANTYPES=# :ok",
         f":{nick}!a@h JOIN {channel}", f":srv 353 {nick} = {channel} :@{nick} bob carol",
         f":srv 366 {nick} {channel} :End")
    return model


def sends(updates: list[m.Update]) -> list[str]:
    return [u.message.to_line() for u in updates if isinstance(u, m.Send)]


def test_a_lost_connection_is_one_line_in_the_server_tab_updated_per_try() -> None:
    model = joined()
    lobby_before = len(model.conversations["#lobby"].lines)
    server = model.conversations[m.SERVER_KEY]
    first = model.disconnected("connection reset", NOW, 1.0)
    assert m.ConnectionChanged(False) in first
    line = server.lines[-1]
    assert line.text == "Connection lost (connection reset). Reconnecting in 1 s\u2026" and line.action == "reconnect"
    for delay in (2.1, 3.9, 8.2):
        updates = model.disconnected("the server refuses connections", NOW, delay)
        assert m.Redraw(m.SERVER_KEY) in updates and not any(isinstance(u, m.LineAdded) for u in updates)
    assert server.lines[-1] is line and line.text.endswith("Reconnecting in 8 s\u2026")
    assert sum(ln.text.startswith("Connection lost") for ln in server.lines) == 1
    assert len(model.conversations["#lobby"].lines) == lobby_before, "nothing in the channels"
    assert not model.conversations["#lobby"].joined
    updates = feed(model, ":srv 001 alice :Welcome back", now=NOW + timedelta(minutes=2))
    assert server.lines[-2] is line and line.text.startswith("Reconnected at") and line.action is None
    assert m.ConnectionChanged(True) in updates
    # The next loss gets a line of its own, after the welcome.
    model.disconnected("gone", NOW, 1.0)
    assert server.lines[-1] is not line and server.lines[-1].text.startswith("Connection lost (gone)")


def test_rejoin_clears_a_topic_the_server_no_longer_has() -> None:
    model = joined()
    feed(model, ":srv 332 alice #lobby :the old topic")
    assert model.conversations["#lobby"].topic == "the old topic"
    model.disconnected("restart", NOW, 1.0)
    updates = feed(model, ":srv 001 alice :Welcome", ":alice!a@h JOIN #lobby", ":srv 366 alice #lobby :End")
    assert model.conversations["#lobby"].topic == "" and m.TopicChanged("#lobby") in updates
    feed(model, ":alice!a@h JOIN #lobby", ":srv 332 alice #lobby :a new one")
    assert model.conversations["#lobby"].topic == "a new one"


def test_away_is_set_again_after_a_reconnect() -> None:
    model = joined()
    for msg in interpret("/away at lunch", Context("#lobby", "alice")).send:
        model.note_sent(msg)
    feed(model, ":srv 306 alice :You have been marked as being away")
    model.disconnected("reset", NOW, 1.0)
    assert "AWAY :at lunch" in sends(feed(model, ":srv 001 alice :Welcome"))
    for msg in interpret("/back", Context("#lobby", "alice")).send:
        model.note_sent(msg)
    model.disconnected("reset", NOW, 1.0)
    assert not [s for s in sends(feed(model, ":srv 001 alice :Welcome")) if s.startswith("AWAY")]


def test_mentions_in_history_are_highlighted_but_do_not_alert() -> None:
    model = joined()
    model.open("#other", focus=False)
    model.select("#other")
    updates = feed(model, ":srv BATCH +h chathistory #lobby",
                   "@batch=h;time=2024-05-01T11:00:00.000Z;msgid=a :bob!b@h PRIVMSG #lobby :alice, see this",
                   "@batch=h;time=2024-05-01T11:00:01.000Z;msgid=b :bob!b@h PRIVMSG #lobby :nothing here",
                   ":srv BATCH -h")
    lines = [ln for ln in model.conversations["#lobby"].lines if ln.history]
    assert [ln.mention for ln in lines] == [True, False]
    assert not any(isinstance(u, m.Mention) for u in updates) and model.conversations["#lobby"].mentions == 0


def test_private_lines_alert_without_a_mention_band() -> None:
    model = joined()
    updates = feed(model, ":bob!b@h PRIVMSG alice :hi there")
    line = model.conversations["bob"].lines[-1]
    assert line.alert and not line.mention, "alerts, but is not drawn as a mention"
    assert any(isinstance(u, m.Mention) for u in updates) and model.conversations["bob"].mentions == 1
    feed(model, ":bob!b@h PRIVMSG alice :alice?")
    assert model.conversations["bob"].lines[-1].mention


@pytest.mark.parametrize(("line", "text"), [
    (":srv 317 alice bob 3725 1714550400 :seconds idle, signon time", "bob has been idle 1 h 2 min, signed on "),
    (":srv 311 alice bob ~b host.example * :Bob Builder", "bob is ~b@host.example (Bob Builder)"),
    (":srv 312 alice bob irc.chatroom.local :Chat-room", "bob is connected to irc.chatroom.local (Chat-room)"),
    (":srv 319 alice bob :@#lobby #help", "bob is in @#lobby #help"),
    (":srv 330 alice bob bobacct :is logged in as", "bob is logged in as bobacct"),
    (":srv 252 alice 2 :operator(s) online", "2 operator(s) online"),
    (":srv 253 alice 1 :unknown connection(s)", "1 unknown connection(s)"),
    (":srv 254 alice 7 :channels formed", "7 channels formed"),
    (":srv 329 alice #lobby 1714550400", "#lobby was created on "),
    (":srv 341 alice bob #lobby", "You invited bob to #lobby"),
])
def test_numerics_are_written_for_people(line: str, text: str) -> None:
    model = joined()
    feed(model, line)
    shown = [ln.text for conv in model.conversations.values() for ln in conv.lines]
    assert any(s.startswith(text) for s in shown), shown[-3:]
    assert not any("seconds idle, signon time" in s or s.startswith("operator(s)") for s in shown)


def test_end_of_whois_is_not_a_line() -> None:
    model = joined()
    assert feed(model, ":srv 318 alice bob :End of /WHOIS list") == []


@pytest.mark.parametrize(("text", "url"), [
    ("see https://example.com/a_(b) now", "https://example.com/a_(b)"),
    ("(https://example.com/x)", "https://example.com/x"),
    ("https://en.wikipedia.org/wiki/Tk_(software), ok", "https://en.wikipedia.org/wiki/Tk_(software)"),
    ("at https://example.com/path.", "https://example.com/path"),
    ("[https://example.com/q?a=[1]]", "https://example.com/q?a=[1]"),
])
def test_links_keep_their_own_brackets(text: str, url: str) -> None:
    links = [u for _, u in m.split_links(text) if u is not None]
    assert links == [url]
    assert "".join(chunk for chunk, _ in m.split_links(text)) == text


def test_restored_queries_ask_for_their_history_and_targets_finds_others() -> None:
    model = m.ChatModel("alice")
    model.restore_queries(["bob", "#notaquery", ""])
    assert set(model.conversations) == {m.SERVER_KEY, "bob"}
    model.caps = {"draft/chathistory", "batch", "server-time"}
    model.seen_until = NOW - timedelta(hours=1)
    out = sends(feed(model, ":srv 001 alice :Welcome"))
    assert "CHATHISTORY LATEST bob * 100" in out
    assert "CHATHISTORY TARGETS timestamp=2024-05-01T11:00:00.000Z timestamp=2024-05-01T12:00:00.000Z 50" in out
    updates = feed(model, ":srv BATCH +t draft/chathistory-targets",
                   "@batch=t :srv CHATHISTORY TARGETS carol 2024-05-01T11:30:00.000Z",
                   "@batch=t :srv CHATHISTORY TARGETS bob 2024-05-01T11:40:00.000Z",
                   "@batch=t :srv CHATHISTORY TARGETS #lobby 2024-05-01T11:50:00.000Z",
                   ":srv BATCH -t")
    assert "carol" in model.conversations and "#lobby" not in model.conversations
    assert sends(updates) == ["CHATHISTORY LATEST carol * 100"], "bob's was asked for already"


def test_older_pages_go_in_front_keep_the_anchor_and_stop_at_the_start() -> None:
    model = joined()
    feed(model, "@time=2024-05-01T11:00:05.000Z;msgid=m5 :bob!b@h PRIVMSG #lobby :five",
         "@time=2024-05-01T11:00:05.000Z;msgid=m6 :bob!b@h PRIVMSG #lobby :six")
    request = model.older_request("#lobby")
    assert request is not None and request.to_line() == "CHATHISTORY BEFORE #lobby msgid=m5 100"
    assert model.older_request("#lobby") is None, "one at a time"
    updates = feed(model, ":srv BATCH +o chathistory #lobby",
                   "@batch=o;time=2024-05-01T11:00:04.000Z;msgid=m3 :bob!b@h PRIVMSG #lobby :three",
                   "@batch=o;time=2024-05-01T11:00:05.000Z;msgid=m4 :bob!b@h PRIVMSG #lobby :four",
                   ":srv BATCH -o")
    redraw = next(u for u in updates if isinstance(u, m.Redraw))
    assert redraw.anchor is not None and redraw.anchor.text == "five"
    texts = [ln.text for ln in model.conversations["#lobby"].lines if ln.kind == "message"]
    assert texts == ["three", "four", "five", "six"], "same millisecond, still in the server's order"
    assert model.older_request("#lobby") is not None
    feed(model, ":srv BATCH +p chathistory #lobby", ":srv BATCH -p")
    assert model.conversations["#lobby"].older_done and model.older_request("#lobby") is None


def test_ignore_highlight_and_mute() -> None:
    model = joined()
    model.ignored.add("bob")
    assert feed(model, ":bob!b@h PRIVMSG #lobby :spam") == []
    assert feed(model, ":bob!b@h PRIVMSG alice :spam") == [] and "bob" not in model.conversations
    model.highlights = ["release"]
    model.open("#other", focus=False)
    model.select("#other")
    updates = feed(model, ":carol!c@h PRIVMSG #lobby :the Release is out")
    assert any(isinstance(u, m.Mention) for u in updates) and model.conversations["#lobby"].lines[-1].mention
    model.muted.add("#lobby")
    updates = feed(model, ":carol!c@h PRIVMSG #lobby :alice, release!")
    assert not any(isinstance(u, m.Mention) for u in updates)
    conv = model.conversations["#lobby"]
    assert conv.mentions == 1 and conv.unread == 2, "muted: counted as unread, never as a mention"


def test_multiline_batch_is_one_message() -> None:
    model = joined()
    feed(model, "@msgid=ml1 :bob!b@h BATCH +ml draft/multiline #lobby",
         "@batch=ml :bob!b@h PRIVMSG #lobby :first line",
         "@batch=ml :bob!b@h PRIVMSG #lobby :second",
         "@batch=ml;draft/multiline-concat :bob!b@h PRIVMSG #lobby : continued",
         ":bob!b@h BATCH -ml")
    line = model.conversations["#lobby"].lines[-1]
    assert line.text == "first line\nsecond continued" and line.nick == "bob"


def test_reactions_and_replies() -> None:
    model = joined()
    feed(model, "@msgid=x1 :bob!b@h PRIVMSG #lobby :lunch at noon?")
    updates = feed(model, "@+draft/react=\U0001F44D;+draft/reply=x1 :carol!c@h TAGMSG #lobby",
                   "@+draft/react=\U0001F44D;+draft/reply=x1 :alice!a@h TAGMSG #lobby")
    assert m.Redraw("#lobby") in updates
    line = model.line_by_msgid("#lobby", "x1")
    assert line is not None and line.reactions == {"\U0001F44D": ["carol", "alice"]}
    feed(model, "@msgid=x2;+draft/reply=x1 :carol!c@h PRIVMSG #lobby :yes!")
    reply = model.conversations["#lobby"].lines[-1]
    assert reply.reply_to == "x1" and reply.quote == "bob: lunch at noon?"
    assert feed(model, "@+draft/react=x;+draft/reply=nope :carol!c@h TAGMSG #lobby") == []


def test_mirc_formatting_runs() -> None:
    runs = m.parse_formatting("plain \x02bold \x1ditalic\x02 only\x0f \x0304,01red\x03 \x1funder\x1f")
    assert "".join(c for c, _ in runs) == m.strip_formatting("plain \x02bold \x1ditalic\x02 only\x0f "
                                                             "\x0304,01red\x03 \x1funder\x1f")
    styles = {chunk: st for chunk, st in runs}
    assert styles["plain "].plain
    assert styles["bold "].bold and not styles["bold "].italic
    assert styles["italic"].bold and styles["italic"].italic
    assert styles[" only"].italic and not styles[" only"].bold
    assert styles["red"].fg == m.MIRC_COLOURS[4] and styles["red"].bg == m.MIRC_COLOURS[1]
    assert styles["under"].underline
    model = joined()
    feed(model, ":bob!b@h PRIVMSG #lobby :\x02hey\x02 there")
    line = model.conversations["#lobby"].lines[-1]
    assert line.text == "hey there" and line.styled == "\x02hey\x02 there"


def test_breaks_group_lines_and_mark_days_and_the_end_of_history() -> None:
    t = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    a = m.Line(t, "message", "bob", "one", history=True)
    b = m.Line(t + timedelta(seconds=30), "message", "bob", "two", history=True)
    c = m.Line(t + timedelta(seconds=60), "message", "bob", "three")
    d = m.Line(t + timedelta(days=1), "message", "bob", "tomorrow")
    e = m.Line(t + timedelta(days=1, seconds=5), "message", "carol", "hi")
    assert m.breaks(None, a).day is not None
    assert m.breaks(a, b) == m.Breaks(grouped=True)
    assert m.breaks(b, c) == m.Breaks(history_end=True)
    got = m.breaks(c, d)
    assert got.day == m.day_label(d.time) and not got.grouped
    assert not m.breaks(d, e).grouped


def test_channel_list_collects_rows_without_mode_prefixes() -> None:
    model = joined()
    assert feed(model, ":srv 321 alice Channel :Users Name") == [m.ChannelListChanged(False)]
    feed(model, ":srv 322 alice #python 12 :[+nt] Snakes", ":srv 322 alice #rust 3 :")
    assert feed(model, ":srv 323 alice :End of /LIST") == [m.ChannelListChanged(True)]
    assert model.channel_list == [m.ChannelInfo("#python", 12, "Snakes"), m.ChannelInfo("#rust", 3, "")]


@pytest.mark.parametrize(("typed", "action"), [
    ("/clear", ("clear", "")), ("/close", ("close", "")), ("/reconnect", ("reconnect", "")),
    ("/ignore bob", ("ignore", "bob")), ("/mute", ("mute", "")), ("/highlight release", ("highlight", "release")),
])
def test_local_commands(typed: str, action: tuple[str, str]) -> None:
    out = interpret(typed, Context("#lobby", "alice"))
    assert out.action == action and not out.send and out.error is None


def test_invite_list_and_ban_commands() -> None:
    ctx = Context("#lobby", "alice")
    assert [x.to_line() for x in interpret("/invite bob", ctx).send] == ["INVITE bob #lobby"]
    assert [x.to_line() for x in interpret("/list", ctx).send] == ["LIST"]
    assert interpret("/list", ctx).action == ("list", "")
    assert [x.to_line() for x in interpret("/ban bob", ctx).send] == ["MODE #lobby +b bob!*@*"]
    assert interpret("/unignore", ctx).error
