"""The window: it draws what the controller hands it and reports what the user does.

The only module of the client that imports tkinter (habit 12; IDLE's
``calltip.py``/``calltip_w.py`` split). It holds no chat state: the controller
calls ``show``/``append``/``set_*`` with data from the model, and the view calls
the controller's ``on_*`` methods for clicks and keys.

Text is inserted as (chunk, tags) pairs and never addressed by character offset,
because Tk counts a character outside the BMP (an emoji) as two where Python
counts one; offsets would drift. On a Tk that cannot round-trip such characters
at all, :func:`tk_handles_astral` says so and they are drawn spelled out
(``bmp_safe``); the model and the wire keep the original text.
"""

from __future__ import annotations

import sys
import tkinter as tk
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from tkinter import font as tkfont
from tkinter import messagebox, simpledialog, ttk
from typing import Protocol

from server.protocol import is_valid_nick

from .model import Line, bmp_safe, nick_colour_index, split_links
from .settings import Settings

__all__ = ["CertificateChangedDialog", "ConnectDialog", "MainView", "SidebarItem", "TrustCertificateDialog", "UserItem",
           "create_root", "tk_handles_astral"]

try:  # The Sun Valley ttk theme (maintained, pure Tcl); plain ttk styling without it.
    import sv_ttk
except ImportError:  # pragma: no cover - depends on the installation
    sv_ttk = None

PALETTES = {
    "light": {
        "bg": "#ffffff", "fg": "#1c1c1c", "muted": "#8a8a8a", "ts": "#9a9a9a", "own_bg": "#f1f6ff",
        "mention_bg": "#fff1c2", "mention_fg": "#c0392b", "link": "#0b62d6", "error": "#c0392b",
        "marker": "#e0245e", "select": "#cfe3ff", "notice": "#7a4db3", "topic_bg": "#f6f6f6",
        "nicks": ["#c0392b", "#1e7e34", "#0b62d6", "#a05a00", "#8e44ad", "#00838f", "#d35400", "#2e7d32",
                  "#6a1b9a", "#1565c0", "#ad1457", "#4e6b00"],
    },
    "dark": {
        "bg": "#1e1f22", "fg": "#e6e6e6", "muted": "#8d9096", "ts": "#6f737a", "own_bg": "#23293a",
        "mention_bg": "#4a3b12", "mention_fg": "#ffb86b", "link": "#6cb6ff", "error": "#ff6b6b",
        "marker": "#ff5c8a", "select": "#2f4b7c", "notice": "#c39bff", "topic_bg": "#2b2d31",
        "nicks": ["#ff7b72", "#7ee787", "#79c0ff", "#ffa657", "#d2a8ff", "#56d4dd", "#f0883e", "#a5d6a7",
                  "#e1a3ff", "#82b1ff", "#ff8ab4", "#c5e478"],
    },
}


# Keys that do not mean "writing a message" (the typing notification ignores them).
_NOT_TYPING = frozenset({"Return", "KP_Enter", "Up", "Down", "Tab", "Escape", "Shift_L", "Shift_R", "Control_L",
                         "Control_R", "Alt_L", "Alt_R", "Prior", "Next"})


@dataclass(frozen=True, slots=True)
class SidebarItem:
    key: str
    label: str
    kind: str
    unread: int
    mentions: int
    joined: bool


@dataclass(frozen=True, slots=True)
class UserItem:
    prefix: str
    nick: str
    away: bool


class Handlers(Protocol):
    """What the view calls (the controller implements these)."""

    def send(self, text: str | None = None) -> None: ...
    def on_select(self, key: str) -> None: ...
    def on_history(self, older: bool) -> None: ...
    def on_complete(self) -> None: ...
    def on_paste(self, text: str) -> bool: ...
    def on_typing(self) -> None: ...
    def on_close_conversation(self, key: str) -> None: ...
    def on_open_query(self, nick: str) -> None: ...
    def on_connect_dialog(self) -> None: ...
    def on_theme(self, name: str) -> None: ...
    def on_zoom(self, step: int) -> None: ...
    def on_help(self) -> None: ...
    def on_closing(self) -> None: ...


def create_root(settings: Settings, class_name: str = "Chat-room") -> tk.Tk:
    """The Tk root, aware of HiDPI displays."""
    if sys.platform == "win32":  # pragma: no cover - Windows only
        try:
            import ctypes

            ctypes.windll.shcore.SetProcessDpiAwareness(1)
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


class MainView:
    """The main window's widgets."""

    def __init__(self, root: tk.Tk, handlers: Handlers, settings: Settings) -> None:
        self.root = root
        self.h = handlers
        self.theme = settings.theme if settings.theme in PALETTES else "light"
        self.safe: Callable[[str], str] = (lambda s: s) if tk_handles_astral(root) else bmp_safe
        self._urls: dict[str, str] = {}
        self._shown_key: str | None = None
        base = tkfont.nametofont("TkDefaultFont").actual()
        family = base["family"]
        self.font = tkfont.Font(root, family=family, size=settings.font_size)
        self.bold = tkfont.Font(root, family=family, size=settings.font_size, weight="bold")
        self.italic = tkfont.Font(root, family=family, size=settings.font_size, slant="italic")
        self.small = tkfont.Font(root, family=family, size=max(7, settings.font_size - 2))
        self.mono = tkfont.Font(root, family=tkfont.nametofont("TkFixedFont").actual()["family"],
                                size=max(7, settings.font_size - 1))
        root.title("Chat-room")
        root.minsize(640, 400)
        root.geometry("1100x680")
        self._build()
        self.apply_theme(self.theme)

    # -- building -------------------------------------------------------------------
    def _build(self) -> None:
        root = self.root
        self._menu()
        outer = ttk.Frame(root)
        outer.pack(fill="both", expand=True)
        panes = ttk.PanedWindow(outer, orient="horizontal")
        panes.pack(fill="both", expand=True)

        side = ttk.Frame(panes, padding=(6, 6, 0, 6))
        ttk.Label(side, text="Conversations", font=self.small).pack(anchor="w", padx=2)
        self.sidebar = ttk.Treeview(side, columns=("badge",), show="tree", selectmode="browse")
        self.sidebar.column("#0", width=150, stretch=True)
        self.sidebar.column("badge", width=44, anchor="e", stretch=False)
        self.sidebar.pack(fill="both", expand=True, pady=(4, 0))
        self.sidebar.bind("<<TreeviewSelect>>", self._sidebar_selected)
        self.sidebar.bind("<Button-2>", self._sidebar_menu)
        self.sidebar.bind("<Button-3>", self._sidebar_menu)
        panes.add(side, weight=0)

        centre = ttk.Frame(panes, padding=6)
        self.topic = ttk.Label(centre, text="", anchor="w", justify="left", padding=(8, 6))
        self.topic.pack(fill="x")
        self.topic.bind("<Configure>", lambda e: self.topic.configure(wraplength=max(100, e.width - 20)))
        body = ttk.Frame(centre)
        body.pack(fill="both", expand=True, pady=(6, 0))
        self.text = tk.Text(body, wrap="word", state="disabled", relief="flat", borderwidth=0,
                            padx=10, pady=8, font=self.font, cursor="arrow", spacing1=2, spacing3=2,
                            highlightthickness=0, takefocus=False)
        scroll = ttk.Scrollbar(body, orient="vertical", command=self.text.yview)
        self.text.configure(yscrollcommand=scroll.set)
        scroll.pack(side="right", fill="y")
        self.text.pack(side="left", fill="both", expand=True)
        self.text.bind("<Key>", lambda e: None if e.state & 4 else self._focus_input(e.char))  # Ctrl+C still copies
        self.typing = ttk.Label(centre, text=" ", font=self.small)
        self.typing.pack(fill="x", pady=(2, 0))
        self.entry = ttk.Entry(centre, font=self.font)
        self.entry.pack(fill="x", pady=(2, 0), ipady=3)
        self.entry.bind("<Return>", lambda e: self.h.send())
        self.entry.bind("<KP_Enter>", lambda e: self.h.send())
        self.entry.bind("<Up>", lambda e: self._call(self.h.on_history, True))
        self.entry.bind("<Down>", lambda e: self._call(self.h.on_history, False))
        self.entry.bind("<Tab>", lambda e: self._call(self.h.on_complete))
        self.entry.bind("<<Paste>>", self._paste)
        self.entry.bind("<KeyRelease>", lambda e: None if e.keysym in _NOT_TYPING else self.h.on_typing())
        panes.add(centre, weight=1)

        users = ttk.Frame(panes, padding=(0, 6, 6, 6))
        self.users_title = ttk.Label(users, text="People", font=self.small)
        self.users_title.pack(anchor="w", padx=2)
        self.users = ttk.Treeview(users, show="tree", selectmode="browse")
        self.users.column("#0", width=160)
        self.users.pack(fill="both", expand=True, pady=(4, 0))
        self.users.bind("<Double-1>", self._user_activated)
        self.users.bind("<Return>", self._user_activated)
        panes.add(users, weight=0)

        bar = ttk.Frame(outer, padding=(8, 2))
        bar.pack(fill="x", side="bottom")
        self.status = ttk.Label(bar, text="Not connected", font=self.small)
        self.status.pack(side="left")
        self.lag = ttk.Label(bar, text="", font=self.small)
        self.lag.pack(side="right")
        self.entry.focus_set()
        root.bind_all("<Control-plus>", lambda e: self.h.on_zoom(1))
        root.bind_all("<Control-equal>", lambda e: self.h.on_zoom(1))
        root.bind_all("<Control-minus>", lambda e: self.h.on_zoom(-1))
        root.bind_all("<Alt-Up>", lambda e: self._step_sidebar(-1))
        root.bind_all("<Alt-Down>", lambda e: self._step_sidebar(1))
        root.bind_all("<Control-Prior>", lambda e: self._step_sidebar(-1))
        root.bind_all("<Control-Next>", lambda e: self._step_sidebar(1))

    def _menu(self) -> None:
        bar = tk.Menu(self.root)
        server = tk.Menu(bar, tearoff=False)
        server.add_command(label="Connect…", command=self.h.on_connect_dialog)
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
        bar.add_cascade(label="View", menu=view)
        helpm = tk.Menu(bar, tearoff=False)
        helpm.add_command(label="Commands and keys", command=self.h.on_help)
        bar.add_cascade(label="Help", menu=helpm)
        self.root.configure(menu=bar)
        self.root.bind_all("<Control-q>", lambda e: self.h.on_closing())

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
        self.topic.configure(font=self.bold)
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
        t.tag_configure("mentionmark", foreground=p["mention_fg"], font=self.bold)
        t.tag_configure("event", foreground=p["muted"], font=self.small)
        t.tag_configure("info", foreground=p["muted"])
        t.tag_configure("notice", foreground=p["notice"])
        t.tag_configure("error", foreground=p["error"])
        t.tag_configure("action", font=self.italic)
        t.tag_configure("history", foreground=p["fg"])
        t.tag_configure("marker", foreground=p["marker"], justify="center", font=self.small)
        t.tag_configure("link", foreground=p["link"], underline=True)
        t.tag_raise("sel")
        t.tag_bind("link", "<Enter>", lambda e: t.configure(cursor="hand2"))
        t.tag_bind("link", "<Leave>", lambda e: t.configure(cursor="arrow"))
        for tree in (self.sidebar, self.users):
            tree.tag_configure("mention", foreground=p["mention_fg"], font=self.bold)
            tree.tag_configure("unread", font=self.bold)
            tree.tag_configure("parted", foreground=p["muted"])
            tree.tag_configure("away", foreground=p["muted"], font=self.italic)
            tree.tag_configure("normal", font=self.font)

    def set_font_size(self, size: int) -> None:
        for f in (self.font, self.bold, self.italic):
            f.configure(size=size)
        self.small.configure(size=max(7, size - 2))
        self.mono.configure(size=max(7, size - 1))
        ttk.Style(self.root).configure("Treeview", rowheight=int(self.font.metrics("linespace") * 1.6))

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
                ("parted",) if it.kind == "channel" and not it.joined else ("normal",)
            label = self.safe(("" if it.kind != "query" else "\u2022 ") + it.label)
            if tree.exists(it.key):
                tree.item(it.key, text=label, values=(badge,), tags=tags)
                tree.move(it.key, "", index)
            else:
                tree.insert("", index, iid=it.key, text=label, values=(badge,), tags=tags)
        if tree.exists(active) and tree.selection() != (active,):
            self._quiet_select = True
            tree.selection_set(active)
            tree.see(active)

    def show(self, key: str, lines: Sequence[Line], marker_at: int | None, own_nick: str) -> None:
        """Draw a whole conversation (on switching, or after history arrived)."""
        self._shown_key = key
        t = self.text
        t.configure(state="normal")
        t.delete("1.0", "end")
        for tag in self._urls:
            t.tag_delete(tag)
        self._urls.clear()
        for i, line in enumerate(lines):
            if marker_at is not None and i == marker_at:
                self._insert_marker()
            self._insert_line(line, own_nick)
        t.configure(state="disabled")
        t.see("end")

    def append(self, line: Line, own_nick: str) -> None:
        t = self.text
        at_bottom = t.yview()[1] >= 0.999
        t.configure(state="normal")
        self._insert_line(line, own_nick)
        t.configure(state="disabled")
        if at_bottom or line.own:
            t.see("end")

    def _insert_marker(self) -> None:
        self.text.insert("end", "\u2500\u2500\u2500\u2500  new messages  \u2500\u2500\u2500\u2500\n", ("marker",))

    def _insert_line(self, line: Line, own_nick: str) -> None:
        t = self.text
        local = line.time.astimezone()
        stamp = local.strftime("%H:%M" if not line.history else "%d %b %H:%M")
        extra = ("mention",) if line.mention else ("own",) if line.own else ()
        chunks: list[tuple[str, tuple[str, ...]]] = [(f"{stamp}  ", ("ts", *extra))]
        ncolour = "ownnick" if line.own else f"nick{nick_colour_index(line.nick, len(PALETTES['light']['nicks']))}"
        body_tags: tuple[str, ...] = extra
        if line.kind == "message":
            chunks.append((self.safe(line.nick), ("nick", ncolour, *extra)))
            chunks.append(("  ", extra))
        elif line.kind == "action":
            chunks.append(("* ", ("action", *extra)))
            chunks.append((self.safe(line.nick), ("nick", ncolour, "action", *extra)))
            chunks.append((" ", extra))
            body_tags = ("action", *extra)
        elif line.kind == "notice":
            chunks.append((f"-{self.safe(line.nick)}-  " if line.nick else "", ("notice", *extra)))
            body_tags = ("notice", *extra)
        else:
            body_tags = (line.kind, *extra)
            chunks[0] = (f"{stamp}  ", ("ts", *extra))
            if line.kind == "event":
                chunks.append(("\u2022 ", ("event",)))
        if line.mention:
            chunks.insert(0, ("\u25b6 ", ("mentionmark", "mention")))
        for chunk, url in split_links(line.text):
            if url is None:
                chunks.append((self.safe(chunk), body_tags))
            else:
                tag = f"url{len(self._urls)}"
                self._urls[tag] = url
                self.text.tag_bind(tag, "<Button-1>", lambda e, u=url: webbrowser.open(u))
                chunks.append((self.safe(chunk), (*body_tags, "link", tag)))
        chunks.append(("\n", extra))
        args: list[object] = []
        for chunk, tags in chunks:
            if chunk:
                args += [chunk, tags]
        t.insert("end", *args)

    def set_topic(self, text: str) -> None:
        self.topic.configure(text=self.safe(text))

    def set_users(self, items: Sequence[UserItem], title: str) -> None:
        tree = self.users
        tree.delete(*tree.get_children())
        for it in items:
            label = f"{it.prefix}{self.safe(it.nick)}" + ("  (away)" if it.away else "")
            tree.insert("", "end", iid=f"u:{it.nick}", text=label, tags=("away",) if it.away else ("normal",))
        self.users_title.configure(text=title)

    def set_typing(self, text: str) -> None:
        self.typing.configure(text=self.safe(text) or " ")

    def set_status(self, text: str) -> None:
        self.status.configure(text=self.safe(text))

    def set_lag(self, text: str) -> None:
        self.lag.configure(text=text)

    def set_title(self, text: str) -> None:
        self.root.title(self.safe(text))

    # -- input ------------------------------------------------------------------------------
    def get_input(self) -> str:
        return self.entry.get()

    def set_input(self, text: str, cursor: int | None = None) -> None:
        self.entry.delete(0, "end")
        self.entry.insert(0, text)
        self.entry.icursor(len(text) if cursor is None else cursor)

    def input_cursor(self) -> int:
        return int(self.entry.index("insert"))

    def focus_input(self) -> None:
        self.entry.focus_set()

    def is_focused(self) -> bool:
        try:
            return self.root.focus_displayof() is not None
        except (KeyError, tk.TclError):
            return False

    def bell(self) -> None:
        self.root.bell()

    # -- dialogs ---------------------------------------------------------------------------
    def ask_nick(self, message: str, suggestion: str) -> str | None:
        return simpledialog.askstring("Nickname in use", message, initialvalue=suggestion, parent=self.root)

    def confirm(self, title: str, message: str) -> bool:
        return bool(messagebox.askyesno(title, message, parent=self.root))

    def show_error(self, title: str, message: str) -> None:
        messagebox.showerror(title, message, parent=self.root)

    def ask_connect(self, settings: Settings, note: str = "") -> Settings | None:
        return ConnectDialog(self.root, settings, note).result

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
        return bool(messagebox.askyesno(
            "Really forget the trusted certificate?",
            f"Forget the certificate you trusted for {host} port {port}?\n\nSHA-256 {old}\n\n"
            "Do this only if the server's owner told you the certificate changed. You will then be shown the "
            "new certificate's fingerprint: compare it with what the owner gave you before trusting it.",
            icon="warning", default="no", parent=self.root))

    # -- tk plumbing ---------------------------------------------------------------------------
    def after(self, ms: int, func: Callable[[], object]) -> str:
        return self.root.after(ms, func)

    def mainloop(self) -> None:
        self.root.mainloop()

    def destroy(self) -> None:
        try:
            self.root.destroy()
        except tk.TclError:
            pass

    def _call(self, func: Callable[..., object], *args: object) -> str:
        func(*args)
        return "break"

    def _paste(self, event: tk.Event) -> str | None:
        try:
            text = self.root.clipboard_get()
        except tk.TclError:
            return None
        if "\n" not in text.strip("\r\n"):
            return None
        return "break" if self.h.on_paste(text) else None

    _quiet_select = False

    def _sidebar_selected(self, event: tk.Event) -> None:
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

    def _sidebar_menu(self, event: tk.Event) -> None:
        iid = self.sidebar.identify_row(event.y)
        if not iid:
            return
        menu = tk.Menu(self.root, tearoff=False)
        menu.add_command(label="Close", command=lambda: self.h.on_close_conversation(iid))
        menu.tk_popup(event.x_root, event.y_root)

    def _user_activated(self, event: tk.Event) -> None:
        sel = self.users.selection()
        if sel and sel[0].startswith("u:"):
            self.h.on_open_query(sel[0][2:])

    def _focus_input(self, char: str) -> str | None:
        if char and char.isprintable():
            self.entry.focus_set()
            self.entry.insert("insert", char)
            return "break"
        return None


class ConnectDialog(simpledialog.Dialog):
    """Server, port, nickname, password, TLS: the first thing a user sees."""

    def __init__(self, parent: tk.Misc, settings: Settings, note: str = "") -> None:
        self.settings = settings
        self.note = note
        self.result: Settings | None = None
        super().__init__(parent, "Connect to a chat server")

    def body(self, master: tk.Frame) -> tk.Widget:
        s = self.settings
        frame = ttk.Frame(master, padding=12)
        frame.pack(fill="both", expand=True)
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
        first: tk.Widget | None = None
        for i, (label, key, hint) in enumerate(rows, start=1):
            ttk.Label(frame, text=label).grid(row=2 * i - 1, column=0, sticky="w", padx=(0, 10), pady=(4, 0))
            entry = ttk.Entry(frame, textvariable=self.vars[key], width=34, show="\u2022" if key == "password" else "")
            entry.grid(row=2 * i - 1, column=1, sticky="ew", pady=(4, 0))
            ttk.Label(frame, text=hint, foreground="#888888").grid(row=2 * i, column=1, sticky="w")
            if first is None or (key == "nick" and not s.nick):
                first = entry
        r = 2 * len(rows) + 1
        ttk.Checkbutton(frame, text="Remember password", variable=self.remember).grid(row=r, column=1, sticky="w")
        ttk.Checkbutton(frame, text="Secure connection (TLS)", variable=self.tls, command=self._tls_toggled).grid(
            row=r + 1, column=1, sticky="w", pady=(6, 0))
        ttk.Checkbutton(frame, text="Verify the server's certificate", variable=self.verify).grid(
            row=r + 2, column=1, sticky="w")
        frame.columnconfigure(1, weight=1)
        assert first is not None
        return first

    def buttonbox(self) -> None:
        box = ttk.Frame(self, padding=(12, 0, 12, 12))
        ttk.Button(box, text="Connect", command=self.ok, default="active").pack(side="right", padx=(6, 0))
        ttk.Button(box, text="Cancel", command=self.cancel).pack(side="right")
        self.bind("<Return>", self.ok)
        self.bind("<Escape>", self.cancel)
        box.pack(fill="x")

    def _tls_toggled(self) -> None:
        port = self.vars["port"].get().strip()
        if self.tls.get() and port == "6667":
            self.vars["port"].set("6697")
        elif not self.tls.get() and port == "6697":
            self.vars["port"].set("6667")

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
            messagebox.showwarning("Check the details", problem, parent=self)
            return False
        channels = [c.strip() for c in self.vars["channels"].get().replace(" ", ",").split(",") if c.strip()]
        self.result = replace(
            self.settings, host=host, port=port, nick=nick, password=self.vars["password"].get(),
            remember_password=self.remember.get(), tls=self.tls.get(), tls_verify=self.verify.get(),
            channels=[c if c[0] in "#&" else "#" + c for c in channels],
        )
        return True


def _grouped(fingerprint: str) -> str:
    """A SHA-256 fingerprint on two lines of 16 bytes, easier to compare by eye."""
    parts = fingerprint.split(":")
    return "\n".join(":".join(parts[i:i + 16]) for i in range(0, len(parts), 16))


class _CertificateDialog(simpledialog.Dialog):
    """Shared layout: wrapped paragraphs and fingerprints in a selectable monospace box."""

    result: bool | None  # None until a button decides (simpledialog.Dialog's convention)

    def _para(self, parent: tk.Misc, text: str, **kw: object) -> ttk.Label:
        label = ttk.Label(parent, text=text, wraplength=520, justify="left", **kw)  # type: ignore[arg-type]
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
        box = ttk.Frame(self, padding=(12, 0, 12, 12))
        self._buttons(box)
        self.bind("<Escape>", self.cancel)
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

    def body(self, master: tk.Frame) -> tk.Widget:
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

    def body(self, master: tk.Frame) -> tk.Widget:
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
