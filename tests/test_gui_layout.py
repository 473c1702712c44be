"""The window's layout under Xvfb: the input box and the status bar are always there.

At 800x500, 1100x680 and 1600x1000, at every zoom step from -1 to +3 and with a
topic that wraps to three lines (and one far longer), the input box and the
status bar must be mapped, have their height and lie inside the window; the
newest line must stay in view after a resize or a zoom. No server: the window
is fed lines as the model would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gui import model as m

pytestmark = pytest.mark.gui

SIZES = ("800x500", "1100x680", "1600x1000")
ZOOMS = (-1, 0, 1, 2, 3)
THREE_LINES = ("Welcome to #lobby, the room for everything about Chat-room: say hello, ask questions, share links "
               "and be kind to each other; release notes at https://example.org/notes, the bug tracker at "
               "https://example.org/issues and the FAQ at https://example.org/faq (please read it first) ")


@pytest.fixture
def app(display: str) -> Iterator[Any]:
    from gui.app import ChatApp
    from gui.settings import Settings

    made = ChatApp(settings=Settings(nick="alice", channels=[]), connect=False, save_settings=False,
                   notifier=lambda title, body: None)
    yield made
    errors = list(made.errors)
    made.on_closing()
    assert errors == []


def settle(app: Any) -> None:
    for _ in range(3):
        app.root.update_idletasks()
        app.root.update()


def inside(app: Any, widget: Any) -> tuple[bool, str]:
    root = app.root
    x, y, w, h = widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(), widget.winfo_height()
    rx, ry, rw, rh = root.winfo_rootx(), root.winfo_rooty(), root.winfo_width(), root.winfo_height()
    ok = (widget.winfo_ismapped() and widget.winfo_viewable() and h >= widget.winfo_reqheight() - 2 and h > 8
          and w > 50 and x >= rx and y >= ry and x + w <= rx + rw and y + h <= ry + rh)
    return bool(ok), f"{widget} at {w}x{h}+{x - rx}+{y - ry} (asked {widget.winfo_reqheight()}) in {rw}x{rh}"


def fill(app: Any, key: str, n: int = 80) -> None:
    model = app.model
    start = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    for i in range(n):
        model.handle(m.parse(f"@time={m.format_time(start + timedelta(seconds=i))} :bob!b@h PRIVMSG {key} "
                             f":line {i} " + "with some words to wrap " * (i % 4)), start)
    app.on_select(key)


def a_channel(app: Any, topic: str) -> str:
    model = app.model
    for line in (":srv 001 alice :Welcome", ":alice!a@h JOIN #lobby", ":srv 353 alice = #lobby :@alice bob carol",
                 ":srv 366 alice #lobby :End", f":srv 332 alice #lobby :{topic}"):
        app._apply(model.handle(m.parse(line)))
    fill(app, "#lobby")
    return "#lobby"


@pytest.mark.parametrize("size", SIZES)
def test_entry_and_status_bar_visible_at_every_size_zoom_and_topic(app: Any, size: str) -> None:
    a_channel(app, THREE_LINES)
    app.root.geometry(size)
    settle(app)
    base = app.settings.font_size
    for zoom in ZOOMS:
        app.settings.font_size = base
        app.on_zoom(zoom)
        for topic in (THREE_LINES, THREE_LINES * 4, "short"):
            app.model.conversations["#lobby"].topic = topic
            app._refresh_topic()
            settle(app)
            for widget in (app.view.entry, app.view.status, app.view.status_bar, app.view.text):
                ok, where = inside(app, widget)
                assert ok, f"{size} zoom {zoom:+d} topic of {len(topic)} chars: {where}"
            lines = int(app.view.topic.cget("height"))
            assert 1 <= lines <= 3, "the topic takes three lines at most"
            if topic == THREE_LINES and size == "800x500" and zoom == 0:
                assert lines == 3, "this topic wraps to three lines at 800 px"
            assert app.view.at_bottom() and app.view.text.yview()[1] >= 0.999, \
                f"{size} zoom {zoom:+d}: the newest line is out of view"
    assert app.root.minsize() == (640, 420)


def test_the_smallest_window_still_has_the_input_at_the_largest_zoom(app: Any) -> None:
    a_channel(app, THREE_LINES * 3)
    app.root.geometry("300x200")  # smaller than allowed: the minimum size applies
    app.on_zoom(3)
    settle(app)
    assert app.root.winfo_width() >= 640 and app.root.winfo_height() >= 420
    for widget in (app.view.entry, app.view.status):
        ok, where = inside(app, widget)
        assert ok, where


def test_resize_and_zoom_keep_the_newest_line_in_view_unless_scrolled_up(app: Any) -> None:
    a_channel(app, "short")
    app.root.geometry("1100x680")
    settle(app)
    assert app.view.at_bottom()
    for size, zoom in (("800x500", 2), ("1600x1000", -1), ("900x560", 1)):
        app.root.geometry(size)
        app.on_zoom(zoom)
        settle(app)
        assert app.view.text.yview()[1] >= 0.999, f"{size} zoom {zoom:+d}"
    # Scrolled up, the view stays where the reader is, and counts what arrives below.
    app.view.text.yview_moveto(0.3)
    app.view._user_scrolled()
    settle(app)
    first = app.view.text.yview()[0]
    model = app.model
    for i in range(3):
        app._apply(model.handle(m.parse(f":carol!c@h PRIVMSG #lobby :new {i}")))
    settle(app)
    assert abs(app.view.text.yview()[0] - first) < 0.05
    assert app.view.new_below == 3 and app.view.below.winfo_ismapped()
    assert "3 new messages below" in app.view.below.cget("text")
    app.view.below.invoke()
    settle(app)
    assert app.view.at_bottom() and not app.view.below.winfo_ismapped()


def test_alt_up_down_switch_conversations_while_typing(app: Any) -> None:
    a_channel(app, "short")
    app._apply(app.model.open("#two", focus=False)[1])
    settle(app)
    order = list(app.view.sidebar.get_children())
    app.view.entry.focus_force()
    app.view.set_input("half a sentence")
    settle(app)
    start = order.index(app.model.active)
    app.view.entry.event_generate("<Alt-Down>")
    settle(app)
    assert app.model.active == order[(start + 1) % len(order)]
    app.view.entry.event_generate("<Alt-Up>")
    settle(app)
    assert app.model.active == order[start]
    app.view.entry.event_generate("<Control-Next>")
    settle(app)
    assert app.model.active == order[(start + 1) % len(order)]


def test_people_pane_only_in_channels(app: Any) -> None:
    a_channel(app, "short")
    settle(app)
    assert app.view.users_frame.winfo_ismapped() and app.view.users_frame.winfo_width() > 100
    app.on_open_query("bob")
    settle(app)
    assert not app.view.users_frame.winfo_ismapped()
    app.on_select(m.SERVER_KEY)
    settle(app)
    assert not app.view.users_frame.winfo_ismapped()
    app.on_select("#lobby")
    settle(app)
    assert app.view.users_frame.winfo_ismapped() and app.view.users_frame.winfo_width() > 100
    ok, where = inside(app, app.view.entry)
    assert ok, where


def test_placeholder_names_the_conversation(app: Any) -> None:
    a_channel(app, "short")
    settle(app)
    assert app.view.placeholder.cget("text") == "Message #lobby" and app.view.placeholder.winfo_ismapped()
    app.view.set_input("x")
    settle(app)
    assert not app.view.placeholder.winfo_ismapped()


@pytest.fixture
def display(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> str:
    number: str = request.getfixturevalue("xvfb")
    monkeypatch.setenv("DISPLAY", number)
    monkeypatch.setenv("CHATROOM_GUI_CONFIG", str(tmp_path / "gui.json"))
    return number


from tests.test_gui_e2e import xvfb  # noqa: E402,F401  (the session-wide X server fixture)

_ = Callable
