"""End to end under Xvfb, against the real server: scrollback, restored conversations,
the reconnect indicator and the channel browser.

* Scrolling to the top of a channel loads older lines (CHATHISTORY BEFORE) page by
  page, keeps the line the reader was at in view, and says when there is no more.
* Private conversations open when the app closed come back on the next start with
  their history (CHATHISTORY LATEST); one held meanwhile from another client is
  found with CHATHISTORY TARGETS.
* When the server goes away the window shows one state (the status bar with
  "Reconnect now", one line in the server tab), never a line per try in every
  channel; "Reconnected" when it is back, and the topic is the server's, not the
  old one.
* The channel browser lists the server's channels with their people and topics,
  filters them, and joins one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gui import model as m
from tests.conftest import Server
from tests.test_gui_e2e import ARTIFACTS, screenshot, text_of, type_and_enter, wait_until

pytestmark = pytest.mark.gui

EXEMPT = ("--set", "flood_exempt=127.0.0.0/8")


@pytest.fixture
def apps(display: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """ChatApp windows that keep their settings in the test's config file."""
    from gui.app import ChatApp
    from gui.settings import Settings, load

    made: list[Any] = []

    def make(port: int, nick: str, channels: list[str], *, saved: bool = False, **kw: Any) -> Any:
        settings = load() if saved else Settings(host="127.0.0.1", port=port, nick=nick, channels=channels, **kw)
        settings.port = port
        app = ChatApp(settings=settings, ask=False, notifier=lambda title, body: None)
        made.append(app)
        return app

    yield make
    for app in made:
        errors = list(app.errors)
        if not app.closing:
            app.on_closing()
        assert errors == [], f"exceptions in the GUI's callbacks: {errors!r}"


def joined(app: Any, channel: str) -> bool:
    conv = app.model.conversation(channel)
    return bool(app.model.registered and conv is not None and conv.joined)


def said(app: Any, key: str) -> list[str]:
    conv = app.model.conversations.get(key)
    return [ln.text for ln in conv.lines if ln.kind == "message"] if conv else []


def test_scrolling_up_pages_through_history(start_server: Callable[..., Server], apps: Callable[..., Any]) -> None:
    server = start_server(*EXEMPT)
    bob = server.client("bob")
    bob.join("#big")
    for i in range(230):
        bob.send(f"PRIVMSG #big :msg {i:03d}")
    bob.sync()
    alice = apps(server.port, "alice", ["#big"])
    wait_until(alice, lambda: joined(alice, "#big") and len(said(alice, "#big")) == 100, timeout=15,
               what="the latest 100 lines")
    assert said(alice, "#big") == [f"msg {i:03d}" for i in range(130, 230)]
    assert alice.view.at_bottom()

    alice.view.scroll_to_top()  # as the reader's mouse wheel would
    wait_until(alice, lambda: len(said(alice, "#big")) == 200, what="a page of older lines")
    assert said(alice, "#big") == [f"msg {i:03d}" for i in range(30, 230)]
    top = alice.view.line_at("@0,0")
    assert top is not None and top.text in ("msg 129", "msg 130"), "the reader stays where they were"
    assert not alice.view.at_bottom()

    alice.view.scroll_to_top()
    wait_until(alice, lambda: len(said(alice, "#big")) == 230, what="the oldest page")
    alice.view.scroll_to_top()
    wait_until(alice, lambda: alice.model.conversations["#big"].older_done, what="the start of the history")
    assert said(alice, "#big") == [f"msg {i:03d}" for i in range(230)], "in order, nothing twice"
    assert "start of the history" in text_of(alice)
    # Asking again sends nothing more.
    assert alice.model.older_request("#big") is None
    # New lines still arrive at the bottom, counted while scrolled up.
    bob.send("PRIVMSG #big :a live line")
    wait_until(alice, lambda: alice.view.new_below == 1, what="the new-below counter")
    alice.view.jump_to_latest()
    assert alice.view.at_bottom()


def test_private_conversations_come_back_after_a_restart(start_server: Callable[..., Server],
                                                         apps: Callable[..., Any], tmp_path: Path) -> None:
    server = start_server(*EXEMPT)
    first = apps(server.port, "alice", ["#lobby"])
    wait_until(first, lambda: joined(first, "#lobby"), what="alice in #lobby")
    bob = server.client("bob")
    bob.send("PRIVMSG alice :psst, are you there?")
    wait_until(first, lambda: said(first, "bob") == ["psst, are you there?"], what="bob's private message")
    first.on_select("bob")
    type_and_enter(first, "yes, what's up?")
    assert bob.expect("PRIVMSG").params == ("bob", "yes, what's up?")
    wait_until(first, lambda: len(said(first, "bob")) == 2, what="alice's echo")
    first.on_closing()
    saved = json.loads((tmp_path / "gui.json").read_text())
    assert saved["queries"] == ["bob"] and saved["last_seen"]

    # Meanwhile alice uses another client: carol writes to her there.
    elsewhere = server.client("alice")
    carol = server.client("carol")
    carol.send("PRIVMSG alice :ping me when you are back")
    assert elsewhere.expect("PRIVMSG").params[1] == "ping me when you are back"
    elsewhere.send("QUIT :switching")
    elsewhere.expect("ERROR")
    bob.sync()

    second = apps(server.port, "alice", [], saved=True)
    assert "bob" in second.model.conversations, "the open conversation is back at once"
    wait_until(second, lambda: said(second, "bob") == ["psst, are you there?", "yes, what's up?"], timeout=15,
               what="bob's conversation restored with its history")
    wait_until(second, lambda: said(second, "carol") == ["ping me when you are back"], what="carol's, from TARGETS")
    assert all(ln.history for ln in second.model.conversations["bob"].lines if ln.kind == "message")
    assert second.model.conversations["bob"].mentions == 0, "restored history does not alert"
    second.on_select("bob")
    assert "psst, are you there?" in text_of(second) and "earlier messages (history) above" not in text_of(second)
    bob.send("PRIVMSG alice :welcome back")
    wait_until(second, lambda: "welcome back" in text_of(second), what="a live line after the history")
    assert "earlier messages (history) above" in text_of(second)
    screenshot(second, ARTIFACTS / "gui-restored-dm.png")


def test_reconnect_indicator_while_the_server_is_down(start_server: Callable[..., Server],
                                                      apps: Callable[..., Any]) -> None:
    server = start_server()
    port = server.port
    alice = apps(port, "alice", ["#lobby"])
    wait_until(alice, lambda: joined(alice, "#lobby"), what="alice in #lobby")
    alice.send("/topic a topic that will not survive the restart")
    wait_until(alice, lambda: "will not survive" in alice.view.topic_text(), what="the topic shown")
    alice.send("/away lunch")
    wait_until(alice, lambda: alice.model.away, what="alice away")
    alice.on_select("#lobby")
    lobby_lines = len(alice.model.conversations["#lobby"].lines)

    server.stop()
    wait_until(alice, lambda: "Reconnecting in" in alice.status_text, what="the reconnect countdown")
    assert alice.view.status_button.winfo_ismapped() and alice.view.status_button.cget("text") == "Reconnect now"
    wait_until(alice, lambda: alice.attempt >= 2 and "Reconnecting in" in alice.status_text, timeout=20,
               what="a few failed tries")
    assert "refuses connections" in alice.status_text
    alice.view.status_button.invoke()  # "Reconnect now" while still down: one more failed try
    wait_until(alice, lambda: "Reconnecting in" in alice.status_text, what="the countdown again")
    server_lines = alice.model.conversations[m.SERVER_KEY].lines
    lost = [ln for ln in server_lines if ln.text.startswith("Connection lost")]
    assert len(lost) == 1 and lost[0] is server_lines[-1] and lost[0].action == "reconnect"
    assert len(alice.model.conversations["#lobby"].lines) == lobby_lines, "nothing written into the channels"
    alice.on_select(m.SERVER_KEY)
    assert text_of(alice).count("Connection lost") == 1 and "Reconnect now" in text_of(alice)
    screenshot(alice, ARTIFACTS / "gui-reconnecting.png")

    again = start_server("--port", str(port))  # the same data directory: a restart
    alice.view.status_button.invoke()
    wait_until(alice, lambda: joined(alice, "#lobby"), timeout=20, what="back in #lobby")
    assert not alice.view.status_button.winfo_ismapped() and alice.status_text.startswith("Connected")
    assert server_lines[-1].text.startswith("Reconnected at") or any(
        ln.text.startswith("Reconnected at") for ln in server_lines)
    assert sum(ln.text.startswith(("Connection lost", "Reconnected")) for ln in server_lines) == 1
    alice.on_select("#lobby")
    assert "no topic set" in alice.view.topic_text(), "the old topic is not shown after the rejoin"
    wait_until(alice, lambda: sum(ln.text == "You are now marked as away." for c in alice.model.conversations.values()
                                  for ln in c.lines) == 2, what="the server's answer to the AWAY sent again")
    carol = again.client("carol")
    carol.send("WHOIS alice")
    assert carol.expect("301").params[-1] == "lunch", "the server has alice away again"


def test_channel_browser_lists_filters_and_joins(start_server: Callable[..., Server],
                                                 apps: Callable[..., Any]) -> None:
    server = start_server()
    bob, carol = server.client("bob"), server.client("carol")
    for who, channel, topic in ((bob, "#python", "Snakes and ladders"), (carol, "#python", ""),
                                (bob, "#pyqt", "Widgets"), (carol, "#rust", "Crabs welcome")):
        who.join(channel)
        if topic:
            who.send(f"TOPIC {channel} :{topic}")
    bob.sync()
    carol.sync()
    alice = apps(server.port, "alice", [])
    wait_until(alice, lambda: alice.model.registered, what="alice signed in")
    alice.on_channel_browser()
    browser = alice.view.browser
    wait_until(alice, lambda: len(browser.shown()) == 3 and browser.count.cget("text") == "3 channels",
               what="three channels listed")
    assert browser.shown()[0] == "#python", "most people first"
    assert browser.tree.set("#python", "users") == "2" and browser.tree.set("#rust", "topic") == "Crabs welcome"
    browser.filter.set("py")
    alice.root.update()
    assert browser.shown() == ["#python", "#pyqt"] and browser.count.cget("text") == "2 of 3 channels"
    browser.filter.set("crab")
    alice.root.update()
    assert browser.shown() == ["#rust"]
    screenshot(type("Shot", (), {"root": browser})(), ARTIFACTS / "gui-channel-browser.png")
    browser.tree.selection_set("#rust")
    browser.tree.focus_force()
    alice.root.update()
    browser.tree.event_generate("<Return>")
    wait_until(alice, lambda: joined(alice, "#rust") and alice.model.active == "#rust", what="joined from the list")
    assert "Crabs welcome" in alice.view.topic_text()


def test_several_lines_from_the_composer_reach_the_channel(start_server: Callable[..., Server],
                                                           apps: Callable[..., Any]) -> None:
    server = start_server()
    alice = apps(server.port, "alice", ["#lobby"])
    wait_until(alice, lambda: joined(alice, "#lobby"), what="alice in #lobby")
    bob = server.client("bob", caps=("batch", "draft/multiline"))
    carol = server.client("carol")
    bob.join("#lobby")
    carol.join("#lobby")
    alice.on_select("#lobby")
    alice.view.set_input("first line\nsecond line")
    alice.view.entry.focus_force()
    alice.view.entry.event_generate("<Return>")
    alice.root.update()
    if "draft/multiline" in alice.model.caps:  # one message of two lines (for those who can show it so)
        assert bob.expect("BATCH").params[1] == "draft/multiline"
    for c in (bob, carol):
        got = [c.expect("PRIVMSG").params for _ in range(2)]
        assert got == [("#lobby", "first line"), ("#lobby", "second line")]
    assert alice.view.get_input() == ""


@pytest.fixture
def display(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    number: str = request.getfixturevalue("xvfb")
    monkeypatch.setenv("DISPLAY", number)
    monkeypatch.setenv("CHATROOM_GUI_CONFIG", str(tmp_path / "gui.json"))
    return number


from tests.test_gui_e2e import xvfb  # noqa: E402,F401  (the session-wide X server fixture)
