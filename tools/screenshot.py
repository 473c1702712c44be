#!/usr/bin/env python3
"""Make the README's screenshots: ``docs/screenshot.png`` (light) and ``docs/screenshot-dark.png``.

    python tools/screenshot.py            # under a private Xvfb (needs Xvfb and Pillow)
    python tools/screenshot.py --display  # on the current $DISPLAY instead
    python tools/screenshot.py --out /tmp # somewhere else than docs/

It starts the real server on a free loopback port with a temporary data
directory, has a few people chat (some of it before the windows join, so the
history boundary shows), opens two client windows (alice in the light theme,
zoe in the dark one) and grabs each window. Nothing here is faked: every line
goes through the server.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import ImageGrab  # noqa: E402

from gui.app import ChatApp  # noqa: E402
from gui.client import IRCConnection  # noqa: E402
from gui.settings import Settings  # noqa: E402
from server.protocol import parse  # noqa: E402


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    if shutil.which("Xvfb") is None:
        sys.exit("Xvfb is not installed (apt-get install xvfb), or pass --display")
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1400x900x24", "-nolisten", "tcp",
                             "-dpi", "96"], pass_fds=(write,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        proc.kill()
        sys.exit("Xvfb did not start")
    return proc, f":{number}"


def start_server(data: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATROOM_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "0", "--workers", "1",
                             "--data-dir", str(data), "--set", "flood_exempt=127.0.0.0/8"],
                            cwd=data, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode("utf-8", "replace")
        if found := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
            threading.Thread(target=_discard, args=(proc.stdout,), daemon=True).start()
            return proc, int(found.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    sys.exit("the server did not start")


def _discard(stream: Any) -> None:
    """Keep reading the server's log so its pipe never fills."""
    for _ in stream:
        pass


class Bot:
    """Someone chatting from another client (the GUI's own network client, no window)."""

    def __init__(self, port: int, nick: str) -> None:
        self.nick = nick
        self.conn = IRCConnection("127.0.0.1", port, nick, reconnect=False)
        self.conn.start()
        wait(lambda: self.conn.registered, f"{nick} signed in")

    def say(self, line: str) -> None:
        self.conn.send(parse(line))
        time.sleep(0.05)


def wait(cond: Callable[[], object], what: str, pump: Callable[[], None] | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        if pump is not None:
            pump()
        time.sleep(0.02)


def grab(root: Any, path: Path) -> None:
    root.lift()
    for _ in range(5):
        root.update()
        time.sleep(0.05)
    x, y, w, h = root.winfo_rootx(), root.winfo_rooty(), root.winfo_width(), root.winfo_height()
    image = ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=os.environ["DISPLAY"])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    print(f"wrote {path} ({w}x{h})")


def session(port: int, out: Path, config: Path) -> None:
    bob, carol, dave = Bot(port, "bob"), Bot(port, "carol"), Bot(port, "dave")
    for bot in (bob, carol, dave):
        bot.say("JOIN #lobby")
    bob.say("JOIN #python")
    bob.say("TOPIC #lobby :Welcome to Chat-room \u2014 be kind, have fun \u2615 Rules: https://example.org/rules")
    time.sleep(0.3)
    # Said before anyone opens a window: it comes back as history.
    carol.say("PRIVMSG #lobby :morning all! \u2600\ufe0f")
    bob.say("PRIVMSG #lobby :hi carol \U0001F44B the release notes are up: https://example.org/notes")
    bob.say("PRIVMSG #lobby :\x02v2.0\x02 has the new \x0303scrollback\x03 and a channel list")
    time.sleep(0.3)

    os.environ["CHATROOM_GUI_CONFIG"] = str(config)
    apps: list[ChatApp] = []

    def pump() -> None:
        for app in apps:
            app.root.update()

    alice = ChatApp(settings=Settings(host="127.0.0.1", port=port, nick="alice", channels=["#lobby", "#python"],
                                      theme="light"), ask=False, save_settings=False, notifier=lambda t, b: None)
    apps.append(alice)
    alice.root.geometry("1100x680+0+0")
    wait(lambda: alice.model.registered and all(
        alice.model.conversations.get(c) is not None and alice.model.conversations[c].joined
        for c in ("#lobby", "#python")), "alice in her channels", pump)
    zoe = ChatApp(settings=Settings(host="127.0.0.1", port=port, nick="zoe", channels=["#lobby"], theme="dark"),
                  ask=False, save_settings=False, notifier=lambda t, b: None)
    apps.append(zoe)
    zoe.root.geometry("1100x680+0+0")
    wait(lambda: zoe.model.registered and zoe.model.conversations.get("#lobby") is not None
         and zoe.model.conversations["#lobby"].joined, "zoe in #lobby", pump)
    wait(lambda: len(alice.model.conversations["#lobby"].lines) > 3, "the history", pump)

    carol.say("AWAY :lunch")
    bob.say("MODE #lobby +v dave")
    dave.say("PRIVMSG #lobby :\x01ACTION brings coffee for everyone \u2615\x01")
    zoe.send("thanks bob, reading them now \U0001F4DA")
    zoe.send("the channel list is really handy")
    wait(lambda: any("reading them now" in ln.text for ln in alice.model.conversations["#lobby"].lines),
         "zoe's lines", pump)
    notes = next((ln for ln in alice.model.conversations["#lobby"].lines if "release notes" in ln.text), None)
    if notes is not None and notes.msgid:
        for bot in (carol, dave):
            bot.say(f"@+draft/react=\U0001F389;+draft/reply={notes.msgid} TAGMSG #lobby")
    bob.say("PRIVMSG #python :anyone tried the new match statement?")
    bob.say("PRIVMSG alice :got a minute later?")
    dave.say("PRIVMSG #lobby :alice: could you review my patch? \U0001F64F")
    wait(lambda: "bob" in alice.model.conversations and any(
        "review my patch" in ln.text for ln in alice.model.conversations["#lobby"].lines), "the mention", pump)
    alice.on_select("#lobby")
    alice.send("sure dave, send it over \U0001F44D")
    wait(lambda: any("send it over" in ln.text for ln in zoe.model.conversations["#lobby"].lines),
         "alice's answer", pump)
    alice.view.set_input("I'll look at it after lunch")
    zoe.on_select("#lobby")
    for _ in range(20):
        pump()
        time.sleep(0.02)
    grab(alice.root, out / "screenshot.png")
    zoe.root.lift()
    grab(zoe.root, out / "screenshot-dark.png")
    for app in apps:
        app.on_closing()
    for bot in (bob, carol, dave):
        bot.conn.quit("bye", timeout=0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--display", action="store_true", help="use $DISPLAY instead of a private Xvfb")
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNG files go (default: docs/)")
    args = p.parse_args(argv)
    xvfb = None
    if not args.display:
        xvfb, display = start_xvfb()
        os.environ["DISPLAY"] = display
    with tempfile.TemporaryDirectory(prefix="chatroom-shot-") as tmp:
        server, port = start_server(Path(tmp))
        try:
            session(port, args.out, Path(tmp) / "gui.json")
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
            if xvfb is not None:
                xvfb.terminate()
                xvfb.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
