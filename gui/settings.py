"""The connect dialog's answers and a few preferences, kept in a small JSON file.

The file is ``chatroom/gui.json`` in the user's config directory
(``$XDG_CONFIG_HOME`` or ``~/.config`` on Linux, ``%APPDATA%`` on Windows,
``~/Library/Application Support`` on macOS); ``CHATROOM_GUI_CONFIG`` names
another file (tests use it). The password is kept only when the user ticks
"remember password", and the file is then readable by its owner only.
Pinned server certificates live next to it, in ``known_servers.json``
(:mod:`gui.known_servers`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

__all__ = ["Settings", "config_path", "load", "save"]


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 6667
    nick: str = ""
    password: str = ""
    remember_password: bool = False
    tls: bool = False
    tls_verify: bool = True  # False: no certificate checks at all (neither authorities nor pins)
    tls_cafile: str = ""  # extra certificate authorities (PEM), e.g. a company's or a test CA
    theme: str = "light"  # "light" or "dark"
    font_size: int = 11
    scale: float = 0.0  # Tk scaling; 0 = as the display says
    channels: list[str] = field(default_factory=lambda: ["#lobby"])  # joined on connect
    notifications: bool = True
    queries: list[str] = field(default_factory=list)  # private conversations open when the app closed
    geometry: str = ""  # the window's size and position, "1100x680+40+30"
    sashes: list[int] = field(default_factory=list)  # the pane dividers' positions, in pixels
    highlights: list[str] = field(default_factory=list)  # words that alert as a mention of your nick does
    muted: list[str] = field(default_factory=list)  # conversations that never alert
    ignored: list[str] = field(default_factory=list)  # nicks whose messages are hidden
    last_seen: str = ""  # when the app last closed (ISO 8601): CHATHISTORY TARGETS looks from there


def config_path() -> Path:
    if override := os.environ.get("CHATROOM_GUI_CONFIG"):
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "chatroom" / "gui.json"


def load(path: Path | None = None) -> Settings:
    """The saved settings; defaults for anything missing or unreadable."""
    path = path or config_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Settings()
    if not isinstance(raw, dict):
        return Settings()
    defaults = Settings()
    known = {}
    for f in fields(Settings):
        if f.name in raw and isinstance(raw[f.name], type(getattr(defaults, f.name))):
            known[f.name] = raw[f.name]
    return Settings(**known)


def save(settings: Settings, path: Path | None = None) -> Path:
    path = path or config_path()
    data = asdict(settings)
    if not settings.remember_password:
        data["password"] = ""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
    os.replace(tmp, path)
    return path
