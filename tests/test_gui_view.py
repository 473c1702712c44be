"""The window's looks and features under Xvfb, without a server.

Lines are fed as the model would get them from the server; what the view drew is
read back from the Tk widgets (tags, fonts, coordinates).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gui import model as m
from tests.conftest import ROOT

pytestmark = pytest.mark.gui


@pytest.fixture
def app(display: str) -> Iterator[Any]:
    from gui.app import ChatApp
    from gui.settings import Settings

    made = ChatApp(settings=Settings(nick="alice", channels=[]), connect=False, save_settings=False,
                   notifier=lambda title, body: None)
    made.root.geometry("1100x680")
    yield made
    errors = list(made.errors)
    made.on_closing()
    assert errors == []


def settle(app: Any) -> None:
    for _ in range(2):
        app.root.update_idletasks()
        app.root.update()


def fed(app: Any, *lines: str) -> None:
    for line in lines:
        app._apply(app.model.handle(m.parse(line)))
    settle(app)


def in_lobby(app: Any) -> None:
    fed(app, ":srv 001 alice :Welcome", ":srv 005 alice PREFIX=(ov)@+ :ok", ":alice!a@h JOIN #lobby",
        ":srv 353 alice = #lobby :@alice bob carol", ":srv 366 alice #lobby :End")
    app.on_select("#lobby")
    settle(app)


def ranges(app: Any, tag: str) -> list[str]:
    t = app.view.text
    r = t.tag_ranges(tag)
    return [t.get(r[i], r[i + 1]) for i in range(0, len(r), 2)]


def x_of(app: Any, needle: str, nth: int = 0) -> int:
    t = app.view.text
    pos = "1.0"
    for _ in range(nth + 1):
        pos = t.search(needle, pos, stopindex="end")
        assert pos, needle
        found = pos
        pos = f"{pos}+1c"
    t.see(found)
    settle(app)
    box = t.bbox(found)
    assert box is not None
    return int(box[0])


def test_typed_text_stays_in_the_box_when_offline(app: Any) -> None:
    in_lobby(app)
    app.view.set_input("a message written while offline")
    app.send()
    assert app.view.get_input() == "a message written while offline"
    assert "Offline" in app.status_text and "kept in the box" in app.status_text
    assert not any("nothing was sent" in ln.text for ln in app.model.conversations["#lobby"].lines)
    app.view.set_input("/help")  # needs no connection: runs, and the box empties
    app.send()
    assert app.view.get_input() == ""


def test_help_is_one_aligned_monospace_block_with_one_timestamp(app: Any) -> None:
    app.on_help()
    settle(app)
    lines = app.model.conversations[m.SERVER_KEY].lines
    block = lines[-1]
    assert block.kind == "block" and "/join #channel [key]" in block.text
    drawn = ranges(app, "block")
    assert drawn and "/join #channel [key]" in "".join(drawn)
    assert app.view.text.tag_cget("block", "font") == str(app.view.mono)
    t = app.view.text
    first = t.search("Type a message", "1.0")
    last = t.search("Keys:", "1.0")
    stamps = [s for s in ranges(app, "ts") if ":" in s]
    start_row, end_row = int(first.split(".")[0]), int(last.split(".")[0])
    ts = t.tag_ranges("ts")
    rows = {int(str(ts[i]).split(".")[0]) for i in range(0, len(ts), 2)}
    assert [r for r in rows if start_row < r <= end_row] == [], "one timestamp for the whole block"
    assert stamps
    # The command column is aligned: every usage line's description starts at the same x.
    x1 = x_of(app, "enter a channel")
    x2 = x_of(app, "leave a channel")
    assert x1 == x2
    # Narrow, a description wraps under its own column, not under the commands.
    app.root.geometry("700x500")
    settle(app)
    row = t.search("close this conversation", "1.0")
    t.yview(f"{row} linestart")
    settle(app)
    wrapped = t.bbox(f"{row} lineend -1c display linestart")
    assert wrapped is not None and abs(wrapped[0] - t.bbox(row)[0]) <= 2


def test_wrapped_lines_hang_under_the_text_and_mentions_do_not_shift_timestamps(app: Any) -> None:
    in_lobby(app)
    app.root.geometry("800x500")
    long = "word " * 80
    fed(app, f":bob!b@h PRIVMSG #lobby :start {long}end",
        ":carol!c@h PRIVMSG #lobby :alice: a mention here",
        ":carol!c@h PRIVMSG #lobby :a plain line")
    t = app.view.text
    start = t.search("start word", "1.0")
    end = t.search("end", start)
    t.see(end)
    settle(app)
    text_x = t.bbox(start)[0]
    wrapped_x = t.bbox(f"{end} display linestart")[0]
    assert abs(wrapped_x - text_x) <= 2, "the second display line starts under the text, not under the time"
    stamp_mention = x_of(app, "\t", 0)  # every line starts with its time
    m_row = t.search("a mention here", "1.0").split(".")[0]
    p_row = t.search("a plain line", "1.0").split(".")[0]
    t.see(f"{p_row}.0")
    settle(app)
    assert t.bbox(f"{m_row}.0")[0] == t.bbox(f"{p_row}.0")[0] == t.bbox(f"{start.split('.')[0]}.0")[0]
    assert x_of(app, "alice: a mention here") == x_of(app, "a plain line"), "text column aligned"
    assert "mention" in t.tag_names(t.search("a mention here", "1.0"))
    assert stamp_mention >= 0


def test_grouping_day_separators_and_the_history_boundary(app: Any) -> None:
    in_lobby(app)
    day1 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    fed(app, ":srv BATCH +h chathistory #lobby",
        f"@batch=h;time={m.format_time(day1)};msgid=h1 :bob!b@h PRIVMSG #lobby :yesterday one",
        f"@batch=h;time={m.format_time(day1 + timedelta(seconds=20))};msgid=h2 :bob!b@h PRIVMSG #lobby :and two",
        ":srv BATCH -h",
        ":bob!b@h PRIVMSG #lobby :live now")
    text = app.view.text.get("1.0", "end")
    assert m.day_label(day1) in text
    assert "earlier messages (history) above" in text
    assert text.index("and two") < text.index("earlier messages") < text.index("live now")
    nicks = ranges(app, "nick")
    assert nicks.count("bob") == 2, "the second history line from bob is grouped (no nick)"


def test_private_lines_have_no_mention_band_and_no_people_pane(app: Any) -> None:
    in_lobby(app)
    fed(app, ":bob!b@h PRIVMSG alice :hello there", ":bob!b@h PRIVMSG alice :second")
    app.on_select("bob")
    settle(app)
    assert ranges(app, "mention") == []
    assert not app.view.users_frame.winfo_ismapped()
    assert app.model.conversations["bob"].mentions == 0  # read now


def test_nick_colours_are_many_distinct_and_readable_in_both_themes() -> None:
    from gui.view import NICK_COLOURS, PALETTES, contrast

    for name, p in PALETTES.items():
        assert len(p["nicks"]) == NICK_COLOURS >= 16 and len(set(p["nicks"])) == len(p["nicks"])
        for colour in p["nicks"]:
            assert contrast(colour, p["bg"]) >= 4.5, f"{name}: {colour} on {p['bg']}"
            assert contrast(colour, p["own_bg"]) >= 4.0
        for key in ("fg", "link", "error", "notice", "mention_fg", "muted"):
            assert contrast(p[key], p["bg"]) >= 4.5, f"{name}: {key}"
    assert len({m.nick_colour_index(f"user{i}", NICK_COLOURS) for i in range(200)}) == NICK_COLOURS
    from gui.view import readable

    for colour in m.MIRC_COLOURS:
        assert contrast(readable(colour, PALETTES["dark"]["bg"]), PALETTES["dark"]["bg"]) >= 4.5
    assert readable("#000000", "#ffffff") == "#000000"


def test_no_classic_tk_dialogs_anywhere() -> None:
    for path in sorted((ROOT / "gui").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "tkinter":
                names = {a.name for a in node.names}
                assert not names & {"simpledialog", "messagebox"}, path
            if isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & {"tkinter.simpledialog", "tkinter.messagebox"}, path


def test_connect_dialog_is_themed_and_verify_follows_tls(app: Any) -> None:
    from gui.settings import Settings
    from gui.view import ConnectDialog

    seen: dict[str, Any] = {}

    def inspect() -> None:
        dialogs = [w for w in app.root.winfo_children() if isinstance(w, ConnectDialog)]
        if not dialogs or not dialogs[0].winfo_viewable():
            app.root.after(30, inspect)
            return
        d = dialogs[0]
        seen["off"] = d.verify_box.instate(["disabled"])
        d.tls.set(True)
        d._tls_toggled()
        seen["on"] = d.verify_box.instate(["disabled"])
        seen["port"] = d.vars["port"].get()
        seen["classes"] = {w.winfo_class() for w in _descendants(d)}
        d.cancel()

    app.root.after(30, inspect)
    assert app.view.ask_connect(Settings(nick="alice", tls=False)) is None
    assert seen["off"] is True and seen["on"] is False and seen["port"] == "6697"
    assert {"TEntry", "TCheckbutton", "TButton"} <= seen["classes"]
    assert not seen["classes"] & {"Entry", "Checkbutton", "Button"}, "ttk widgets only"


def test_message_dialog_answers(app: Any) -> None:
    from gui.view import MessageDialog

    def answer() -> None:
        dialogs = [w for w in app.root.winfo_children() if isinstance(w, MessageDialog)]
        if not dialogs or not dialogs[0].winfo_viewable():
            app.root.after(30, answer)
            return
        dialogs[0].button_widgets["Yes"].invoke()

    app.root.after(30, answer)
    assert app.view.confirm("Sure?", "Really?") is True


def test_window_size_position_and_panes_are_remembered(display: str, tmp_path: Path) -> None:
    from gui.app import ChatApp
    from gui.settings import Settings, load

    first = ChatApp(settings=Settings(nick="alice", channels=[]), connect=False, notifier=lambda t, b: None)
    first.root.geometry("900x600+30+40")
    settle(first)
    first.view.set_sashes([260])
    settle(first)
    first.on_closing()
    saved = load()
    assert saved.geometry.startswith("900x600") and saved.sashes[0] == 260
    second = ChatApp(settings=saved, connect=False, notifier=lambda t, b: None)
    settle(second)
    try:
        assert second.root.winfo_width() == 900 and second.root.winfo_height() == 600
        assert second.view.sashes()[0] == 260
    finally:
        second.on_closing()


def test_find_bar_counts_and_steps_through_matches(app: Any) -> None:
    in_lobby(app)
    fed(app, *[f":bob!b@h PRIVMSG #lobby :line {i} {'needle' if i % 3 == 0 else 'hay'}" for i in range(30)])
    app.view.open_find()
    app.view.find_var.set("NEEDLE")
    settle(app)
    assert app.view.find_hits == 10 and app.view.find_bar.winfo_ismapped()
    assert ranges(app, "found") == ["needle"] * 10
    assert app.view.find_next() == 9 and app.view.find_next() == 8
    assert app.view.find_count.cget("text") == "9 of 10"
    app.view.close_find()
    settle(app)
    assert ranges(app, "found") == [] and not app.view.find_bar.winfo_ismapped()


def test_people_menu_offers_op_actions_only_to_operators(app: Any) -> None:
    in_lobby(app)
    labels = _labels(app.view.user_menu("bob"))
    assert {"Private message", "Who is this?", "Kick", "Give op (@)", "Ignore"} <= labels
    fed(app, ":srv MODE #lobby -o alice")
    assert "Kick" not in _labels(app.view.user_menu("bob"))
    sent: list[str] = []
    app._send = lambda *msgs, quiet=False: sent.extend(x.to_line() for x in msgs) or True  # type: ignore[method-assign]
    app.on_user_action("bob", "ignore")
    settle(app)
    assert app.settings.ignored == ["bob"] and "(ignored)" in app.view.users.item("u:bob", "text")
    fed(app, ":bob!b@h PRIVMSG #lobby :you cannot see me")
    assert "you cannot see me" not in app.view.text.get("1.0", "end")
    app.on_user_action("carol", "whois")
    assert sent == ["WHOIS carol"]


def test_mirc_formatting_reactions_and_replies_are_drawn(app: Any) -> None:
    in_lobby(app)
    fed(app, "@msgid=q1 :bob!b@h PRIVMSG #lobby :\x02bold\x02 and \x1ditalic\x1d and \x0304red\x03",
        "@+draft/react=\U0001F44D;+draft/reply=q1 :carol!c@h TAGMSG #lobby",
        "@msgid=q2;+draft/reply=q1 :carol!c@h PRIVMSG #lobby :agreed")
    t = app.view.text
    bold_at = t.search("bold", "1.0")
    names = t.tag_names(bold_at)
    assert "fb" in names and "fi" in t.tag_names(t.search("italic", "1.0"))
    assert t.tag_cget("fg" + m.MIRC_COLOURS[4][1:], "foreground") == m.MIRC_COLOURS[4]  # red reads on white
    assert any("\U0001F44D\u00a01" in r or "thumbs up" in r for r in ranges(app, "reaction"))
    assert any(r.startswith("\u21aa bob: bold and italic") for r in ranges(app, "quote"))
    line = app.model.line_by_msgid("#lobby", "q1")
    assert line is not None
    menu = app.view.line_menu(line)
    assert {"Reply", "React", "Copy text"} <= _labels(menu)
    app.on_reply(line)
    settle(app)
    assert app.view.reply_bar.winfo_ismapped() and "Replying to bob" in app.view.reply_label.cget("text")
    app.on_cancel_reply()
    settle(app)
    assert not app.view.reply_bar.winfo_ismapped()


def test_composer_takes_several_lines_and_grows(app: Any) -> None:
    in_lobby(app)
    e = app.view.entry
    e.focus_force()
    app.view.set_input("first")
    settle(app)
    e.event_generate("<Shift-Return>")
    e.insert("insert", "second")
    e.event_generate("<Shift-Return>")
    e.insert("insert", "third")
    e.event_generate("<KeyRelease>", keysym="d")
    settle(app)
    assert app.view.get_input() == "first\nsecond\nthird"
    assert int(e.cget("height")) == 3
    # Up moves inside the text, not through what was typed before.
    e.mark_set("insert", "3.2")
    e.event_generate("<Up>")
    settle(app)
    assert app.view.get_input() == "first\nsecond\nthird"


def test_topic_links_are_clickable(app: Any) -> None:
    in_lobby(app)
    fed(app, ":srv 332 alice #lobby :Read https://example.org/rules_(v2) first")
    t = app.view.topic
    r = t.tag_ranges("link")
    assert [t.get(r[0], r[1])] == ["https://example.org/rules_(v2)"]


def test_clear_and_close(app: Any) -> None:
    in_lobby(app)
    fed(app, ":bob!b@h PRIVMSG #lobby :something")
    app.send("/clear")
    settle(app)
    assert app.model.conversations["#lobby"].lines == [] and "something" not in app.view.text.get("1.0", "end")
    fed(app, ":bob!b@h PRIVMSG alice :hi")
    app.on_select("bob")
    app.send("/close")
    assert "bob" not in app.model.conversations and app.model.active == m.SERVER_KEY


def test_preferences_set_highlight_words_and_notifications(app: Any) -> None:
    from gui.view import PreferencesDialog

    def answer() -> None:
        dialogs = [w for w in app.root.winfo_children() if isinstance(w, PreferencesDialog)]
        if not dialogs or not dialogs[0].winfo_viewable():
            app.root.after(30, answer)
            return
        dialogs[0].words.set("release, deploy ,")
        dialogs[0].notify.set(False)
        dialogs[0].ok()

    in_lobby(app)
    app.root.after(30, answer)
    app.on_preferences()
    assert app.settings.highlights == ["release", "deploy"] and not app.settings.notifications
    fed(app, ":bob!b@h PRIVMSG #lobby :the deploy is done")
    assert app.model.conversations["#lobby"].lines[-1].mention


def test_menus_follow_the_theme(app: Any) -> None:
    from gui.view import PALETTES

    app.on_theme("dark")
    for menu in [*app.view.menus, app.view.user_menu("bob")]:
        assert str(menu.cget("background")) == PALETTES["dark"]["topic_bg"]
        assert str(menu.cget("foreground")) == PALETTES["dark"]["fg"]
    app.on_theme("light")
    assert str(app.view.menus[1].cget("background")) == PALETTES["light"]["topic_bg"]


def _labels(menu: Any) -> set[str]:
    end = menu.index("end")
    return {str(menu.entrycget(i, "label")) for i in range((end or 0) + 1) if menu.type(i) != "separator"}


def _descendants(widget: Any) -> Iterator[Any]:
    for child in widget.winfo_children():
        yield child
        yield from _descendants(child)


@pytest.fixture
def display(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    number: str = request.getfixturevalue("xvfb")
    monkeypatch.setenv("DISPLAY", number)
    monkeypatch.setenv("CHATROOM_GUI_CONFIG", str(tmp_path / "gui.json"))
    return number


from tests.test_gui_e2e import xvfb  # noqa: E402,F401  (the session-wide X server fixture)
