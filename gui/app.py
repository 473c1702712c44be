"""``ChatApp``: the controller that ties the model, the network client and the view.

The method names are those of the original design: ``__init__`` (window, UI,
connection), ``init_ui``, ``setup_connection``, ``receive`` (the background
thread's body: it only reads the network and queues events, never touching a
widget), ``send`` and ``on_closing`` (QUIT, then exit).

Certificates (trust on first use): the client reports ``UntrustedCertificate``
or ``CertificateChanged`` instead of connecting; :meth:`ChatApp._untrusted` and
:meth:`ChatApp._certificate_changed` ask the user through the view, pin or
forget in ``known_servers.json``, and connect again. Only these two, on a
user's answer, change a pin.

The network thread reaches Tk only through the connection's queue, which
:meth:`ChatApp.poll` drains every 50 ms with ``after()`` (habit 13, as thonny's
``_poll_backend_messages`` and IDLE's ``poll_subprocess`` do). This module
imports no tkinter itself: drawing is the view's.
"""

from __future__ import annotations

import functools
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from server.protocol import Message

from . import model as m
from . import settings as settings_mod
from .client import (
    CapsChanged,
    CertificateChanged,
    Connected,
    Connecting,
    Disconnected,
    Failed,
    IRCConnection,
    Lag,
    NickRetry,
    Received,
    UntrustedCertificate,
)
from .commands import ALIASES, COMMANDS, Context, Outcome, interpret
from .known_servers import KnownServers
from .notify import notify
from .settings import Settings
from .view import MainView, SidebarItem, UserItem, create_root

__all__ = ["ChatApp"]

log = logging.getLogger("chatroom.gui")

POLL_MS = 50
TICK_MS = 1000
PASTE_CONFIRM_LINES = 3  # a paste of more lines than this asks first
TYPING_RESEND = 3.0  # seconds between "+typing=active" while typing
MAX_EVENTS_PER_POLL = 500  # keep the window responsive under a flood

MULTILINE_DEFAULT_LINES = 24

GETTING_STARTED = [
    "Welcome to Chat-room!",
    "Channels are group conversations; their names start with '#'. Type /join #lobby to enter one.",
    "Click a channel or person on the left to read it; new messages show a count, mentions of your name a red @.",
    "Double-click someone in the list on the right to talk privately. Type /help for every command.",
]


class ChatApp:
    """The desktop client: one window, one connection at a time."""

    def __init__(self, root: Any = None, settings: Settings | None = None, *, connect: bool = True,
                 ask: bool | None = None, notifier: Callable[[str, str], None] | None = None,
                 save_settings: bool = True, known: KnownServers | None = None) -> None:
        self.settings = settings if settings is not None else settings_mod.load()
        self.save_settings = save_settings
        self.known = known if known is not None else KnownServers()  # pinned certificates
        self.model = self._new_model(self.settings.nick)
        self.history = m.InputHistory()
        self.client: IRCConnection | None = None
        self.events: queue.Queue[Any] = queue.Queue()
        self.notifier = notifier or notify
        self.errors: list[BaseException] = []  # what went wrong in a callback (tests assert it stays empty)
        self.closing = False
        self.attention = 0  # mentions while the window was not focused
        self.lag: float | None = None
        self.status_text = "Not connected"
        self.status_action: str | None = None  # "reconnect" while a button for it is shown
        self._retry_at: float | None = None  # when the client tries again (monotonic), for the countdown
        self._reason = ""
        self.attempt = 0  # the current connection try (0: the first)
        self._modal = False
        self._completion: tuple[str, int, list[str], int, int] | None = None  # text, start, options, index, end
        self._typing_sent: tuple[str, float] | None = None
        self.replying: m.Line | None = None  # the line the next message answers (+draft/reply)
        self.root = root if root is not None else create_root(self.settings)
        self.init_ui()
        self.root.protocol("WM_DELETE_WINDOW", self.on_closing)
        self.view.after(POLL_MS, self.poll)
        self.view.after(TICK_MS, self.tick)
        for text in GETTING_STARTED:
            self._apply(self.model.add_info(m.SERVER_KEY, text, datetime.now(UTC)))
        self._apply(self.model.restore_queries(self.settings.queries))
        if connect:
            wants_dialog = ask if ask is not None else True
            self.view.after(10, lambda: self.setup_connection(ask=wants_dialog))

    def _new_model(self, nick: str) -> m.ChatModel:
        model = m.ChatModel(nick)
        s = self.settings
        model.highlights = list(s.highlights)
        model.ignored = {model.fold(n) for n in s.ignored}
        model.muted = {model.key(k) for k in s.muted}
        try:
            model.seen_until = datetime.fromisoformat(s.last_seen) if s.last_seen else None
        except ValueError:
            model.seen_until = None
        return model

    # -- the original design's methods -------------------------------------------------
    def init_ui(self) -> None:
        self.view = MainView(self.root, self, self.settings)
        self.root.bind("<FocusIn>", lambda e: self.on_focus(), add="+")
        self.refresh()

    def setup_connection(self, settings: Settings | None = None, ask: bool = False, note: str = "") -> bool:
        """Connect with ``settings`` (asking first when ``ask``); False when the user cancelled."""
        s = settings or self.settings
        if ask:
            answer = self._dialog(self.view.ask_connect, s, note)
            if answer is None:
                self._set_status("Not connected. Use Server \u25b8 Connect\u2026 to connect.")
                return False
            s = answer
        if self.client is not None:
            self.client.quit("Changing server", timeout=1.0)
            self.settings = s
            self.model = self._new_model(s.nick)
        self.settings = s
        self.model.nick = s.nick
        self._save()
        self._start_client()
        self.refresh()
        return True

    def _start_client(self) -> None:
        s = self.settings
        self.client = IRCConnection(s.host, s.port, s.nick, password=s.password or None, tls=s.tls,
                                    tls_verify=s.tls_verify, cafile=s.tls_cafile or None, known=self.known)
        self.events = self.client.events
        self.client.start(target=functools.partial(self.receive, self.client))

    def receive(self, client: IRCConnection | None = None) -> None:
        """The background thread: read the network, queue events. No widgets here."""
        client = client or self.client
        assert client is not None
        client.run()

    def send(self, text: str | None = None) -> None:
        """Send what is in the input box (or ``text``): a command or a message. Offline, what
        was typed stays in the box (nothing is lost) and the status bar says why."""
        from_box = text is None
        if text is None:
            text = self.view.get_input()
        if not text.strip():
            return
        lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
        commands = [ln for ln in lines if ln.startswith("/") and not ln.startswith("//")]
        online = self.client is not None and self.client.connected and self.model.registered
        local = all(self._is_local(ln) for ln in lines)
        if not online and not local:
            self._set_status("Offline: what you typed is kept in the box. Press Enter again once connected.",
                             self.status_action)
            self.view.bell()
            return
        if len(lines) > PASTE_CONFIRM_LINES and not commands:
            conv = self.model.conversations[self.model.active]
            where = conv.name if conv.kind != "server" else "the server"
            if not self._dialog(self.view.confirm, "Send several lines?",
                                f"Send these {len(lines)} lines to {where}?"):
                return
        if from_box:
            self.history.add(text)
            self.view.set_input("")
        self._completion = None
        ctx = self._context()
        if len(lines) > 1 and not commands and ctx.target is not None and self._multiline_ok(lines):
            self._send_multiline(ctx.target, lines)
        else:
            for line in lines:
                self._run(interpret(line, self._context()))
        self._typing_sent = None  # a message ends "typing" for its readers
        if self.replying is not None:
            self.on_cancel_reply()

    def _is_local(self, line: str) -> bool:
        """A command that needs no connection (/help, /clear, /reconnect...)."""
        if not line.startswith("/") or line.startswith("//"):
            return False
        out = interpret(line, self._context())
        return not out.send

    def _multiline_ok(self, lines: list[str]) -> bool:
        value = self.client.offered.get("draft/multiline", "") if self.client is not None else ""
        if "draft/multiline" not in self.model.caps or "batch" not in self.model.caps:
            return False
        limits = dict(item.partition("=")[::2] for item in value.split(",") if item)
        max_lines = int(limits["max-lines"]) if limits.get("max-lines", "").isdigit() else MULTILINE_DEFAULT_LINES
        max_bytes = int(limits["max-bytes"]) if limits.get("max-bytes", "").isdigit() else 4096
        return len(lines) <= max_lines and sum(len(ln.encode()) + 1 for ln in lines) <= max_bytes \
            and all(len(ln.encode()) <= 400 for ln in lines)

    def _send_multiline(self, target: str, lines: list[str]) -> None:
        """Several lines as one message (IRCv3 ``draft/multiline``)."""
        ref = f"ml{int(time.monotonic() * 1000) % 10**8}"
        tags = self._reply_tags()
        out = [Message("BATCH", ("+" + ref, "draft/multiline", target), tags=tags)]
        out += [Message("PRIVMSG", (target, ln), tags={"batch": ref}) for ln in lines]
        out.append(Message("BATCH", ("-" + ref,)))
        if self._send(*out) and "echo-message" not in self.model.caps:
            self._apply(self.model.add_own(target, "message", "\n".join(lines), datetime.now(UTC)))

    def on_closing(self, reason: str = "Leaving") -> None:
        """Tell the server (QUIT), remember the settings, close the window."""
        if self.closing:
            return
        self.closing = True
        self.settings.channels = sorted(self.model.wanted.values(), key=self.model.fold) or self.settings.channels
        self.settings.queries = [c.name for _, c in self.model.ordered() if c.kind == "query"]
        self.settings.last_seen = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            self.settings.geometry = self.view.geometry()
            self.settings.sashes = self.view.pane_sizes() or self.settings.sashes
        except Exception:  # a view without a window (tests)
            pass
        self._save()
        if self.client is not None:
            self.client.quit(reason, timeout=1.5)
        self.view.destroy()

    def run(self) -> None:
        self.view.mainloop()

    # -- the queue, drained on Tk's thread -------------------------------------------------
    def poll(self) -> None:
        if self.closing:
            return
        if not self._modal:
            for _ in range(MAX_EVENTS_PER_POLL):
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    break
                try:
                    self.handle_event(event)
                except Exception as exc:  # keep the window alive; tests check self.errors
                    log.exception("handling %r", event)
                    self.errors.append(exc)
        self.view.after(POLL_MS, self.poll)

    def tick(self) -> None:
        if self.closing:
            return
        try:
            self._apply(self.model.expire_typing(datetime.now(UTC)))
            self._typing_tick()
            self._countdown()
        except Exception as exc:
            log.exception("tick")
            self.errors.append(exc)
        self.view.after(TICK_MS, self.tick)

    def _countdown(self) -> None:
        if self._retry_at is None:
            return
        left = max(0, round(self._retry_at - time.monotonic()))
        self._set_status(f"Connection lost ({self._reason}). Reconnecting in {left} s\u2026", "reconnect")

    def handle_event(self, event: object) -> None:
        now = datetime.now(UTC)
        s = self.settings
        if isinstance(event, Received):
            self._apply(self.model.handle(event.message, now))
        elif isinstance(event, Connecting):
            self.attempt = event.attempt
            self._retry_at = None
            self._set_status(f"Connecting to {s.host} port {s.port}\u2026" if event.attempt == 0
                             else f"Reconnecting to {s.host} (try {event.attempt + 1})\u2026")
        elif isinstance(event, Connected):
            self._set_status(f"Connected to {s.host}" + (" (encrypted)" if event.tls else "") + ", signing in\u2026")
        elif isinstance(event, CapsChanged):
            self.model.caps = set(event.enabled)
        elif isinstance(event, Lag):
            self.lag = event.seconds
            self.view.set_lag(f"lag {event.seconds * 1000:.0f} ms")
        elif isinstance(event, NickRetry):
            self.model.nick = event.nick
            self._apply(self.model.add_info(m.SERVER_KEY, f"Your nickname was taken; trying {event.nick}.", now))
        elif isinstance(event, Disconnected):
            self.lag = None
            self.view.set_lag("")
            if self.model.registered or event.retry_in is not None or self.model.lost_at is not None:
                self._apply(self.model.disconnected(event.reason, now, event.retry_in))
            if event.retry_in is not None:
                self._reason = event.reason
                self._retry_at = time.monotonic() + event.retry_in
                self._countdown()
            else:
                self._retry_at = None
                self._set_status(f"Disconnected: {event.reason}", "reconnect")
        elif isinstance(event, Failed):
            self._set_status(f"Not connected: {event.text}")
            self._apply(self.model.add_info(m.SERVER_KEY, event.text, now, "error"))
            if not self.closing:
                self.view.after(0, lambda: self._failed(event))
        elif isinstance(event, UntrustedCertificate):
            self._certificate_refused(event, f"Not connected: the certificate of {event.host} port {event.port} "
                                             f"is not verified ({event.reason}).", self._untrusted)
        elif isinstance(event, CertificateChanged):
            self._certificate_refused(event, f"Not connected: the certificate of {event.host} port {event.port} "
                                             "has CHANGED since you trusted it.", self._certificate_changed)

    # -- certificate decisions (trust on first use) --------------------------------------------
    def _certificate_refused(self, event: Any, text: str, decide: Callable[[Any, IRCConnection | None], None]) -> None:
        self._set_status(text)
        self._apply(self.model.add_info(m.SERVER_KEY, text, datetime.now(UTC), "error"))
        if not self.closing:
            client = self.client  # the decision applies to this connection only
            self.view.after(0, lambda: decide(event, client))

    def _untrusted(self, event: UntrustedCertificate, client: IRCConnection | None) -> None:
        """First use of a server no authority vouches for: show the fingerprint, pin it if trusted."""
        if self.closing or client is not self.client:
            return  # the user has moved on to another connection meanwhile
        trusted = self._dialog(self.view.ask_trust_certificate, event.host, event.port, event.fingerprint,
                               event.subject, event.issuer, event.not_after, event.reason)
        now = datetime.now(UTC)
        if not trusted:
            self._set_status("Not connected: you did not trust the server's certificate.")
            return
        try:
            self.known.pin(event.host, event.port, event.fingerprint, event.subject)
        except OSError as exc:
            self._dialog(self.view.show_error, "Could not remember the certificate", str(exc))
            return
        self._apply(self.model.add_info(
            m.SERVER_KEY, f"You trust the certificate of {event.host} port {event.port} "
                          f"(SHA-256 {event.fingerprint}). You will be warned if it changes.", now))
        self._connect_again()

    def _certificate_changed(self, event: CertificateChanged, client: IRCConnection | None) -> None:
        """A pinned server shows another certificate: warn; forget the pin only when asked twice."""
        if self.closing or client is not self.client:
            return
        stay = "Not connected: the server's certificate changed. Ask the server's owner before going on."
        if not self._dialog(self.view.warn_certificate_changed, event.host, event.port, event.old, event.new,
                            event.subject, event.issuer):
            self._set_status(stay)
            return
        if not self._dialog(self.view.confirm_forget_certificate, event.host, event.port, event.old):
            self._set_status(stay)
            return
        try:
            self.known.forget(event.host, event.port)
        except OSError as exc:
            self._dialog(self.view.show_error, "Could not forget the certificate", str(exc))
            return
        self._apply(self.model.add_info(
            m.SERVER_KEY, f"Forgot the certificate you trusted for {event.host} port {event.port} "
                          f"(SHA-256 {event.old}).", datetime.now(UTC)))
        # Not pinning the new one here: connecting again shows it as a first use, to be compared.
        self._connect_again()

    def _connect_again(self) -> None:
        """The same server after a certificate decision, keeping the conversations (and rejoining them)."""
        if self.client is not None:
            self.client.stop()  # its thread has ended already
        self._start_client()

    def _failed(self, event: Failed) -> None:
        self._dialog(self.view.show_error, "Could not connect", event.text)
        self.setup_connection(ask=True, note=event.text)

    # -- model updates -> view ------------------------------------------------------------
    def _apply(self, updates: list[m.Update]) -> None:
        model = self.model
        # The model has already applied every update in the list: once a conversation
        # has been redrawn whole, its LineAdded updates are on screen already.
        drawn: set[str] = set()
        for u in updates:
            if isinstance(u, m.LineAdded):
                if u.key == model.active and u.key not in drawn:
                    self.view.append(u.line, model.nick)
            elif isinstance(u, m.SidebarChanged):
                self._refresh_sidebar()
            elif isinstance(u, m.Redraw):
                if u.key == model.active:
                    drawn.add(u.key)
                    self._redraw(u.anchor)
            elif isinstance(u, m.TopicChanged | m.MembersChanged | m.TypingChanged):
                if u.key == model.active:
                    {m.TopicChanged: self._refresh_topic, m.MembersChanged: self._refresh_users,
                     m.TypingChanged: self._refresh_typing}[type(u)]()
            elif isinstance(u, m.Opened):
                self._refresh_sidebar()
                if u.focus:
                    self.on_select(u.key)
                    drawn.add(u.key)
            elif isinstance(u, m.Mention):
                self._attend(u.key, u.line)
            elif isinstance(u, m.Send):
                if self.client is not None:
                    self.client.send(u.message)
            elif isinstance(u, m.Registered):
                self._retry_at = None
                self._set_status(f"Connected to {self.settings.host} as {u.nick}")
                self.settings.nick = u.nick
                if not model.wanted and self.settings.channels:
                    self._send(Message("JOIN", (",".join(self.settings.channels),)))
            elif isinstance(u, m.OwnNickChanged):
                self._set_status(f"Connected to {self.settings.host} as {u.nick}")
            elif isinstance(u, m.AwayChanged):
                self._set_status(f"Connected to {self.settings.host} as {model.nick}" + (" (away)" if u.away else ""))
            elif isinstance(u, m.NickInUse):
                if not u.registered:
                    self.view.after(0, functools.partial(self._ask_nick, u.nick))
            elif isinstance(u, m.PasswordRejected):
                self.view.after(0, self._password_rejected)
            elif isinstance(u, m.ChannelListChanged):
                self.view.set_channel_list(model.channel_list, u.done)

    def _ask_nick(self, nick: str) -> None:
        if self.client is None or self.model.registered:
            return
        new = self._dialog(self.view.ask_nick,
                           f"Someone is already using the nickname {nick!r}. Pick another one:", nick + "_")
        if new and new.strip():
            self.model.nick = new.strip()
            self.client.send(Message("NICK", (new.strip(),)))
        else:
            self.client.quit("No nickname")
            self._set_status("Not connected (no free nickname chosen).")

    def _password_rejected(self) -> None:
        text = "The server did not accept the password. Check it with the server's owner and try again."
        self._dialog(self.view.show_error, "Wrong password", text)
        self.setup_connection(ask=True, note=text)

    def _attend(self, key: str, line: m.Line) -> None:
        """A mention: highlight is drawn by the view; here the bell, title and a notification."""
        focused = self.view.is_focused()
        if focused and key == self.model.active:
            return
        self.view.bell()
        if not focused:
            self.attention += 1
            self._refresh_title()
        conv = self.model.conversations.get(key)
        where = "privately" if conv is not None and conv.kind == "query" else f"in {conv.name if conv else key}"
        if self.settings.notifications:
            self.notifier(f"{line.nick} {where}", line.text)

    # -- drawing helpers --------------------------------------------------------------------
    def refresh(self) -> None:
        self._refresh_sidebar()
        self._redraw()
        self._refresh_topic()
        self._refresh_users()
        self._refresh_typing()
        self._refresh_placeholder()

    def _refresh_sidebar(self) -> None:
        items = [SidebarItem(key, c.name, c.kind, c.unread, c.mentions, c.joined or c.kind != "channel",
                             key in self.model.muted)
                 for key, c in self.model.ordered()]
        self.view.set_sidebar(items, self.model.active)
        self._refresh_title()

    def _refresh_title(self) -> None:
        conv = self.model.conversations[self.model.active]
        mentions = sum(c.mentions for c in self.model.conversations.values()) + self.attention
        unread = any(c.unread for c in self.model.conversations.values())
        prefix = f"({mentions}) " if mentions else "* " if unread else ""
        name = conv.name if conv.kind != "server" else self.settings.host
        self.view.set_title(f"{prefix}{name} \u2014 Chat-room")

    def _redraw(self, anchor: m.Line | None = None) -> None:
        conv = self.model.conversations[self.model.active]
        marker = conv.first_unread if conv.first_unread is not None and conv.first_unread < len(conv.lines) else None
        note = "start of the history" if conv.older_done else None
        self.view.show(self.model.active, conv.lines, marker, self.model.nick, anchor=anchor, top_note=note)

    def _refresh_topic(self) -> None:
        conv = self.model.conversations[self.model.active]
        if conv.kind == "channel":
            text = conv.topic or "(no topic set \u2014 /topic text sets one)"
            if not conv.joined:
                text = "You are not in this channel. /join " + conv.name + " to go back in."
            self.view.set_topic(f"{conv.name}: {text}")
        elif conv.kind == "query":
            self.view.set_topic(f"Private conversation with {conv.name}")
        else:
            self.view.set_topic(f"{self.settings.host} \u2014 server messages")

    def _refresh_users(self) -> None:
        model = self.model
        conv = model.conversations[model.active]
        members = model.sorted_members(model.active)
        items = [UserItem(model.prefix_of(x), x.nick, x.away, model.fold(x.nick) in model.ignored) for x in members]
        me = conv.members.get(model.fold(model.nick))
        op = me is not None and any(c in me.modes for c in "qaoh")
        self.view.set_users(items, f"People ({len(items)})" if conv.kind == "channel" else "People", op)
        self.view.show_users(conv.kind == "channel")

    def _refresh_typing(self) -> None:
        names = self.model.typing_names(self.model.active)
        if not names:
            text = ""
        elif len(names) == 1:
            text = f"{names[0]} is typing\u2026"
        elif len(names) <= 3:
            text = f"{', '.join(names[:-1])} and {names[-1]} are typing\u2026"
        else:
            text = "Several people are typing\u2026"
        self.view.set_typing(text)

    def _refresh_placeholder(self) -> None:
        conv = self.model.conversations[self.model.active]
        if conv.kind == "server":
            self.view.set_placeholder("Type /join #channel to enter a room, /help for every command")
        else:
            self.view.set_placeholder(f"Message {conv.name}")

    def _set_status(self, text: str, action: str | None = None) -> None:
        self.status_text = text
        self.status_action = action
        self.view.set_status(text, action)

    # -- what the user does (called by the view) ----------------------------------------------
    def on_select(self, key: str) -> None:
        if key not in self.model.conversations:
            return
        self.model.select(key)
        self._completion = None
        if self.replying is not None:
            self.on_cancel_reply()
        self.refresh()

    def on_history(self, older: bool) -> None:
        current = self.view.get_input()
        self.view.set_input(self.history.older(current) if older else self.history.newer(current))

    def on_complete(self) -> None:
        text, cursor = self.view.get_input(), self.view.input_cursor()
        state = self._completion
        if state is not None and state[0] == text and state[4] == cursor:
            _, start, options, index, _ = state
            index = (index + 1) % len(options)
            original = text[:start] + text[cursor:]
        else:
            start = max(text.rfind(" ", 0, cursor), text.rfind("\n", 0, cursor)) + 1
            word = text[start:cursor]
            options = self.model.complete(self.model.active, word, start == 0, [*COMMANDS, *ALIASES])
            if not options:
                self.view.bell()
                return
            index = 0
            original = text[:start] + text[cursor:]
        choice = options[index]
        if choice.startswith("/") or (not choice.endswith(": ") and start + len(choice) >= len(original)):
            choice += " "
        new = original[:start] + choice + original[start:]
        self.view.set_input(new, start + len(choice))
        self._completion = (new, start, options, index, start + len(choice))

    def on_paste(self, text: str) -> bool:
        """Pasted text goes into the box (several lines too); Enter sends it."""
        self.view.set_input(self.view.get_input() + text.replace("\r\n", "\n"))
        return True

    def on_typing(self) -> None:
        """A key was typed: tell the conversation (IRCv3 +typing), at most every few seconds."""
        conv = self.model.conversations[self.model.active]
        text = self.view.get_input()
        if conv.kind == "server" or "message-tags" not in self.model.caps or not text or text.startswith("/"):
            return
        now = time.monotonic()
        if self._typing_sent and self._typing_sent[0] == conv.name and now - self._typing_sent[1] < TYPING_RESEND:
            return
        self._typing_sent = (conv.name, now)
        self._send(Message("TAGMSG", (conv.name,), tags={"+typing": "active"}), quiet=True)

    def _typing_tick(self) -> None:
        if self._typing_sent is None:
            return
        target, since = self._typing_sent
        active = self.model.conversations[self.model.active]
        if not self.view.get_input() or active.name != target:
            self._send(Message("TAGMSG", (target,), tags={"+typing": "done"}), quiet=True)
            self._typing_sent = None
        elif time.monotonic() - since > 10:
            self._send(Message("TAGMSG", (target,), tags={"+typing": "paused"}), quiet=True)
            self._typing_sent = (target, time.monotonic())

    def on_close_conversation(self, key: str) -> None:
        conv = self.model.conversations.get(key)
        if conv is None or conv.kind == "server":
            return
        if conv.kind == "channel" and conv.joined:
            self._send(Message("PART", (conv.name,)), quiet=True)
        self._apply(self.model.close(key))
        self.refresh()

    def on_mute(self, key: str, muted: bool) -> None:
        conv = self.model.conversations.get(key)
        if conv is None:
            return
        if muted:
            self.model.muted.add(key)
        else:
            self.model.muted.discard(key)
        self.settings.muted = sorted(self.model.conversations[k].name for k in self.model.muted
                                     if k in self.model.conversations)
        self._save()
        self._refresh_sidebar()
        word = "muted: no alerts or notifications" if muted else "no longer muted"
        self._apply(self.model.add_info(key, f"{conv.name} is {word}.", datetime.now(UTC)))

    def on_open_query(self, nick: str) -> None:
        _key, updates = self.model.open(nick, focus=True)
        self._apply(updates)

    def on_user_action(self, nick: str, action: str) -> None:
        """The People list's context menu."""
        conv = self.model.conversations[self.model.active]
        channel = conv.name if conv.kind == "channel" else None
        if action == "query":
            self.on_open_query(nick)
        elif action == "whois":
            self._send(Message("WHOIS", (nick,)))
        elif action in ("op", "deop", "voice", "devoice") and channel:
            mode = {"op": "+o", "deop": "-o", "voice": "+v", "devoice": "-v"}[action]
            self._send(Message("MODE", (channel, mode, nick)))
        elif action == "kick" and channel:
            self._send(Message("KICK", (channel, nick)))
        elif action == "ban" and channel:
            self._send(Message("MODE", (channel, "+b", f"{nick}!*@*")), Message("KICK", (channel, nick, "Banned")))
        elif action in ("ignore", "unignore"):
            self._local(action, nick)

    def on_connect_dialog(self) -> None:
        self.setup_connection(ask=True)

    def on_reconnect(self) -> None:
        """"Reconnect now" (the button, /reconnect): cut the wait short, or connect again."""
        if self.client is not None and self.client.reconnect_now():
            self._retry_at = None
            self._set_status(f"Reconnecting to {self.settings.host}\u2026")
            return
        now = datetime.now(UTC)
        if self.client is not None:
            self.client.quit("Reconnecting", timeout=1.0)
        self._apply(self.model.disconnected("reconnecting", now))
        self._retry_at = None
        self._start_client()

    def on_theme(self, name: str) -> None:
        self.settings.theme = name
        self.view.apply_theme(name)
        self._redraw()
        self._save()

    def on_zoom(self, step: int) -> None:
        self.settings.font_size = max(7, min(32, self.settings.font_size + step))
        self.view.set_font_size(self.settings.font_size)
        self._save()

    def on_help(self) -> None:
        self._run(interpret("/help", self._context()))

    def on_focus(self) -> None:
        if self.attention:
            self.attention = 0
            self._refresh_title()

    def on_scrolled_top(self) -> None:
        """The reader reached the top: ask for older lines (CHATHISTORY BEFORE)."""
        request = self.model.older_request(self.model.active)
        if request is not None and not self._send(request, quiet=True):
            self.model.conversations[self.model.active].older_pending = False

    def on_channel_browser(self) -> None:
        self.view.open_channel_browser()
        self.view.set_channel_list(self.model.channel_list, done=False)
        self.on_list_refresh()

    def on_list_refresh(self) -> None:
        self._send(Message("LIST", ()))

    def on_join(self, channel: str) -> None:
        key = self.model.key(channel)
        conv = self.model.conversations.get(key)
        if conv is not None and conv.joined:
            self.on_select(key)
            return
        self._run(interpret(f"/join {channel}", self._context()))

    def on_reply(self, line: m.Line) -> None:
        self.replying = line
        self.view.set_reply(f"{line.nick}: {line.text[:80]}")
        self.view.focus_input()

    def on_cancel_reply(self) -> None:
        self.replying = None
        self.view.set_reply(None)

    def on_react(self, line: m.Line, emoji: str) -> None:
        conv = self.model.conversations[self.model.active]
        if not line.msgid or conv.kind == "server":
            return
        if "message-tags" not in self.model.caps:
            self._apply(self.model.add_info(None, "This server does not pass reactions on (no message-tags).",
                                            datetime.now(UTC), "error"))
            return
        msg = Message("TAGMSG", (conv.name,), tags={"+draft/react": emoji, "+draft/reply": line.msgid})
        if self._send(msg) and "echo-message" not in self.model.caps:
            own = Message("TAGMSG", (conv.name,), f"{self.model.nick}!me@local", dict(msg.tags))
            self._apply(self.model.handle(own, datetime.now(UTC)))

    def on_preferences(self) -> None:
        answer = self._dialog(self.view.ask_preferences, self.settings)
        if answer is None:
            return
        self.settings = answer
        self.model.highlights = list(answer.highlights)
        self._save()

    # -- helpers ---------------------------------------------------------------------------------
    def _context(self) -> Context:
        conv = self.model.conversations[self.model.active]
        return Context(target=None if conv.kind == "server" else conv.name, nick=self.model.nick,
                       chantypes=self.model.chantypes, echo="echo-message" in self.model.caps)

    def _reply_tags(self) -> dict[str, str]:
        line = self.replying
        if line is None or not line.msgid or "message-tags" not in self.model.caps:
            return {}
        return {"+draft/reply": line.msgid}

    def _run(self, out: Outcome) -> None:
        now = datetime.now(UTC)
        if out.error:
            self._apply(self.model.add_info(None, out.error, now, "error"))
        for text in out.info:
            self._apply(self.model.add_info(None, text, now))
        if out.block:
            self._apply(self.model.add_info(None, "\n".join(out.block), now, "block"))
        if out.quit is not None:
            self.on_closing(out.quit)
            return
        if out.action is not None:
            self._local(*out.action)
        if out.send:
            tags = self._reply_tags()
            for msg in out.send:
                if tags and msg.verb == "PRIVMSG":
                    msg.tags.update(tags)
                self.model.note_sent(msg)
            if not self._send(*out.send):
                return
        for target, kind, text in out.own:
            updates = self.model.add_own(target, kind, text, now)
            self._apply(updates)
        if out.open:
            _key, updates = self.model.open(out.open, focus=True)
            self._apply(updates)
        if out.close:
            self.on_close_conversation(self.model.key(out.close))

    def _local(self, name: str, arg: str) -> None:
        """Commands carried out here: /clear, /close, /reconnect, /list, /ignore, /highlight, /mute."""
        model, now = self.model, datetime.now(UTC)
        key = model.active
        conv = model.conversations[key]
        if name == "clear":
            conv.lines.clear()
            conv.first_unread = None
            self._redraw()
        elif name == "close":
            if conv.kind == "server":
                self._apply(model.add_info(None, "The server tab stays open (/quit leaves).", now, "error"))
            else:
                self.on_close_conversation(key)
        elif name == "reconnect":
            self.on_reconnect()
        elif name == "list":
            self.view.open_channel_browser()
            self.view.set_channel_list(model.channel_list, done=False)
        elif name in ("ignore", "unignore"):
            if not arg:
                names = sorted(self.settings.ignored, key=model.fold)
                self._apply(model.add_info(None, "Ignored: " + (", ".join(names) if names else "nobody"), now))
                return
            nick = arg.split()[0]
            kept = [n for n in self.settings.ignored if model.fold(n) != model.fold(nick)]
            if name == "ignore":
                kept.append(nick)
                model.ignored.add(model.fold(nick))
                text = f"Ignoring {nick}: their messages are hidden. /unignore {nick} shows them again."
            else:
                model.ignored.discard(model.fold(nick))
                text = f"No longer ignoring {nick}."
            self.settings.ignored = kept
            self._save()
            self._apply(model.add_info(None, text, now))
            self._refresh_users()
        elif name in ("highlight", "unhighlight"):
            if not arg:
                listed = ", ".join(self.settings.highlights) or "none besides your nickname"
                self._apply(model.add_info(None, f"Highlight words: {listed}", now))
                return
            words = [w for w in self.settings.highlights if w.lower() != arg.lower()]
            if name == "highlight":
                words.append(arg)
            self.settings.highlights = words
            model.highlights = list(words)
            self._save()
            self._apply(model.add_info(None, f"Highlight words: {', '.join(words) or 'none'}", now))
        elif name in ("mute", "unmute"):
            if conv.kind == "server":
                self._apply(model.add_info(None, "Open a channel or conversation to mute it.", now, "error"))
            else:
                self.on_mute(key, name == "mute")

    def _send(self, *messages: Message, quiet: bool = False) -> bool:
        if self.client is None or not self.client.connected:
            if not quiet:
                self._apply(self.model.add_info(None, "Not connected: nothing was sent.", datetime.now(UTC), "error"))
            return False
        return all(self.client.send(msg) for msg in messages)

    def _dialog(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run a modal dialog; the queue waits meanwhile (no re-entrant polling)."""
        self._modal = True
        try:
            return func(*args)
        finally:
            self._modal = False

    def _save(self) -> None:
        if self.save_settings:
            try:
                settings_mod.save(replace(self.settings))
            except OSError as exc:
                log.warning("cannot save settings: %s", exc)
