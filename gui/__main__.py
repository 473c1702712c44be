"""``chatroom-gui`` and ``python -m gui``: open the Chat-room desktop client."""

from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="chatroom-gui", description="The Chat-room desktop IRC client.")
    p.add_argument("--host", help="server to connect to (default: the last one used)")
    p.add_argument("--port", type=int, help="port (6667 usually, 6697 with TLS)")
    p.add_argument("--nick", help="your nickname")
    p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None, help="use TLS")
    p.add_argument("--join", help="channels to join, comma-separated (e.g. '#lobby,#help')")
    p.add_argument("--theme", choices=("light", "dark"), help="colour theme")
    p.add_argument("--connect", action="store_true",
                   help="connect at once without showing the connect dialog (needs a nickname)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from . import settings as settings_mod

    s = settings_mod.load()
    if args.host:
        s.host = args.host
    if args.port:
        s.port = args.port
    if args.nick:
        s.nick = args.nick
    if args.tls is not None:
        s.tls = args.tls
    if args.join:
        s.channels = [c.strip() for c in args.join.split(",") if c.strip()]
    if args.theme:
        s.theme = args.theme
    if password := os.environ.get("CHATROOM_PASSWORD"):
        s.password = password
    try:
        from .app import ChatApp
    except ImportError as exc:  # tkinter missing from this Python
        print(f"chatroom-gui needs tkinter ({exc}). On Debian/Ubuntu: apt install python3-tk", file=sys.stderr)
        return 2
    import tkinter

    try:
        app = ChatApp(settings=s, ask=not (args.connect and s.nick))
    except tkinter.TclError as exc:
        print(f"chatroom-gui cannot open a window: {exc}. Is a display available (DISPLAY)?", file=sys.stderr)
        return 2
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
