"""The window: it draws what the controller hands it and reports what the user does.

The only module of the client that imports tkinter (habit 12; IDLE's
``calltip.py``/``calltip_w.py`` split). It holds no chat state: the controller
calls ``show``/``append``/``set_*`` with data from the model, and the view calls
the controller's ``on_*`` methods for clicks and keys.

Layout: the status bar is packed before the panes and the centre column is a
grid whose only stretching row is the message area, so when the window is
small, the font big or the topic long, the messages shrink and the topic (at
most three lines), the input box and the status bar stay. Every widget that
could ask for a lot of height (text areas, lists) asks for one line; the grid
gives them the rest.

Text is inserted as (chunk, tags) pairs and never addressed by character offset,
because Tk counts a character outside the BMP (an emoji) as two where Python
counts one; offsets would drift. On a Tk that cannot round-trip such characters
at all, :func:`tk_handles_astral` says so and they are drawn spelled out
(``bmp_safe``); the model and the wire keep the original text.
"""

from __future__ import annotations

import bisect
import functools
import re
import sys
import tkinter as tk
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from tkinter import font as tkfont
from tkinter import ttk
from typing import Any, Protocol

from server.protocol import is_valid_nick

from .model import Breaks, ChannelInfo, Line, Style, bmp_safe, breaks, nick_colour_index, parse_formatting, split_links
from .settings import Settings

__all__ = ["PALETTES", "AskStringDialog", "CertificateChangedDialog", "ChannelBrowser", "ConnectDialog", "MainView",
           "MessageDialog", "PreferencesDialog", "SidebarItem", "ThemedDialog", "TrustCertificateDialog", "UserItem",
           "contrast", "create_root", "filter_channels", "readable", "tk_handles_astral"]

sv_ttk: Any
try:  # The Sun Valley ttk theme (maintained, pure Tcl); plain ttk styling without it.
    import sv_ttk
except ImportError:  # pragma: no cover - depends on the installation
    sv_ttk = None

PALETTES: dict[str, dict[str, Any]] = {
    "light": {
        "bg": "#ffffff", "fg": "#1c1c1c", "muted": "#6b6b6b", "ts": "#8a8a8a", "own_bg": "#f1f6ff",
        "mention_bg": "#fff1c2", "mention_fg": "#b3261e", "link": "#0b57c2", "error": "#b3261e",
        "marker": "#d81b60", "select": "#cfe3ff", "notice": "#6a3fa8", "topic_bg": "#f3f3f3",
        "found": "#ffe066", "reaction_bg": "#eef0f3", "day": "#7a7a7a",
        "nicks": ["#b3261e", "#1b7a31", "#0b57c2", "#8f5000", "#7b3aa5", "#00737d", "#b84400", "#2e6b2f",
                  "#6a1b9a", "#1459a8", "#a3134f", "#4a6600", "#5d4037", "#00695c", "#ad1457", "#3949ab",
                  "#7c5d00", "#006d4f", "#8e24aa", "#c2185b", "#455a64", "#9e3d00", "#2f6f8f", "#6d5c00"],
    },
    "dark": {
        "bg": "#1e1f22", "fg": "#e6e6e6", "muted": "#9a9ea6", "ts": "#80848c", "own_bg": "#23293a",
        "mention_bg": "#4a3b12", "mention_fg": "#ffb86b", "link": "#6cb6ff", "error": "#ff6b6b",
        "marker": "#ff5c8a", "select": "#2f4b7c", "notice": "#c39bff", "topic_bg": "#2b2d31",
        "found": "#6b5a00", "reaction_bg": "#2e3136", "day": "#9a9ea6",
        "nicks": ["#ff7b72", "#7ee787", "#79c0ff", "#ffa657", "#d2a8ff", "#56d4dd", "#f0883e", "#a5d6a7",
                  "#e1a3ff", "#82b1ff", "#ff8ab4", "#c5e478", "#ffd866", "#80cbc4", "#f48fb1", "#9fa8da",
                  "#ffcc80", "#b39ddb", "#81d4fa", "#e6ee9c", "#ef9a9a", "#a5d6ff", "#ffab91", "#c8e6c9"],
    },
}
NICK_COLOURS = 24
REACTIONS = ("\U0001F44D", "\u2764\ufe0f", "\U0001F602", "\U0001F389", "\U0001F440")
MAX_TOPIC_LINES = 3
MAX_INPUT_LINES = 5
MIN_WIDTH, MIN_HEIGHT = 640, 420  # the smallest window: everything still fits at the largest zoom

# Keys that do not mean "writing a message" (the typing notification ignores them).
_NOT_TYPING = frozenset({"Return", "KP_Enter", "Up", "Down", "Tab", "Escape", "Shift_L", "Shift_R", "Control_L",
                         "Control_R", "Alt_L", "Alt_R", "Prior", "Next"})
_GEOMETRY_RE = re.compile(r"(\d+)x(\d+)([+-]-?\d+)?([+-]-?\d+)?")


def _luminance(colour: str) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    """The WCAG contrast ratio of two ``#rrggbb`` colours (1 to 21; 4.5 is enough for text)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable(colour: str, background: str, wanted: float = 4.5) -> str:
    """``colour`` mixed towards white or black until it reads on ``background`` (mIRC colours
    chosen for a white page, shown on the dark theme)."""
    if contrast(colour, background) >= wanted:
        return colour
    target = 255 if _luminance(background) < 0.5 else 0
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    for step in range(1, 11):
        k = step / 10
        mixed = "#" + "".join(f"{round(c + (target - c) * k):02x}" for c in (r, g, b))
        if contrast(mixed, background) >= wanted:
            return mixed
    return "#ffffff" if target else "#000000"


def filter_channels(items: Sequence[ChannelInfo], text: str) -> list[ChannelInfo]:
    """The channel browser's rows: those whose name or topic holds every word of ``text``,
    most people first."""
    words = text.lower().split()
    found = [it for it in items if all(w in it.name.lower() or w in it.topic.lower() for w in words)]
    return sorted(found, key=lambda it: (-it.users, it.name.lower()))


@dataclass(frozen=True, slots=True)
class SidebarItem:
    key: str
    label: str
    kind: str
    unread: int
    mentions: int
    joined: bool
    muted: bool = False


@dataclass(frozen=True, slots=True)
class UserItem:
    prefix: str
    nick: str
    away: bool
    ignored: bool = False


class Handlers(Protocol):
    """What the view calls (the controller implements these)."""

    def send(self, text: str | None = None) -> None: ...
    def on_select(self, key: str) -> None: ...
    def on_history(self, older: bool) -> None: ...
    def on_complete(self) -> None: ...
    def on_typing(self) -> None: ...
    def on_close_conversation(self, key: str) -> None: ...
    def on_mute(self, key: str, muted: bool) -> None: ...
    def on_open_query(self, nick: str) -> None: ...
    def on_user_action(self, nick: str, action: str) -> None: ...
    def on_connect_dialog(self) -> None: ...
    def on_reconnect(self) -> None: ...
    def on_theme(self, name: str) -> None: ...
    def on_zoom(self, step: int) -> None: ...
    def on_help(self) -> None: ...
    def on_closing(self) -> None: ...
    def on_scrolled_top(self) -> None: ...
    def on_channel_browser(self) -> None: ...
    def on_list_refresh(self) -> None: ...
    def on_join(self, channel: str) -> None: ...
    def on_reply(self, line: Line) -> None: ...
    def on_cancel_reply(self) -> None: ...
    def on_react(self, line: Line, emoji: str) -> None: ...
    def on_preferences(self) -> None: ...


def create_root(settings: Settings, class_name: str = "Chat-room") -> tk.Tk:
    """The Tk root, aware of HiDPI displays."""
    if sys.platform == "win32":  # pragma: no cover - Windows only
        try:
            import ctypes

            ctypes.windll.shcore.SetProcessDpiAwareness(1)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            pass
    root = tk.Tk(className=class_name)
    if settings.scale > 0:
        root.tk.call("tk", "scaling", settings.scale)
    return root


def tk_handles_astral(root: tk.Misc) -> bool:
    """Whether this Tk keeps a character outside the BMP intact in a text widget."""
    probe = "a\U0001F600b"
    try:
        text = tk.Text(root)
        text.insert("1.0", probe)
        ok = text.get("1.0", "end-1c") == probe
        text.destroy()
        return ok
    except tk.TclError:
        return False


def _ignore_event(func: Callable[..., object], *args: Any) -> object:
    """A Tk callback that drops the event (the last argument) and calls ``func(*args)``."""
    return func(*args[:-1])


def _cursor(widget: tk.Text, cursor: str, event: object = None) -> None:
    widget.configure(cursor=cursor)


def _open_url(url: str, event: object = None) -> None:
    webbrowser.open(url)


def _count(widget: tk.Text, start: str, end: str, what: str) -> int:
    """``Text.count`` as an int, whatever this Python's tkinter returns (a tuple, an int or None)."""
    got: object = widget.count(start, end, what)  # type: ignore[call-overload]
    if isinstance(got, tuple):
        got = got[0] if got else 0
    return got if isinstance(got, int) else 0


def _clamp_geometry(text: str, screen_w: int, screen_h: int) -> str | None:
    """A remembered geometry, made to fit the screen (None when unreadable)."""
    m = _GEOMETRY_RE.fullmatch(text.strip())
    if m is None:
        return None
    w = max(MIN_WIDTH, min(int(m[1]), screen_w))
    h = max(MIN_HEIGHT, min(int(m[2]), screen_h))
    if m[3] and m[4]:
        x = max(0, min(int(m[3]), screen_w - w))
        y = max(0, min(int(m[4]), screen_h - h))
        return f"{w}x{h}+{x}+{y}"
    return f"{w}x{h}"


class MainView:
    """The main window's widgets."""

    def __init__(self, root: tk.Tk, handlers: Handlers, settings: Settings) -> None:
        self.root = root
        self.h = handlers
        self.theme = settings.theme if settings.theme in PALETTES else "light"
        self.safe: Callable[[str], str] = (lambda s: s) if tk_handles_astral(root) else bmp_safe
        self._urls: dict[str, str] = {}
        self._shown_key: str | None = None
        self._last: Line | None = None  # the last line drawn, for grouping and separators
        self._starts: list[int] = []  # the text line where each drawn Line begins ...
        self._drawn: list[Line] = []  # ... and that Line
        self._stick = True  # follow new lines (the reader is at the bottom)
        self._below = 0  # lines arrived while scrolled up
        self._fonts: dict[tuple[bool, bool, bool], tkfont.Font] = {}
        self._colour_tags: set[str] = set()
        self._hangs: set[int] = set()
        self._users_shown = True
        self._placeholder_text = ""
        self.browser: ChannelBrowser | None = None
        base = tkfont.nametofont("TkDefaultFont").actual()
        self.family = str(base["family"])
        self.mono_family = str(tkfont.nametofont("TkFixedFont").actual()["family"])
        size = settings.font_size
        self.font = tkfont.Font(root, family=self.family, size=size)
        self.bold = tkfont.Font(root, family=self.family, size=size, weight="bold")
        self.italic = tkfont.Font(root, family=self.family, size=size, slant="italic")
        self.small = tkfont.Font(root, family=self.family, size=max(7, size - 2))
        self.small_bold = tkfont.Font(root, family=self.family, size=max(7, size - 2), weight="bold")
        self.mono = tkfont.Font(root, family=self.mono_family, size=max(7, size - 1))
        root.title("Chat-room")
        root.minsize(MIN_WIDTH, MIN_HEIGHT)
        geometry = _clamp_geometry(settings.geometry, root.winfo_screenwidth(), root.winfo_screenheight()) \
            if settings.geometry else None
        root.geometry(geometry or "1100x680")
        self._build()
        self.apply_theme(self.theme)
        self._pending_sizes = list(settings.sashes) if len(settings.sashes) == 2 else []
        self.panes.bind("<Configure>", lambda e: self._panes_configured(), add="+")

    # -- building -------------------------------------------------------------------
    def _build(self) -> None:
        root = self.root
        self._menu()
        outer = ttk.Frame(root)
        outer.pack(fill="both", expand=True)
        # The status bar first: pack gives space in packing order, so it is never the one left out.
        bar = ttk.Frame(outer, padding=(8, 2))
        bar.pack(side="bottom", fill="x")
        self.status_bar = bar
        self.status = ttk.Label(bar, text="Not connected", font=self.small)
        self.status.pack(side="left")
        self.status_button = ttk.Button(bar, text="Reconnect now", command=self.h.on_reconnect)
        self.lag = ttk.Label(bar, text="", font=self.small)
        self.lag.pack(side="right")

        panes = ttk.PanedWindow(outer, orient="horizontal")
        panes.pack(side="top", fill="both", expand=True)
        self.panes = panes

        side = ttk.Frame(panes, padding=(6, 6, 0, 6))
        side.rowconfigure(1, weight=1)
        side.columnconfigure(0, weight=1)
        ttk.Label(side, text="Conversations", font=self.small).grid(row=0, column=0, sticky="w", padx=2)
        self.sidebar = ttk.Treeview(side, columns=("badge",), show="tree", selectmode="browse", height=1)
        self.sidebar.column("#0", width=150, stretch=True)
        self.sidebar.column("badge", width=44, anchor="e", stretch=False)
        self.sidebar.grid(row=1, column=0, sticky="nsew", pady=(4, 0))
        self.sidebar.bind("<<TreeviewSelect>>", self._sidebar_selected)
        self.sidebar.bind("<Button-2>", self._sidebar_menu)
        self.sidebar.bind("<Button-3>", self._sidebar_menu)
        panes.add(side, weight=0)

        centre = ttk.Frame(panes, padding=(6, 6, 6, 4))
        centre.columnconfigure(0, weight=1)
        centre.rowconfigure(1, weight=1)  # only the messages stretch (and shrink)
        self.centre = centre
        self.topic = tk.Text(centre, height=1, wrap="word", relief="flat", borderwidth=0, highlightthickness=0,
                             padx=10, pady=6, font=self.bold, cursor="arrow", takefocus=False)
        self.topic.grid(row=0, column=0, sticky="ew")
        self.topic.bind("<Configure>", lambda e: self._fit_topic())
        self.topic.configure(state="disabled")

        body = ttk.Frame(centre)
        body.grid(row=1, column=0, sticky="nsew", pady=(6, 0))
        body.rowconfigure(0, weight=1)
        body.columnconfigure(0, weight=1)
        self.body = body
        self.text = tk.Text(body, wrap="word", state="disabled", relief="flat", borderwidth=0, height=1, width=20,
                            padx=10, pady=8, font=self.font, cursor="arrow", spacing1=2, spacing3=2,
                            highlightthickness=0, takefocus=False)
        self.scroll = ttk.Scrollbar(body, orient="vertical", command=self._scrollbar)
        self.text.configure(yscrollcommand=self.scroll.set)
        self.text.grid(row=0, column=0, sticky="nsew")
        self.scroll.grid(row=0, column=1, sticky="ns")
        self.text.bind("<Key>", self._text_key)  # typing while the messages have the focus goes to the box
        self.text.bind("<Configure>", lambda e: self._follow())
        for seq, step in (("<Button-4>", -3), ("<Button-5>", 3)):
            self.text.bind(seq, functools.partial(_ignore_event, self._wheel, step))
        self.text.bind("<MouseWheel>", lambda e: self._wheel(-3 if e.delta > 0 else 3))
        self.text.bind("<Button-3>", self._line_menu)
        self.below = ttk.Button(body, text="", command=self.jump_to_latest, style="Accent.TButton"
                                if sv_ttk is not None else "TButton")

        find = ttk.Frame(centre)
        self.find_bar = find
        ttk.Label(find, text="Find:", font=self.small).pack(side="left")
        self.find_var = tk.StringVar()
        self.find_entry = ttk.Entry(find, textvariable=self.find_var, font=self.font, width=24)
        self.find_entry.pack(side="left", padx=(6, 6))
        self.find_count = ttk.Label(find, text="", font=self.small)
        ttk.Button(find, text="\u2191", width=3, command=lambda: self.find_next(backwards=True)).pack(side="left")
        ttk.Button(find, text="\u2193", width=3, command=lambda: self.find_next()).pack(side="left", padx=(2, 0))
        ttk.Button(find, text="\u2715", width=3, command=self.close_find).pack(side="right")
        self.find_count.pack(side="left", padx=(8, 0))
        self.find_var.trace_add("write", lambda *a: self._find_all())
        self.find_entry.bind("<Return>", lambda e: self._call(self.find_next))
        self.find_entry.bind("<Shift-Return>", lambda e: self._call(self.find_next, True))
        self.find_entry.bind("<Escape>", lambda e: self._call(self.close_find))
        self._find_hits: list[str] = []
        self._find_at = -1

        self.typing = ttk.Label(centre, text=" ", font=self.small)
        self.typing.grid(row=3, column=0, sticky="ew", pady=(2, 0))

        reply = ttk.Frame(centre)
        self.reply_bar = reply
        self.reply_label = ttk.Label(reply, text="", font=self.small)
        self.reply_label.pack(side="left", fill="x", expand=True)
        ttk.Button(reply, text="\u2715", width=3, command=self.h.on_cancel_reply).pack(side="right")

        box = ttk.Frame(centre, style="Card.TFrame" if sv_ttk is not None else "TFrame", padding=1)
        box.grid(row=5, column=0, sticky="ew", pady=(2, 0))
        box.columnconfigure(0, weight=1)
        self.entry = tk.Text(box, height=1, wrap="word", font=self.font, relief="flat", borderwidth=0,
                             highlightthickness=1, padx=8, pady=5, undo=True, width=20)
        self.entry.grid(row=0, column=0, sticky="ew")
        self.placeholder = tk.Label(box, text="", font=self.font, anchor="w", cursor="xterm", borderwidth=0,
                                    padx=0, pady=0)
        self.placeholder.bind("<Button-1>", lambda e: self.entry.focus_set())
        e = self.entry
        e.bind("<Return>", lambda ev: self._call(self.h.send))
        e.bind("<KP_Enter>", lambda ev: self._call(self.h.send))
        e.bind("<Shift-Return>", lambda ev: self._call(self._newline))
        e.bind("<Up>", lambda ev: self._input_arrow(True))
        e.bind("<Down>", lambda ev: self._input_arrow(False))
        e.bind("<Tab>", lambda ev: self._call(self.h.on_complete))
        e.bind("<Prior>", lambda ev: self._call(self._page, -1))
        e.bind("<Next>", lambda ev: self._call(self._page, 1))
        e.bind("<KeyRelease>", self._input_key)
        e.bind("<Control-f>", lambda ev: self._call(self.open_find))  # before Text's own Ctrl+F (cursor right)
        e.bind("<<Modified>>", lambda ev: self._input_changed())
        for seq, step in (("<Alt-Up>", -1), ("<Alt-Down>", 1), ("<Control-Prior>", -1), ("<Control-Next>", 1)):
            # On the box itself too: its own <Up>/<Prior> bindings would otherwise take these keys first.
            e.bind(seq, functools.partial(_ignore_event, self._step_sidebar, step))
            root.bind_all(seq, functools.partial(_ignore_event, self._step_sidebar, step))
        panes.add(centre, weight=1)

        users = ttk.Frame(panes, padding=(0, 6, 6, 6))
        users.rowconfigure(1, weight=1)
        users.columnconfigure(0, weight=1)
        self.users_frame = users
        self.users_title = ttk.Label(users, text="People", font=self.small)
        self.users_title.grid(row=0, column=0, sticky="w", padx=2)
        self.users = ttk.Treeview(users, show="tree", selectmode="browse", height=1)
        self.users.column("#0", width=160)
        self.users.grid(row=1, column=0, sticky="nsew", pady=(4, 0))
        self.users.bind("<Double-1>", self._user_activated)
        self.users.bind("<Return>", self._user_activated)
        self.users.bind("<Button-2>", self._user_menu)
        self.users.bind("<Button-3>", self._user_menu)
        panes.add(users, weight=0)
        self._i_am_op = False

        self.entry.focus_set()
        root.bind_all("<Control-plus>", lambda e: self.h.on_zoom(1))
        root.bind_all("<Control-equal>", lambda e: self.h.on_zoom(1))
        root.bind_all("<Control-minus>", lambda e: self.h.on_zoom(-1))
        root.bind_all("<Control-f>", lambda e: self._call(self.open_find))
        root.bind_all("<Control-End>", lambda e: self._call(self.jump_to_latest))
        root.bind_all("<Control-l>", lambda e: self._call(self.h.on_channel_browser))

    def _menu(self) -> None:
        bar = tk.Menu(self.root)
        self.menus: list[tk.Menu] = [bar]
        server = tk.Menu(bar, tearoff=False)
        server.add_command(label="Connect\u2026", command=self.h.on_connect_dialog)
        server.add_command(label="Reconnect", command=self.h.on_reconnect)
        server.add_command(label="Channel list\u2026", command=self.h.on_channel_browser, accelerator="Ctrl+L")
        server.add_separator()
        server.add_command(label="Preferences\u2026", command=self.h.on_preferences)
        server.add_separator()
        server.add_command(label="Quit", command=self.h.on_closing, accelerator="Ctrl+Q")
        bar.add_cascade(label="Server", menu=server)
        view = tk.Menu(bar, tearoff=False)
        self._theme_var = tk.StringVar(value=self.theme)
        view.add_radiobutton(label="Light theme", value="light", variable=self._theme_var,
                             command=lambda: self.h.on_theme("light"))
        view.add_radiobutton(label="Dark theme", value="dark", variable=self._theme_var,
                             command=lambda: self.h.on_theme("dark"))
        view.add_separator()
        view.add_command(label="Bigger text", command=lambda: self.h.on_zoom(1), accelerator="Ctrl++")
        view.add_command(label="Smaller text", command=lambda: self.h.on_zoom(-1), accelerator="Ctrl+-")
        view.add_separator()
        view.add_command(label="Find\u2026", command=self.open_find, accelerator="Ctrl+F")
        view.add_command(label="Jump to latest", command=self.jump_to_latest, accelerator="Ctrl+End")
        bar.add_cascade(label="View", menu=view)
        helpm = tk.Menu(bar, tearoff=False)
        helpm.add_command(label="Commands and keys", command=self.h.on_help)
        bar.add_cascade(label="Help", menu=helpm)
        self.menus += [server, view, helpm]
        self.root.configure(menu=bar)
        self.root.bind_all("<Control-q>", lambda e: self.h.on_closing())

    def _popup(self) -> tk.Menu:
        menu = tk.Menu(self.root, tearoff=False)
        self._colour_menu(menu)
        return menu

    def _colour_menu(self, menu: tk.Menu) -> None:
        p = PALETTES[self.theme]
        menu.configure(background=p["topic_bg"], foreground=p["fg"], activebackground=p["select"],
                       activeforeground=p["fg"], disabledforeground=p["muted"], borderwidth=1, relief="flat",
                       font=self.font)

    # -- theme and fonts ---------------------------------------------------------------
    def apply_theme(self, name: str) -> None:
        self.theme = name if name in PALETTES else "light"
        self._theme_var.set(self.theme)
        p = PALETTES[self.theme]
        style = ttk.Style(self.root)
        if sv_ttk is not None:
            sv_ttk.set_theme(self.theme, self.root)
        else:  # plain ttk, coloured by hand
            style.theme_use("clam")
            style.configure(".", background=p["topic_bg"], foreground=p["fg"], fieldbackground=p["bg"])
            style.configure("Treeview", background=p["bg"], fieldbackground=p["bg"], foreground=p["fg"])
            self.root.configure(background=p["topic_bg"])
        style.configure("Treeview", rowheight=int(self.font.metrics("linespace") * 1.6))
        for menu in self.menus:
            self._colour_menu(menu)
        self.topic.configure(background=p["topic_bg"], foreground=p["fg"], selectbackground=p["select"],
                             inactiveselectbackground=p["select"])
        self.topic.tag_configure("link", foreground=p["link"], underline=True)
        self.entry.configure(background=p["bg"], foreground=p["fg"], insertbackground=p["fg"],
                             selectbackground=p["select"], selectforeground=p["fg"], highlightcolor=p["link"],
                             highlightbackground=p["topic_bg"])
        self.placeholder.configure(background=p["bg"], foreground=p["muted"])
        t = self.text
        t.configure(background=p["bg"], foreground=p["fg"], insertbackground=p["fg"],
                    selectbackground=p["select"], selectforeground=p["fg"], inactiveselectbackground=p["select"])
        t.tag_configure("ts", foreground=p["ts"], font=self.small)
        t.tag_configure("nick", font=self.bold)
        for i, colour in enumerate(p["nicks"]):
            t.tag_configure(f"nick{i}", foreground=colour)
        t.tag_configure("ownnick", foreground=p["muted"], font=self.bold)
        t.tag_configure("own", background=p["own_bg"])
        t.tag_configure("mention", background=p["mention_bg"])
        t.tag_configure("mentionnick", foreground=p["mention_fg"], font=self.bold)
        t.tag_configure("event", foreground=p["muted"], font=self.small)
        t.tag_configure("info", foreground=p["muted"])
        t.tag_configure("block", foreground=p["fg"], font=self.mono)
        t.tag_configure("notice", foreground=p["notice"])
        t.tag_configure("error", foreground=p["error"])
        t.tag_configure("action", font=self.italic)
        t.tag_configure("history", foreground=p["fg"])
        t.tag_configure("quote", foreground=p["muted"], font=self.small)
        t.tag_configure("reaction", background=p["reaction_bg"], font=self.small)
        t.tag_configure("button", foreground=p["link"], underline=True, font=self.bold)
        for sep in ("marker", "day", "histend", "top"):
            t.tag_configure(sep, justify="center", font=self.small, spacing1=6, spacing3=6)
        t.tag_configure("marker", foreground=p["marker"])
        t.tag_configure("day", foreground=p["day"], font=self.small_bold)
        t.tag_configure("histend", foreground=p["muted"])
        t.tag_configure("top", foreground=p["muted"])
        t.tag_configure("link", foreground=p["link"], underline=True)
        t.tag_configure("found", background=p["found"])
        t.tag_configure("fu", underline=True)
        t.tag_configure("fs", overstrike=True)
        t.tag_raise("found")
        t.tag_raise("sel")
        for tag in self._colour_tags:
            t.tag_raise(tag)
        for widget in (t, self.topic):
            widget.tag_bind("link", "<Enter>", functools.partial(_cursor, widget, "hand2"))
            widget.tag_bind("link", "<Leave>", functools.partial(_cursor, widget, "arrow"))
        t.tag_bind("button", "<Enter>", lambda e: t.configure(cursor="hand2"))
        t.tag_bind("button", "<Leave>", lambda e: t.configure(cursor="arrow"))
        for tree in (self.sidebar, self.users):
            tree.tag_configure("mention", foreground=p["mention_fg"], font=self.bold)
            tree.tag_configure("unread", font=self.bold)
            tree.tag_configure("parted", foreground=p["muted"])
            tree.tag_configure("muted", foreground=p["muted"])
            tree.tag_configure("away", foreground=p["muted"], font=self.italic)
            tree.tag_configure("normal", font=self.font)
        self._layout()
        if self.browser is not None:
            self.browser.apply_theme()

    def _layout(self) -> None:
        """Tab stops for the columns: time | nick (right-aligned) | text, wrapped lines under the text."""
        stamp = self.small.measure("00:00") + 6
        nick = self.bold.measure("abcdefghijk")
        self._nick_width = nick
        right = stamp + nick
        text_at = right + self.font.measure("   ")
        self.text.configure(tabs=(right, "right", text_at, "left"))
        self._text_at = text_at
        self.text.tag_configure("line", lmargin1=0, lmargin2=text_at)
        self.text.tag_configure("cont", lmargin1=text_at, lmargin2=text_at)
        for n in self._hangs:
            self.text.tag_configure(f"hang{n}", lmargin1=0, lmargin2=text_at + self.mono.measure(" " * n))

    def set_font_size(self, size: int) -> None:
        for f in (self.font, self.bold, self.italic):
            f.configure(size=size)
        self.small.configure(size=max(7, size - 2))
        self.small_bold.configure(size=max(7, size - 2))
        self.mono.configure(size=max(7, size - 1))
        for (_bold, _italic, mono), f in self._fonts.items():
            f.configure(size=max(7, size - 1) if mono else size)
        ttk.Style(self.root).configure("Treeview", rowheight=int(self.font.metrics("linespace") * 1.6))
        self._layout()
        self._fit_topic()
        self._fit_input()
        self._follow()

    def set_sashes(self, positions: Sequence[int]) -> None:
        try:
            for i, pos in enumerate(positions[:2]):
                self.root.tk.call(str(self.panes), "sashpos", i, int(pos))
        except tk.TclError:
            pass

    def sashes(self) -> list[int]:
        try:
            count = len(self.root.tk.splitlist(self.root.tk.call(str(self.panes), "panes")))
            return [int(self.root.tk.call(str(self.panes), "sashpos", i)) for i in range(count - 1)]
        except tk.TclError:
            return []

    def geometry(self) -> str:
        return str(self.root.winfo_geometry())

    # -- drawing --------------------------------------------------------------------------
    def set_sidebar(self, items: Sequence[SidebarItem], active: str) -> None:
        tree = self.sidebar
        wanted = [it.key for it in items]
        for iid in tree.get_children():
            if iid not in wanted:
                tree.delete(iid)
        for index, it in enumerate(items):
            badge = f"@{it.mentions}" if it.mentions else (str(it.unread) if it.unread else "")
            tags = ("mention",) if it.mentions else ("unread",) if it.unread else \
                ("parted",) if it.kind == "channel" and not it.joined else ("muted",) if it.muted else ("normal",)
            label = self.safe(("" if it.kind != "query" else "\u2022 ") + it.label + (" \U0001F507" if it.muted
                                                                                     else ""))
            if tree.exists(it.key):
                tree.item(it.key, text=label, values=(badge,), tags=tags)
                tree.move(it.key, "", index)
            else:
                tree.insert("", index, iid=it.key, text=label, values=(badge,), tags=tags)
        if tree.exists(active) and tree.selection() != (active,):
            self._quiet_select = True
            tree.selection_set(active)
            tree.see(active)

    def show(self, key: str, lines: Sequence[Line], marker_at: int | None, own_nick: str,
             anchor: Line | None = None, top_note: str | None = None) -> None:
        """Draw a whole conversation (on switching, or after history arrived). With ``anchor``
        (older lines came in above it) the view keeps that line at the top instead of
        going to the bottom."""
        switched = key != self._shown_key
        self._shown_key = key
        t = self.text
        t.configure(state="normal")
        t.delete("1.0", "end")
        for tag in self._urls:
            t.tag_delete(tag)
        self._urls.clear()
        self._last = None
        self._starts.clear()
        self._drawn.clear()
        if top_note:
            t.insert("end", f"\u2500\u2500\u2500\u2500  {top_note}  \u2500\u2500\u2500\u2500\n", ("top",))
        for i, line in enumerate(lines):
            if marker_at is not None and i == marker_at:
                self._insert_marker()
            self._insert_line(line, own_nick)
        t.configure(state="disabled")
        if anchor is not None and not switched and anchor in self._drawn:
            self._stick = False
            t.yview(f"{self._starts[self._drawn.index(anchor)]}.0")
        elif switched or self._stick:
            self._stick = True
            self._below = 0
            t.see("end")
        self._show_below()
        if self.find_bar.winfo_ismapped():
            self._find_all()

    def append(self, line: Line, own_nick: str) -> None:
        t = self.text
        t.configure(state="normal")
        self._insert_line(line, own_nick)
        t.configure(state="disabled")
        if line.own:
            self._stick = True
            self._below = 0
        if self._stick:
            t.see("end")
        elif line.kind in ("message", "action", "notice"):
            self._below += 1
        self._show_below()

    def _insert_marker(self) -> None:
        self.text.insert("end", "\u2500\u2500\u2500\u2500  new messages  \u2500\u2500\u2500\u2500\n", ("marker",))

    def _font_for(self, bold: bool, italic: bool, mono: bool) -> tkfont.Font:
        key = (bold, italic, mono)
        if key not in self._fonts:
            size = int(self.mono.cget("size")) if mono else int(self.font.cget("size"))
            self._fonts[key] = tkfont.Font(self.root, family=self.mono_family if mono else self.family, size=size,
                                           weight="bold" if bold else "normal", slant="italic" if italic else "roman")
        return self._fonts[key]

    def _style_tags(self, style: Style) -> tuple[str, ...]:
        """Text tags for a run of mIRC-formatted text (made on first use)."""
        if style.plain:
            return ()
        tags: list[str] = []
        t = self.text
        if style.bold or style.italic or style.mono:
            name = "f" + ("b" if style.bold else "") + ("i" if style.italic else "") + ("m" if style.mono else "")
            if name not in self._colour_tags:
                t.tag_configure(name, font=self._font_for(style.bold, style.italic, style.mono))
                self._colour_tags.add(name)
            tags.append(name)
        if style.underline:
            tags.append("fu")
        if style.strike:
            tags.append("fs")
        fg, bg = (style.bg, style.fg) if style.reverse else (style.fg, style.bg)
        if style.reverse and fg is None and bg is None:
            p = PALETTES[self.theme]
            fg, bg = p["bg"], p["fg"]
        for kind, colour in (("fg", fg), ("bg", bg)):
            if colour is None:
                continue
            if kind == "fg" and not style.reverse and bg is None:
                colour = readable(colour, PALETTES[self.theme]["bg"], 3.0)
            name = f"{kind}{colour[1:]}"
            if name not in self._colour_tags:
                if kind == "fg":
                    t.tag_configure(name, foreground=colour)
                else:
                    t.tag_configure(name, background=colour)
                self._colour_tags.add(name)
            t.tag_raise(name)
            tags.append(name)
        return tuple(tags)

    def _fit_nick(self, nick: str) -> str:
        if self.bold.measure(nick) <= self._nick_width:
            return nick
        while nick and self.bold.measure(nick + "\u2026") > self._nick_width:
            nick = nick[:-1]
        return nick + "\u2026"

    def _insert_line(self, line: Line, own_nick: str) -> None:
        t = self.text
        b: Breaks = breaks(self._last, line)
        self._last = line
        if b.history_end:
            t.insert("end", "\u2500\u2500\u2500\u2500  earlier messages (history) above  \u2500\u2500\u2500\u2500\n",
                     ("histend",))
        if b.day:
            t.insert("end", f"\u2500\u2500\u2500\u2500  {b.day}  \u2500\u2500\u2500\u2500\n", ("day",))
        self._starts.append(int(t.index("end-1c").split(".")[0]))
        self._drawn.append(line)
        stamp = line.time.astimezone().strftime("%H:%M")
        band: tuple[str, ...] = ("mention",) if line.mention else ("own",) if line.own else ()
        base = ("line", *band)
        ncolour = "ownnick" if line.own else f"nick{nick_colour_index(line.nick, NICK_COLOURS)}"
        nick_tags: tuple[str, ...] = ("nick", "mentionnick" if line.mention else ncolour)
        chunks: list[tuple[str, tuple[str, ...]]] = [(stamp, ("ts", *base)), ("\t", base)]
        body: tuple[str, ...] = (*base, "history") if line.history else base
        text = line.text
        if line.kind == "message":
            if not b.grouped:
                chunks.append((self.safe(self._fit_nick(line.nick)), (*nick_tags, *base)))
        elif line.kind == "action":
            chunks.append(("*", (*nick_tags, *base)))
            chunks += [("\t", base), (self.safe(line.nick) + " ", (*nick_tags, "action", *base))]
            body = ("action", *body)
        elif line.kind == "notice":
            if line.nick:
                chunks.append((f"-{self.safe(self._fit_nick(line.nick))}-", ("notice", "nick", *base)))
            body = ("notice", *body)
        elif line.kind == "block":
            body = ("block", *body)
        else:
            body = (line.kind, *body)
            if line.kind == "event":
                chunks.append(("\u2022", ("event", *base)))
        if line.kind != "action":
            chunks.append(("\t", base))
        if line.quote:
            chunks.append((f"\u21aa {self.safe(line.quote)}  ", ("quote", *base)))
        styled_parts = line.styled.split("\n") if line.styled is not None else []
        for i, part in enumerate(text.split("\n")):
            hang: tuple[str, ...] = (self._hang(part),) if line.kind == "block" else ()
            if i:
                chunks.append(("\n", base))
                chunks.append(("\t\t", (*base, *hang) if hang else (*base, "cont")))
            elif hang:
                chunks = [(c, (*tags, *hang)) for c, tags in chunks]
            body_line = (*body, *hang)
            styled_runs = self._runs(part, styled_parts[i] if i < len(styled_parts) else None)
            for run, style_tags in styled_runs:
                for chunk, url in split_links(run):
                    if url is None:
                        chunks.append((self.safe(chunk), (*body_line, *style_tags)))
                    else:
                        tag = f"url{len(self._urls)}"
                        self._urls[tag] = url
                        t.tag_bind(tag, "<Button-1>", functools.partial(_open_url, url))
                        chunks.append((self.safe(chunk), (*body_line, *style_tags, "link", tag)))
        if line.action == "reconnect":
            chunks.append(("   ", base))
            chunks.append(("Reconnect now", (*base, "button", "act-reconnect")))
            t.tag_bind("act-reconnect", "<Button-1>", lambda e: self.h.on_reconnect())
        for emoji, who in line.reactions.items():
            chunks.append(("\u00a0\u00a0", base))  # glued to the last word: a chip never starts a line
            # No-break spaces: a reaction is never split over two display lines.
            chunks.append((f"\u00a0{self.safe(emoji)}\u00a0{len(who)}\u00a0", ("reaction", *base)))
        chunks.append(("\n", base))
        flat: list[str | tuple[str, ...]] = []
        for chunk, tags in chunks:
            if chunk:
                flat += [chunk, tags]
        t.insert("end", "", (), *flat)

    def _hang(self, row: str) -> str:
        """A tag that wraps a row of a block (the help table) under its second column."""
        found = re.match(r"\s*\S.*?\s{2,}(?=\S)", row)
        n = len(found.group(0)) if found else 0
        tag = f"hang{n}"
        if n not in self._hangs:
            self._hangs.add(n)
            self.text.tag_configure(tag, lmargin1=0, lmargin2=self._text_at + self.mono.measure(" " * n))
        return tag

    def _runs(self, part: str, styled: str | None) -> list[tuple[str, tuple[str, ...]]]:
        """One line of text in pieces with their formatting tags (``styled``: the same line
        with its mIRC codes, when it had any)."""
        if styled is None:
            return [(part, ())]
        return [(chunk, self._style_tags(style)) for chunk, style in parse_formatting(styled)]

    def line_at(self, index: str) -> Line | None:
        """The conversation line drawn at a text index (e.g. under the mouse)."""
        row = int(self.text.index(index).split(".")[0])
        i = bisect.bisect_right(self._starts, row) - 1
        return self._drawn[i] if 0 <= i < len(self._drawn) else None

    def set_topic(self, text: str) -> None:
        t = self.topic
        t.configure(state="normal")
        t.delete("1.0", "end")
        for tag in t.tag_names():
            if tag.startswith("url"):
                t.tag_delete(tag)
        for i, (chunk, url) in enumerate(split_links(self.safe(text))):
            if url is None:
                t.insert("end", chunk)
            else:
                tag = f"url{i}"
                t.insert("end", chunk, ("link", tag))
                t.tag_bind(tag, "<Button-1>", functools.partial(_open_url, url))
        t.configure(state="disabled")
        self._fit_topic()

    def topic_text(self) -> str:
        return self.topic.get("1.0", "end-1c")

    def _fit_topic(self) -> None:
        """The topic's height: its wrapped lines, at most three (the rest scrolls)."""
        t = self.topic
        lines = max(1, min(MAX_TOPIC_LINES, _count(t, "1.0", "end-1c", "displaylines") + 1))
        if int(t.cget("height")) != lines:
            t.configure(height=lines)

    def set_users(self, items: Sequence[UserItem], title: str, i_am_op: bool = False) -> None:
        tree = self.users
        self._i_am_op = i_am_op
        tree.delete(*tree.get_children())
        for it in items:
            label = f"{it.prefix}{self.safe(it.nick)}" + ("  (away)" if it.away else "") + \
                ("  (ignored)" if it.ignored else "")
            tree.insert("", "end", iid=f"u:{it.nick}", text=label,
                        tags=("away",) if it.away or it.ignored else ("normal",))
        self.users_title.configure(text=title)

    def show_users(self, visible: bool) -> None:
        """The People pane: only for channels (no empty list in private chats and the server tab)."""
        if visible == self._users_shown:
            return
        if visible:
            self.panes.add(self.users_frame, weight=0)
            self._users_shown = True
            self._idle(self._place_users)
        else:
            width = self.users_frame.winfo_width()
            if self.users_frame.winfo_ismapped() and width > 60:
                self.users_width = width
            self.panes.forget(self.users_frame)
            self._users_shown = False

    users_width = 190  # the People pane's width, kept while it is hidden

    def _place_users(self) -> None:
        self.panes.update_idletasks()  # let the paned window lay the new pane out first
        total = self.panes.winfo_width()
        sashes = self.sashes()
        if total > 1 and len(sashes) == 2:
            self.set_sashes([sashes[0], max(sashes[0] + 200, total - self.users_width)])

    def _panes_configured(self) -> None:
        """The first real layout: now the remembered pane widths can be applied."""
        if self._pending_sizes and self.panes.winfo_width() > 1:
            sizes, self._pending_sizes = self._pending_sizes, []
            self._idle(lambda: self.set_pane_sizes(sizes))

    def pane_sizes(self) -> list[int]:
        """[the conversation list's width, the People pane's width], to be remembered."""
        sashes = self.sashes()
        if not sashes:
            return []
        if self._users_shown and len(sashes) == 2 and self.users_frame.winfo_ismapped():
            self.users_width = self.users_frame.winfo_width()
        return [sashes[0], self.users_width]

    def set_pane_sizes(self, sizes: Sequence[int]) -> None:
        if len(sizes) != 2 or not 60 <= sizes[0] <= 600 or not 60 <= sizes[1] <= 600:
            return
        self.users_width = int(sizes[1])
        sashes = self.sashes()
        if sashes:
            self.set_sashes([int(sizes[0]), *sashes[1:]])
        self._place_users()

    @property
    def users_visible(self) -> bool:
        return self._users_shown

    def set_typing(self, text: str) -> None:
        self.typing.configure(text=self.safe(text) or " ")

    def set_status(self, text: str, action: str | None = None) -> None:
        """The status bar; with ``action`` ("reconnect") a button to do it now."""
        self.status.configure(text=self.safe(text))
        if action == "reconnect":
            if not self.status_button.winfo_ismapped():
                self.status_button.pack(side="left", padx=(10, 0))
        elif self.status_button.winfo_ismapped():
            self.status_button.pack_forget()

    def set_lag(self, text: str) -> None:
        self.lag.configure(text=text)

    def set_title(self, text: str) -> None:
        self.root.title(self.safe(text))

    def set_reply(self, text: str | None) -> None:
        if text is None:
            self.reply_bar.grid_remove()
            return
        self.reply_label.configure(text=self.safe(f"\u21aa Replying to {text}"))
        self.reply_bar.grid(row=4, column=0, sticky="ew", pady=(2, 0))

    # -- scrolling -----------------------------------------------------------------------------
    def _scrollbar(self, *args: str) -> None:
        self.text.yview(*args)
        self._user_scrolled()

    def _wheel(self, step: int) -> str:
        self.text.yview_scroll(step, "units")
        self._user_scrolled()
        return "break"

    def _page(self, step: int) -> None:
        self.text.yview_scroll(step, "pages")
        self._user_scrolled()

    def scroll_to_top(self) -> None:
        """As if the user scrolled all the way up (tests and Ctrl+Home)."""
        self.text.yview_moveto(0.0)
        self._user_scrolled()

    def _user_scrolled(self) -> None:
        first, last = self.text.yview()
        self._stick = last >= 0.999
        if self._stick:
            self._below = 0
        self._show_below()
        if first <= 0.0:
            self.h.on_scrolled_top()

    def _follow(self) -> None:
        """After a resize or zoom: still at the bottom if the reader was."""
        if self._stick:
            self.text.see("end")
            self._idle(lambda: self.text.see("end") if self._stick else None)

    def at_bottom(self) -> bool:
        return self._stick

    def jump_to_latest(self) -> None:
        self._stick = True
        self._below = 0
        self.text.see("end")
        self._show_below()

    def _show_below(self) -> None:
        if self._below and not self._stick:
            n = self._below
            self.below.configure(text=f"{n} new message{'s' if n != 1 else ''} below \u2193")
            self.below.place(in_=self.body, relx=1.0, rely=1.0, x=-24, y=-10, anchor="se")
        else:
            self.below.place_forget()

    @property
    def new_below(self) -> int:
        return self._below if not self._stick else 0

    # -- find (Ctrl+F) -----------------------------------------------------------------------
    def open_find(self) -> None:
        self.find_bar.grid(row=2, column=0, sticky="ew", pady=(4, 0))
        self.find_entry.focus_set()
        self.find_entry.select_range(0, "end")
        self._find_all()

    def close_find(self) -> None:
        self.find_bar.grid_remove()
        self.text.tag_remove("found", "1.0", "end")
        self._find_hits = []
        self.entry.focus_set()

    def _find_all(self) -> None:
        t = self.text
        t.tag_remove("found", "1.0", "end")
        needle = self.find_var.get()
        self._find_hits = []
        if needle:
            start = "1.0"
            length = tk.IntVar()
            while True:
                pos = t.search(needle, start, stopindex="end", nocase=True, count=length)
                if not pos:
                    break
                end = f"{pos}+{max(1, length.get())}c"
                t.tag_add("found", pos, end)
                self._find_hits.append(str(pos))
                start = end
        self._find_at = len(self._find_hits)
        self.find_count.configure(text=f"{len(self._find_hits)} found" if needle else "")

    def find_next(self, backwards: bool = False) -> int:
        """Show the next (or previous) match, from the newest; its number, or -1 when none."""
        if not self._find_hits:
            return -1
        step = -1 if not backwards else 1  # "next" goes up, towards older lines, from the bottom
        self._find_at = (self._find_at + step) % len(self._find_hits)
        pos = self._find_hits[self._find_at]
        self.text.see(pos)
        self._stick = self.text.yview()[1] >= 0.999
        self.find_count.configure(text=f"{self._find_at + 1} of {len(self._find_hits)}")
        return self._find_at

    @property
    def find_hits(self) -> int:
        return len(self._find_hits)

    # -- input ------------------------------------------------------------------------------
    def get_input(self) -> str:
        return self.entry.get("1.0", "end-1c")

    def set_input(self, text: str, cursor: int | None = None) -> None:
        self.entry.delete("1.0", "end")
        self.entry.insert("1.0", text)
        self.entry.mark_set("insert", f"1.0+{len(text) if cursor is None else cursor}c")
        self._input_changed()

    def input_cursor(self) -> int:
        return _count(self.entry, "1.0", "insert", "chars")

    def focus_input(self) -> None:
        self.entry.focus_set()

    def set_placeholder(self, text: str) -> None:
        self._placeholder_text = text
        self.placeholder.configure(text=self.safe(text))
        self._input_changed()

    def _input_changed(self) -> None:
        self.entry.edit_modified(False)
        if self.get_input() or not self._placeholder_text:
            self.placeholder.place_forget()
        else:
            self.placeholder.place(in_=self.entry, x=10, rely=0.5, anchor="w")
        self._fit_input()

    def _fit_input(self) -> None:
        e = self.entry
        lines = max(1, min(MAX_INPUT_LINES, _count(e, "1.0", "end-1c", "displaylines") + 1))
        if int(e.cget("height")) != lines:
            e.configure(height=lines)

    def _newline(self) -> None:
        self.entry.insert("insert", "\n")
        self._input_changed()

    def _input_arrow(self, up: bool) -> str | None:
        """Up/Down recall what was typed, unless moving inside a text of several lines."""
        e = self.entry
        if "\n" in self.get_input():
            row = int(e.index("insert").split(".")[0])
            last = int(e.index("end-1c").split(".")[0])
            if (up and row > 1) or (not up and row < last):
                return None
        self.h.on_history(up)
        return "break"

    def _input_key(self, event: tk.Event[Any]) -> None:
        self._input_changed()
        if event.keysym not in _NOT_TYPING:
            self.h.on_typing()

    def is_focused(self) -> bool:
        try:
            return self.root.focus_displayof() is not None
        except (KeyError, tk.TclError):
            return False

    def bell(self) -> None:
        self.root.bell()

    # -- the channel browser ---------------------------------------------------------------
    def open_channel_browser(self) -> ChannelBrowser:
        if self.browser is None or not self.browser.winfo_exists():
            self.browser = ChannelBrowser(self)
        self.browser.deiconify()
        self.browser.lift()
        return self.browser

    def set_channel_list(self, items: Sequence[ChannelInfo], done: bool) -> None:
        if self.browser is not None and self.browser.winfo_exists():
            self.browser.set_items(items, done)

    # -- dialogs ---------------------------------------------------------------------------
    def ask_nick(self, message: str, suggestion: str) -> str | None:
        answer: str | None = AskStringDialog(self.root, "Nickname in use", message, suggestion).result
        return answer

    def ask_string(self, title: str, message: str, initial: str = "") -> str | None:
        answer: str | None = AskStringDialog(self.root, title, message, initial).result
        return answer

    def confirm(self, title: str, message: str) -> bool:
        return MessageDialog(self.root, title, message, [("Yes", True), ("No", False)], default=True).result is True

    def show_error(self, title: str, message: str) -> None:
        MessageDialog(self.root, title, message, [("OK", True)], icon="error")

    def ask_connect(self, settings: Settings, note: str = "") -> Settings | None:
        answer: Settings | None = ConnectDialog(self.root, settings, note).result
        return answer

    def ask_preferences(self, settings: Settings) -> Settings | None:
        answer: Settings | None = PreferencesDialog(self.root, settings).result
        return answer

    def ask_trust_certificate(self, host: str, port: int, fingerprint: str, subject: str, issuer: str,
                              not_after: str, reason: str) -> bool:
        """First use of a server no authority vouches for: True to trust (pin) it."""
        return bool(TrustCertificateDialog(self.root, host, port, fingerprint, subject, issuer, not_after,
                                          reason).result)

    def warn_certificate_changed(self, host: str, port: int, old: str, new: str, subject: str,
                                 issuer: str) -> bool:
        """A pinned server presented another certificate: True if the user asks to forget the old one."""
        return bool(CertificateChangedDialog(self.root, host, port, old, new, subject, issuer).result)

    def confirm_forget_certificate(self, host: str, port: int, old: str) -> bool:
        """The second confirmation before forgetting a pin; "No" is the default."""
        return MessageDialog(
            self.root, "Really forget the trusted certificate?",
            f"Forget the certificate you trusted for {host} port {port}?\n\nSHA-256 {old}\n\n"
            "Do this only if the server's owner told you the certificate changed. You will then be shown the "
            "new certificate's fingerprint: compare it with what the owner gave you before trusting it.",
            [("Yes", True), ("No", False)], default=False, icon="warning").result is True

    # -- tk plumbing ---------------------------------------------------------------------------
    def after(self, ms: int, func: Callable[[], object]) -> str:
        return self.root.after(ms, func)

    def _idle(self, func: Callable[[], object]) -> None:
        """``after_idle`` that does nothing once the window is gone."""
        def run() -> None:
            if self._alive:
                func()

        self.root.after_idle(run)

    _alive = True

    def mainloop(self) -> None:
        self.root.mainloop()

    def destroy(self) -> None:
        self._alive = False
        try:  # pending after() calls would run in a destroyed window (when another one's loop runs)
            for pending in self.root.tk.splitlist(self.root.tk.call("after", "info")):
                self.root.after_cancel(pending)
        except tk.TclError:
            pass
        try:
            self.root.destroy()
        except tk.TclError:
            pass

    def _call(self, func: Callable[..., object], *args: object) -> str:
        func(*args)
        return "break"

    _quiet_select = False

    def _sidebar_selected(self, event: tk.Event[Any]) -> None:
        if self._quiet_select:
            self._quiet_select = False
            return
        sel = self.sidebar.selection()
        if sel:
            self.h.on_select(sel[0])
            self.entry.focus_set()

    def _step_sidebar(self, step: int) -> str:
        items = list(self.sidebar.get_children())
        sel = self.sidebar.selection()
        if items:
            i = items.index(sel[0]) if sel and sel[0] in items else 0
            self.h.on_select(items[(i + step) % len(items)])
        return "break"

    def _sidebar_menu(self, event: tk.Event[Any]) -> None:
        iid = self.sidebar.identify_row(event.y)
        if not iid:
            return
        menu = self._popup()
        muted = "muted" in self.sidebar.item(iid, "tags") or "\U0001F507" in str(self.sidebar.item(iid, "text"))
        menu.add_command(label="Unmute" if muted else "Mute", command=lambda: self.h.on_mute(iid, not muted))
        menu.add_command(label="Close", command=lambda: self.h.on_close_conversation(iid))
        menu.tk_popup(event.x_root, event.y_root)

    def _user_activated(self, event: tk.Event[Any]) -> None:
        sel = self.users.selection()
        if sel and sel[0].startswith("u:"):
            self.h.on_open_query(sel[0][2:])

    def user_menu(self, nick: str) -> tk.Menu:
        """The People list's context menu for ``nick`` (query, whois, op actions, ignore)."""
        menu = self._popup()
        act = self.h.on_user_action
        menu.add_command(label="Private message", command=lambda: act(nick, "query"))
        menu.add_command(label="Who is this?", command=lambda: act(nick, "whois"))
        if self._i_am_op:
            menu.add_separator()
            for label, name in (("Give op (@)", "op"), ("Take op", "deop"), ("Give voice (+)", "voice"),
                                ("Take voice", "devoice"), ("Kick", "kick"), ("Ban and kick", "ban")):
                menu.add_command(label=label, command=functools.partial(act, nick, name))
        menu.add_separator()
        ignored = "(ignored)" in str(self.users.item(f"u:{nick}", "text")) if self.users.exists(f"u:{nick}") \
            else False
        menu.add_command(label="Stop ignoring" if ignored else "Ignore",
                         command=lambda: act(nick, "unignore" if ignored else "ignore"))
        return menu

    def _user_menu(self, event: tk.Event[Any]) -> None:
        iid = self.users.identify_row(event.y)
        if not iid.startswith("u:"):
            return
        self.users.selection_set(iid)
        self.user_menu(iid[2:]).tk_popup(event.x_root, event.y_root)

    def line_menu(self, line: Line) -> tk.Menu:
        """A message's context menu: reply, react, copy."""
        menu = self._popup()
        if line.msgid and line.kind in ("message", "action"):
            menu.add_command(label="Reply", command=lambda: self.h.on_reply(line))
            react = tk.Menu(menu, tearoff=False)
            self._colour_menu(react)
            for emoji in REACTIONS:
                react.add_command(label=self.safe(emoji), command=functools.partial(self.h.on_react, line, emoji))
            menu.add_cascade(label="React", menu=react)
            menu.add_separator()
        menu.add_command(label="Copy text", command=lambda: self._copy(line.text))
        return menu

    def _line_menu(self, event: tk.Event[Any]) -> None:
        line = self.line_at(f"@{event.x},{event.y}")
        if line is not None and line.kind in ("message", "action", "notice", "info", "block", "event", "error"):
            self.line_menu(line).tk_popup(event.x_root, event.y_root)

    def _copy(self, text: str) -> None:
        self.root.clipboard_clear()
        self.root.clipboard_append(text)

    def _text_key(self, event: tk.Event[Any]) -> str | None:
        state = event.state if isinstance(event.state, int) else 0
        return None if state & 4 else self._focus_input(event.char)  # Ctrl+C still copies

    def _focus_input(self, char: str) -> str | None:
        if char and char.isprintable():
            self.entry.focus_set()
            self.entry.insert("insert", char)
            self._input_changed()
            return "break"
        return None


# -- dialogs: ttk widgets in a Toplevel coloured like the theme -----------------------------------

class ThemedDialog(tk.Toplevel):
    """A modal dialog made of ttk widgets (Tk's classic ``simpledialog`` ignores the theme).

    The same protocol as ``simpledialog.Dialog``: subclasses give ``body`` (returning the
    widget to focus) and ``buttonbox``; ``ok`` runs ``validate`` then ``apply``; ``cancel``
    closes. ``result`` holds the answer (None when cancelled).
    """

    result: Any

    def __init__(self, parent: tk.Misc, title: str) -> None:
        super().__init__(parent)
        self.withdraw()
        self.title(title)
        top = parent.winfo_toplevel()
        if top.winfo_viewable():
            self.transient(top)
        self.parent = parent
        self.result = None
        bg = ttk.Style(self).lookup("TFrame", "background")
        if bg:
            self.configure(background=bg)
        outer = ttk.Frame(self)
        outer.pack(fill="both", expand=True)
        self.outer = outer
        body = ttk.Frame(outer)
        focus = self.body(body)
        body.pack(fill="both", expand=True, padx=4, pady=4)
        self.initial_focus: tk.Misc = focus if focus is not None else self
        self.buttonbox()
        self.protocol("WM_DELETE_WINDOW", self.cancel)
        self.bind("<Escape>", self.cancel)
        self.update_idletasks()
        x = top.winfo_rootx() + max(0, (top.winfo_width() - self.winfo_reqwidth()) // 2)
        y = top.winfo_rooty() + max(0, (top.winfo_height() - self.winfo_reqheight()) // 3)
        self.geometry(f"+{x}+{y}")
        self.deiconify()
        self.initial_focus.focus_set()
        self.wait_visibility()
        try:
            self.grab_set()
        except tk.TclError:
            pass
        self.wait_window(self)

    def body(self, master: ttk.Frame) -> tk.Misc | None:
        return None

    def buttonbox(self) -> None:
        box = ttk.Frame(self.outer, padding=(12, 0, 12, 12))
        ttk.Button(box, text="OK", command=self.ok, default="active").pack(side="right", padx=(6, 0))
        ttk.Button(box, text="Cancel", command=self.cancel).pack(side="right")
        self.bind("<Return>", self.ok)
        box.pack(fill="x")

    def ok(self, event: object = None) -> None:
        if not self.validate():
            self.initial_focus.focus_set()
            return
        self.withdraw()
        self.update_idletasks()
        try:
            self.apply()
        finally:
            self.cancel()

    def cancel(self, event: object = None) -> None:
        try:
            self.parent.focus_set()
        except tk.TclError:
            pass
        self.destroy()

    def validate(self) -> bool:
        return True

    def apply(self) -> None:
        pass


class MessageDialog(ThemedDialog):
    """A message with buttons (Tk's ``messagebox`` is not themed on X11)."""

    def __init__(self, parent: tk.Misc, title: str, message: str, buttons: Sequence[tuple[str, object]],
                 default: object = None, icon: str = "info") -> None:
        self.message, self.buttons, self.default, self.icon = message, list(buttons), default, icon
        self.button_widgets: dict[str, ttk.Button] = {}
        super().__init__(parent, title)

    def body(self, master: ttk.Frame) -> tk.Misc | None:
        frame = ttk.Frame(master, padding=(16, 14, 16, 8))
        frame.pack(fill="both", expand=True)
        glyph = {"error": "\u26d4", "warning": "\u26a0", "info": "\u2139"}.get(self.icon, "\u2139")
        ttk.Label(frame, text=glyph, font=tkfont.Font(self, size=22)).pack(side="left", anchor="n", padx=(0, 12))
        ttk.Label(frame, text=self.message, wraplength=440, justify="left").pack(side="left", fill="x")
        return None

    def buttonbox(self) -> None:
        box = ttk.Frame(self.outer, padding=(12, 0, 12, 12))
        for label, value in reversed(self.buttons):
            is_default = value == self.default or len(self.buttons) == 1
            button = ttk.Button(box, text=label, command=functools.partial(self._answer, value),
                                default="active" if is_default else "normal")
            button.pack(side="right", padx=(6, 0))
            self.button_widgets[label] = button
            if is_default:
                self.initial_focus = button
                self.bind("<Return>", functools.partial(_ignore_event, self._answer, value))
        box.pack(fill="x")

    def _answer(self, value: object) -> None:
        self.result = value
        self.cancel()


class AskStringDialog(ThemedDialog):
    """One line of text (the nickname when it is taken, a highlight word...)."""

    def __init__(self, parent: tk.Misc, title: str, message: str, initial: str = "") -> None:
        self.message, self.initial = message, initial
        super().__init__(parent, title)

    def body(self, master: ttk.Frame) -> tk.Misc | None:
        frame = ttk.Frame(master, padding=(16, 14, 16, 8))
        frame.pack(fill="both", expand=True)
        ttk.Label(frame, text=self.message, wraplength=380, justify="left").pack(anchor="w", pady=(0, 8))
        self.var = tk.StringVar(value=self.initial)
        self.field = ttk.Entry(frame, textvariable=self.var, width=36)
        self.field.pack(fill="x")
        self.field.select_range(0, "end")
        return self.field

    def apply(self) -> None:
        self.result = self.var.get()


class ChannelBrowser(tk.Toplevel):
    """LIST in a window: a filter box, channels with their user counts and topics; double-click joins."""

    def __init__(self, view: MainView) -> None:
        super().__init__(view.root)
        self.view = view
        self.title("Channels")
        self.geometry("640x420")
        self.items: list[ChannelInfo] = []
        frame = ttk.Frame(self, padding=10)
        frame.pack(fill="both", expand=True)
        frame.rowconfigure(1, weight=1)
        frame.columnconfigure(0, weight=1)
        top = ttk.Frame(frame)
        top.grid(row=0, column=0, columnspan=2, sticky="ew", pady=(0, 8))
        ttk.Label(top, text="Filter:").pack(side="left")
        self.filter = tk.StringVar()
        self.filter_entry = ttk.Entry(top, textvariable=self.filter, width=30)
        self.filter_entry.pack(side="left", padx=(6, 6), fill="x", expand=True)
        ttk.Button(top, text="Refresh", command=view.h.on_list_refresh).pack(side="right")
        self.filter.trace_add("write", lambda *a: self._fill())
        self.tree = ttk.Treeview(frame, columns=("users", "topic"), show="headings", selectmode="browse", height=1)
        self.tree.heading("users", text="People")
        self.tree.heading("topic", text="Topic")
        self.tree.configure(displaycolumns=("users", "topic"), show=("tree", "headings"))
        self.tree.heading("#0", text="Channel", anchor="w")
        self.tree.column("#0", width=150, stretch=False)
        self.tree.column("users", width=70, anchor="e", stretch=False)
        self.tree.column("topic", width=380, stretch=True)
        scroll = ttk.Scrollbar(frame, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.grid(row=1, column=0, sticky="nsew")
        scroll.grid(row=1, column=1, sticky="ns")
        bottom = ttk.Frame(frame)
        bottom.grid(row=2, column=0, columnspan=2, sticky="ew", pady=(8, 0))
        self.count = ttk.Label(bottom, text="Asking the server\u2026")
        self.count.pack(side="left")
        ttk.Button(bottom, text="Join", command=self.join_selected).pack(side="right")
        self.tree.bind("<Double-1>", lambda e: self.join_selected())
        self.tree.bind("<Return>", lambda e: self.join_selected())
        self.bind("<Escape>", lambda e: self.withdraw())
        self.protocol("WM_DELETE_WINDOW", self.withdraw)
        self.apply_theme()
        self.filter_entry.focus_set()

    def apply_theme(self) -> None:
        bg = ttk.Style(self).lookup("TFrame", "background")
        if bg:
            self.configure(background=bg)

    done = False

    def set_items(self, items: Sequence[ChannelInfo], done: bool) -> None:
        self.items = list(items)
        self.done = done
        self._fill()

    def _fill(self) -> None:
        tree = self.tree
        tree.delete(*tree.get_children())
        for it in filter_channels(self.items, self.filter.get()):
            tree.insert("", "end", iid=it.name, text=self.view.safe(it.name),
                        values=(it.users, self.view.safe(it.topic)))
        shown = len(tree.get_children())
        total = len(self.items)
        text = f"{shown} of {total} channels" if self.filter.get().strip() else f"{total} channels"
        if not self.done:
            text = "Asking the server\u2026" if not total else text + "\u2026"
        self.count.configure(text=text)

    def shown(self) -> list[str]:
        return list(self.tree.get_children())

    def join_selected(self) -> None:
        sel = self.tree.selection() or self.tree.focus()
        name = sel[0] if isinstance(sel, tuple) and sel else sel if isinstance(sel, str) else ""
        if name:
            self.view.h.on_join(name)


class ConnectDialog(ThemedDialog):
    """Server, port, nickname, password, TLS: the first thing a user sees."""

    def __init__(self, parent: tk.Misc, settings: Settings, note: str = "") -> None:
        self.settings = settings
        self.note = note
        super().__init__(parent, "Connect to a chat server")

    def body(self, master: ttk.Frame) -> tk.Misc | None:
        s = self.settings
        frame = ttk.Frame(master, padding=12)
        frame.pack(fill="both", expand=True)
        muted = PALETTES["light"]["muted"]
        if self.note:
            ttk.Label(frame, text=self.note, wraplength=380, foreground="#c0392b").grid(
                row=0, column=0, columnspan=2, sticky="w", pady=(0, 8))
        self.vars = {
            "host": tk.StringVar(value=s.host), "port": tk.StringVar(value=str(s.port)),
            "nick": tk.StringVar(value=s.nick), "password": tk.StringVar(value=s.password),
            "channels": tk.StringVar(value=", ".join(s.channels)),
        }
        self.tls = tk.BooleanVar(value=s.tls)
        self.verify = tk.BooleanVar(value=s.tls_verify)
        self.remember = tk.BooleanVar(value=s.remember_password)
        rows = [("Server", "host", "The address of the chat server, e.g. irc.example.org"),
                ("Port", "port", "6667 usually; 6697 with TLS"),
                ("Nickname", "nick", "The name others see"),
                ("Server password", "password", "Leave empty unless the server has one"),
                ("Channels to join", "channels", "Separated by commas, e.g. #lobby, #help")]
        first: tk.Misc | None = None
        for i, (label, key, hint) in enumerate(rows, start=1):
            ttk.Label(frame, text=label).grid(row=2 * i - 1, column=0, sticky="w", padx=(0, 10), pady=(4, 0))
            entry = ttk.Entry(frame, textvariable=self.vars[key], width=34, show="\u2022" if key == "password" else "")
            entry.grid(row=2 * i - 1, column=1, sticky="ew", pady=(4, 0))
            ttk.Label(frame, text=hint, foreground=muted, font=("TkDefaultFont", 9)).grid(row=2 * i, column=1,
                                                                                        sticky="w")
            if first is None or (key == "nick" and not s.nick):
                first = entry
        r = 2 * len(rows) + 1
        ttk.Checkbutton(frame, text="Remember password", variable=self.remember).grid(row=r, column=1, sticky="w")
        ttk.Checkbutton(frame, text="Secure connection (TLS)", variable=self.tls, command=self._tls_toggled).grid(
            row=r + 1, column=1, sticky="w", pady=(6, 0))
        self.verify_box = ttk.Checkbutton(frame, text="Verify the server's certificate", variable=self.verify)
        self.verify_box.grid(row=r + 2, column=1, sticky="w")
        self._verify_state()
        frame.columnconfigure(1, weight=1)
        return first

    def buttonbox(self) -> None:
        box = ttk.Frame(self.outer, padding=(12, 0, 12, 12))
        ttk.Button(box, text="Connect", command=self.ok, default="active",
                   style="Accent.TButton" if sv_ttk is not None else "TButton").pack(side="right", padx=(6, 0))
        ttk.Button(box, text="Cancel", command=self.cancel).pack(side="right")
        self.bind("<Return>", self.ok)
        box.pack(fill="x")

    def _verify_state(self) -> None:
        """"Verify the certificate" means something only with TLS."""
        self.verify_box.state(["!disabled"] if self.tls.get() else ["disabled"])

    def _tls_toggled(self) -> None:
        port = self.vars["port"].get().strip()
        if self.tls.get() and port == "6667":
            self.vars["port"].set("6697")
        elif not self.tls.get() and port == "6697":
            self.vars["port"].set("6667")
        self._verify_state()

    def validate(self) -> bool:
        host = self.vars["host"].get().strip()
        nick = self.vars["nick"].get().strip()
        try:
            port = int(self.vars["port"].get().strip())
        except ValueError:
            port = 0
        problem = None
        if not host:
            problem = "Please enter the server's address."
        elif not 0 < port < 65536:
            problem = "The port is a number between 1 and 65535 (usually 6667, or 6697 with TLS)."
        elif not is_valid_nick(nick):
            problem = ("A nickname starts with a letter and holds only letters, digits and - _ [ ] { } \\ ` ^ |"
                       " (no spaces).")
        if problem:
            MessageDialog(self, "Check the details", problem, [("OK", True)], icon="warning")
            return False
        channels = [c.strip() for c in self.vars["channels"].get().replace(" ", ",").split(",") if c.strip()]
        self.result = replace(
            self.settings, host=host, port=port, nick=nick, password=self.vars["password"].get(),
            remember_password=self.remember.get(), tls=self.tls.get(), tls_verify=self.verify.get(),
            channels=[c if c[0] in "#&" else "#" + c for c in channels],
        )
        return True


class PreferencesDialog(ThemedDialog):
    """Highlight words and notifications."""

    def __init__(self, parent: tk.Misc, settings: Settings) -> None:
        self.settings = settings
        super().__init__(parent, "Preferences")

    def body(self, master: ttk.Frame) -> tk.Misc | None:
        frame = ttk.Frame(master, padding=12)
        frame.pack(fill="both", expand=True)
        ttk.Label(frame, text="Highlight words (alert like your nickname), separated by commas:").pack(anchor="w")
        self.words = tk.StringVar(value=", ".join(self.settings.highlights))
        entry = ttk.Entry(frame, textvariable=self.words, width=44)
        entry.pack(fill="x", pady=(4, 10))
        self.notify = tk.BooleanVar(value=self.settings.notifications)
        ttk.Checkbutton(frame, text="Desktop notifications for mentions and private messages",
                        variable=self.notify).pack(anchor="w")
        ttk.Label(frame, text="Mute a conversation from its right-click menu in the list on the left.",
                  font=("TkDefaultFont", 9)).pack(anchor="w", pady=(10, 0))
        return entry

    def apply(self) -> None:
        words = [w.strip() for w in self.words.get().split(",") if w.strip()]
        self.result = replace(self.settings, highlights=words, notifications=self.notify.get())


def _grouped(fingerprint: str) -> str:
    """A SHA-256 fingerprint on two lines of 16 bytes, easier to compare by eye."""
    parts = fingerprint.split(":")
    return "\n".join(":".join(parts[i:i + 16]) for i in range(0, len(parts), 16))


class _CertificateDialog(ThemedDialog):
    """Shared layout: wrapped paragraphs and fingerprints in a selectable monospace box."""

    result: bool | None  # None until a button decides

    def _para(self, parent: tk.Misc, text: str, font: tkfont.Font | None = None) -> ttk.Label:
        label = ttk.Label(parent, text=text, wraplength=520, justify="left")
        if font is not None:
            label.configure(font=font)
        label.pack(anchor="w", fill="x", pady=(0, 8))
        return label

    def _fingerprint(self, parent: tk.Misc, fingerprint: str) -> tk.Text:
        text = tk.Text(parent, height=2, width=48, wrap="none", relief="solid", borderwidth=1,
                       font=tkfont.nametofont("TkFixedFont"), padx=6, pady=4)
        text.insert("1.0", _grouped(fingerprint))
        text.configure(state="disabled")  # still selectable and copyable
        text.pack(anchor="w", pady=(0, 10))
        return text

    def buttonbox(self) -> None:
        box = ttk.Frame(self.outer, padding=(12, 0, 12, 12))
        self._buttons(box)
        box.pack(fill="x")

    def _buttons(self, box: ttk.Frame) -> None:
        raise NotImplementedError


class TrustCertificateDialog(_CertificateDialog):
    """Trust on first use: the fingerprint, the advice, "Trust this server" or "Cancel"."""

    def __init__(self, parent: tk.Misc, host: str, port: int, fingerprint: str, subject: str, issuer: str,
                 not_after: str, reason: str) -> None:
        self.host, self.port, self.fingerprint = host, port, fingerprint
        self.subject, self.issuer, self.not_after, self.reason = subject, issuer, not_after, reason
        super().__init__(parent, "Unverified server certificate")

    def body(self, master: ttk.Frame) -> tk.Misc | None:
        frame = ttk.Frame(master, padding=12)
        frame.pack(fill="both", expand=True)
        self._para(frame, "This server's identity can't be verified by a certificate authority.",
                   font=tkfont.Font(self, weight="bold", size=12))
        self._para(frame, f"{self.host} port {self.port} presented a certificate that no certificate authority "
                          f"vouches for ({self.reason}). A server whose owner made its certificate "
                          "(self-signed) looks like this; so would someone pretending to be the server.")
        details = [f"Issued to: {self.subject or '(unknown)'}", f"Issued by: {self.issuer or '(unknown)'}"]
        if self.not_after:
            details.append(f"Valid until: {self.not_after}")
        self._para(frame, "\n".join(details))
        ttk.Label(frame, text="Fingerprint SHA-256:").pack(anchor="w")
        self.fingerprint_text = self._fingerprint(frame, self.fingerprint)
        self._para(frame, "Compare it with the fingerprint the server's owner gave you. "
                          "Trust this server from now on? You will be warned if its certificate ever changes.")
        return frame

    def _buttons(self, box: ttk.Frame) -> None:
        self.trust_button = ttk.Button(box, text="Trust this server", command=self._trust)
        self.trust_button.pack(side="right", padx=(6, 0))
        self.cancel_button = ttk.Button(box, text="Cancel", command=self.cancel, default="active")
        self.cancel_button.pack(side="right")
        self.bind("<Return>", self.cancel)  # Enter does not trust by accident
        self.initial_focus = self.cancel_button

    def _trust(self) -> None:
        self.result = True
        self.ok()


class CertificateChangedDialog(_CertificateDialog):
    """A loud warning: the pinned certificate and the presented one, "Disconnect" by default."""

    def __init__(self, parent: tk.Misc, host: str, port: int, old: str, new: str, subject: str,
                 issuer: str) -> None:
        self.host, self.port, self.old, self.new, self.subject, self.issuer = host, port, old, new, subject, issuer
        super().__init__(parent, "WARNING: the server's certificate has changed")

    def body(self, master: ttk.Frame) -> tk.Misc | None:
        frame = ttk.Frame(master, padding=12)
        frame.pack(fill="both", expand=True)
        header = tk.Label(frame, text="\u26a0  WARNING: THE SERVER'S CERTIFICATE HAS CHANGED",
                          foreground="#ffffff", background="#c0392b", padx=10, pady=8, anchor="w",
                          font=tkfont.Font(self, weight="bold", size=13))
        header.pack(fill="x", pady=(0, 10))
        self._para(frame, f"{self.host} port {self.port} presented a different certificate from the one you "
                          "trusted. Someone may be intercepting your connection (a man-in-the-middle attack), "
                          "or the server's owner replaced the certificate. You have not been connected.")
        ttk.Label(frame, text="Trusted before (SHA-256):").pack(anchor="w")
        self.old_text = self._fingerprint(frame, self.old)
        ttk.Label(frame, text="Presented now (SHA-256):").pack(anchor="w")
        self.new_text = self._fingerprint(frame, self.new)
        if self.subject or self.issuer:
            self._para(frame, f"New certificate issued to: {self.subject or '(unknown)'}; "
                              f"by: {self.issuer or '(unknown)'}")
        self._para(frame, "Do not continue unless the server's owner confirms that they changed the certificate "
                          "and the new fingerprint matches the one they give you.",
                   font=tkfont.Font(self, weight="bold"))
        return frame

    def _buttons(self, box: ttk.Frame) -> None:
        self.disconnect_button = ttk.Button(box, text="Stay disconnected", command=self.cancel, default="active")
        self.disconnect_button.pack(side="right", padx=(6, 0))
        self.forget_button = ttk.Button(box, text="Forget the old certificate\u2026", command=self._forget)
        self.forget_button.pack(side="left")
        self.bind("<Return>", self.cancel)
        self.initial_focus = self.disconnect_button

    def _forget(self) -> None:
        self.result = True
        self.ok()
