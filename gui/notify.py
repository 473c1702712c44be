"""Desktop notifications where the platform has them (``notify-send``, ``osascript``).

Fire and forget: a notification is a child process we never wait for, so a
missing or slow notification daemon cannot stall the window.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

__all__ = ["notify"]


def notify(title: str, body: str) -> bool:
    """Show a desktop notification; False when the platform offers none."""
    body = body if len(body) <= 200 else body[:199] + "\u2026"
    if sys.platform == "darwin" and shutil.which("osascript"):
        script = f"display notification {_applescript(body)} with title {_applescript(title)}"
        argv = ["osascript", "-e", script]
    elif (tool := shutil.which("notify-send")) is not None:
        argv = [tool, "--app-name=Chat-room", "--icon=internet-group-chat", title, body]
    else:
        return False
    try:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError:
        return False
    return True


def _applescript(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
