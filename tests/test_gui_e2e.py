"""End to end under Xvfb: a real ChatApp window and a raw socket client chat.

Each test starts its own X server (``Xvfb -displayfd``), so nothing depends on
the desktop the tests run from; they skip only when the Xvfb binary is absent
(CI installs it). Screenshots go to ``artifacts/``; the README's are made by
``tools/screenshot.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.protocol import Message
from tests.conftest import ROOT, Server

pytestmark = pytest.mark.gui

ARTIFACTS = ROOT / "artifacts"


@pytest.fixture(scope="session")
def xvfb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One X server for the whole session: Tk keeps its display connection open
    after a window is destroyed, and Xlib exits the process if that server goes."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb); CI installs it")
    log = tmp_path_factory.mktemp("xvfb") / "xvfb.log"
    read, write = os.pipe()
    with open(log, "wb") as out:
        proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten",
                                 "tcp", "-dpi", "96"], pass_fds=(write,), stdout=out, stderr=out)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()  # Xvfb writes its display number once it accepts clients
    if not number:
        proc.kill()
        raise AssertionError("Xvfb did not start:\n" + log.read_text())
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def display(xvfb: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.setenv("CHATROOM_GUI_CONFIG", str(tmp_path / "gui.json"))
    return xvfb


@pytest.fixture
def make_app(display: str) -> Iterator[Callable[..., object]]:
    from gui.app import ChatApp
    from gui.settings import Settings

    apps: list[ChatApp] = []

    def make(port: int, nick: str, channels: list[str], theme: str = "light") -> ChatApp:
        notes: list[tuple[str, str]] = []
        app = ChatApp(settings=Settings(host="127.0.0.1", port=port, nick=nick, channels=channels, theme=theme),
                      ask=False, save_settings=False, notifier=lambda title, body: notes.append((title, body)))
        app.notes = notes  # type: ignore[attr-defined]
        apps.append(app)
        return app

    yield make
    for app in apps:
        errors = list(app.errors)
        if not app.closing:
            app.on_closing()
        assert errors == [], f"exceptions in the GUI's callbacks: {errors!r}"


def wait_until(app: object, cond: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Run Tk's event loop until ``cond()`` holds (fails after ``timeout``)."""
    root = app.root  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}; status: {app.status_text!r}")  # type: ignore[attr-defined]
        root.update()
        time.sleep(0.01)
    root.update()


def screenshot(app: object, path: Path) -> Path:
    from PIL import ImageGrab

    root = app.root  # type: ignore[attr-defined]
    root.lift()  # the other window may cover it (no window manager under Xvfb)
    root.update()
    x, y, w, h = root.winfo_rootx(), root.winfo_rooty(), root.winfo_width(), root.winfo_height()
    image = ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=os.environ["DISPLAY"])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def text_of(app: object) -> str:
    return app.view.text.get("1.0", "end")  # type: ignore[attr-defined]


def type_and_enter(app: object, text: str) -> None:
    """Type into the input box and press Enter, as a user would."""
    entry = app.view.entry  # type: ignore[attr-defined]
    entry.focus_force()
    app.view.set_input(text)  # type: ignore[attr-defined]
    entry.event_generate("<Return>")
    app.root.update()  # type: ignore[attr-defined]


def test_window_and_raw_client_chat_both_ways_with_emoji(server: Server, make_app: Callable[..., object]) -> None:
    app = make_app(server.port, "alice", ["#lobby"])
    wait_until(app, lambda: app.model.registered and app.model.active == "#lobby"
               and app.model.conversations["#lobby"].joined, what="alice in #lobby")
    bob = server.client("bob", caps=("message-tags",))
    bob.join("#lobby")
    wait_until(app, lambda: app.view.users.exists("u:bob"), what="bob in the user list")
    assert app.view.users.item("u:alice", "text") == "@alice"

    bob.send("PRIVMSG #lobby :hi there \U0001F44B see https://example.org/x?y=1 ok")
    wait_until(app, lambda: "see https://example.org" in text_of(app), what="bob's message drawn")
    shown = text_of(app)
    assert "hi there \U0001F44B see" in shown or "hi there [waving hand sign] see" in shown
    # The link tag covers exactly the URL: no offset drift after the emoji.
    ranges = app.view.text.tag_ranges("link")
    assert app.view.text.get(ranges[0], ranges[1]) == "https://example.org/x?y=1"

    type_and_enter(app, "hello bob \U0001F389 \U0001F600")
    got = bob.expect("PRIVMSG")
    assert got.source.startswith("alice!") and got.params == ("#lobby", "hello bob \U0001F389 \U0001F600")
    wait_until(app, lambda: any(ln.own and ln.text == "hello bob \U0001F389 \U0001F600"
                                for ln in app.model.conversations["#lobby"].lines), what="echo of alice's line")
    assert app.view.get_input() == ""

    # Typing, both ways.
    bob.send("@+typing=active TAGMSG #lobby")
    wait_until(app, lambda: "bob is typing" in app.view.typing.cget("text"), what="typing shown")
    app.view.set_input("x")
    app.view.entry.event_generate("<KeyRelease>", keysym="x")
    typing = bob.expect("TAGMSG")
    assert typing.tags.get("+typing") == "active"

    # A mention elsewhere: counted in the sidebar, notified, and in the title.
    app.on_select("*server*")
    bob.send("PRIVMSG #lobby :alice: are you there?")
    wait_until(app, lambda: app.view.sidebar.set("#lobby", "badge") == "@1", what="mention badge")
    assert app.notes and "are you there?" in app.notes[-1][1]
    assert app.root.title().startswith("(")
    app.on_select("#lobby")
    assert "new messages" in text_of(app)
    screenshot(app, ARTIFACTS / "gui-e2e.png")

    app.send("/quit bye for now")
    quit_msg = bob.expect("QUIT")
    assert quit_msg.source.startswith("alice!") and quit_msg.params == ("Quit: bye for now",)


def test_two_windows_and_a_realistic_session(server: Server, make_app: Callable[..., object]) -> None:
    """Two ChatApp windows talk."""
    alice = make_app(server.port, "alice", ["#lobby", "#python"])
    wait_until(alice, lambda: alice.model.registered and len(alice.model.wanted) == 2
               and all(c.joined for c in alice.model.conversations.values() if c.kind == "channel"),
               what="alice in two channels")
    zoe = make_app(server.port, "zoe", ["#lobby"], theme="dark")
    wait_until(zoe, lambda: zoe.model.registered and zoe.model.conversations.get("#lobby") is not None
               and zoe.model.conversations["#lobby"].joined, what="zoe in #lobby")
    others = {n: server.client(n) for n in ("bob", "carol", "dave")}
    for c in others.values():
        c.join("#lobby")
    others["bob"].join("#python")
    wait_until(alice, lambda: len(alice.model.conversations["#lobby"].members) == 5, what="everyone in #lobby")
    alice.on_select("#lobby")
    alice.send("/topic Welcome to Chat-room \u2014 be kind, have fun \u2615")
    alice.send("/mode +v bob")
    bob, carol, dave = others["bob"], others["carol"], others["dave"]
    carol.send("AWAY :lunch")
    bob.send("PRIVMSG #lobby :morning all! \u2600\ufe0f")
    carol.send("PRIVMSG #lobby :hi bob \U0001F44B the release notes are at https://example.org/notes")
    wait_until(zoe, lambda: "release notes" in text_of(zoe), what="zoe sees carol")
    type_and_enter(zoe, "thanks carol, reading them now \U0001F4DA")
    dave.send("PRIVMSG #lobby :\x01ACTION brings coffee for everyone \u2615\x01")
    bob.send("PRIVMSG #python :anyone tried the new match statement?")
    bob.send("PRIVMSG alice :got a minute later?")
    wait_until(alice, lambda: "reading them now" in text_of(alice), what="alice sees zoe")
    dave.send("PRIVMSG #lobby :alice: could you review my patch? \U0001F64F")
    wait_until(alice, lambda: "review my patch" in text_of(alice) and "bob" in alice.model.conversations,
               what="mention and private message")
    type_and_enter(alice, "sure dave, send it over \U0001F44D")
    wait_until(zoe, lambda: "send it over" in text_of(zoe), what="zoe sees alice")
    wait_until(alice, lambda: "send it over" in text_of(alice), what="alice's echo drawn")
    if "away-notify" in alice.model.caps:
        wait_until(alice, lambda: "away" in alice.view.users.item("u:carol", "text"), what="carol shown away")
    assert alice.model.conversations["bob"].unread == 1 and alice.model.conversations["#python"].unread == 1
    assert alice.view.sidebar.set("bob", "badge") == "@1"
    mention = [ln for ln in alice.model.conversations["#lobby"].lines if ln.mention]
    assert mention and mention[-1].nick == "dave"
    # zoe's own line, with an emoji outside the BMP, came back intact through the server.
    assert any(ln.own and ln.text.endswith("\U0001F4DA") for ln in zoe.model.conversations["#lobby"].lines)

    screenshot(alice, ARTIFACTS / "gui-session.png")
    screenshot(zoe, ARTIFACTS / "gui-session-dark.png")
    zoe.client.send(Message("QUIT", ("bye",)))
