"""What the user typed, turned into IRC messages and local actions.

A table of slash commands (habit 6): ``COMMANDS[name] = (handler, usage, help)``.
:func:`interpret` never sends anything itself; it returns an :class:`Outcome`
the controller carries out. No tkinter, no sockets: tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from server.protocol import Message, is_channel, parse

__all__ = ["COMMANDS", "Context", "Outcome", "interpret", "split_text"]

# Bytes of text per PRIVMSG: 512 minus CRLF, our own ":nick!user@host PRIVMSG
# <target> :" prefix as others will see it (estimated generously) and a margin.
LINE_BUDGET = 512 - 2 - 100


@dataclass
class Context:
    """Where the user is typing."""

    target: str | None  # the channel or nick of the open conversation; None in the server buffer
    nick: str
    chantypes: str = "#&"
    echo: bool = False  # the server echoes our messages back (echo-message)


@dataclass
class Outcome:
    send: list[Message] = field(default_factory=list)
    own: list[tuple[str, str, str]] = field(default_factory=list)  # (target, kind, text) to draw now
    info: list[str] = field(default_factory=list)
    error: str | None = None
    open: str | None = None  # a conversation to open and show
    close: str | None = None  # a conversation to close (/part of a query)
    quit: str | None = None  # quit with this reason
    block: list[str] = field(default_factory=list)  # lines drawn as one aligned block (monospace)
    action: tuple[str, str] | None = None  # a local action for the controller: (name, argument)


def split_text(text: str, budget: int) -> list[str]:
    """``text`` in pieces of at most ``budget`` UTF-8 bytes, at a space when one is
    near, never inside a character."""
    out: list[str] = []
    while len(text.encode()) > budget:
        cut = 0
        size = 0
        for i, c in enumerate(text):
            size += len(c.encode())
            if size > budget:
                cut = i
                break
        space = text.rfind(" ", 0, cut)
        if space > cut // 2:
            cut = space
        out.append(text[:cut])
        text = text[cut:].lstrip(" ") if space > 0 and cut == space else text[cut:]
    if text or not out:
        out.append(text)
    return out


def say(ctx: Context, target: str, text: str, kind: str = "message") -> Outcome:
    """PRIVMSG ``text`` to ``target`` (in several lines if it is long)."""
    out = Outcome()
    budget = LINE_BUDGET - len(target.encode()) - (9 if kind == "action" else 0)
    for piece in split_text(text, budget):
        body = f"\x01ACTION {piece}\x01" if kind == "action" else piece
        out.send.append(Message("PRIVMSG", (target, body)))
        if not ctx.echo:
            out.own.append((target, kind, piece))
    return out


def _need_target(ctx: Context) -> Outcome | None:
    if ctx.target is None:
        return Outcome(error="Open a channel or conversation first (or use /join #channel).")
    return None


def _join(ctx: Context, args: str) -> Outcome:
    parts = args.split()
    if not parts:
        return Outcome(error="Usage: /join #channel [key]")
    names = [n if is_channel(n, ctx.chantypes) else "#" + n for n in parts[0].split(",")]
    params = (",".join(names), *parts[1:2])
    return Outcome(send=[Message("JOIN", params)], open=names[0])


def _part(ctx: Context, args: str) -> Outcome:
    first, _, reason = args.partition(" ")
    if first and is_channel(first, ctx.chantypes):
        channel = first
    elif ctx.target is not None and is_channel(ctx.target, ctx.chantypes):
        channel, reason = ctx.target, args
    elif ctx.target is not None:
        return Outcome(close=ctx.target)  # leaving a private conversation just closes it
    else:
        return Outcome(error="Usage: /part [#channel] [reason]")
    return Outcome(send=[Message("PART", (channel, reason) if reason else (channel,))])


def _msg(ctx: Context, args: str) -> Outcome:
    target, _, text = args.partition(" ")
    if not target or not text:
        return Outcome(error="Usage: /msg nick message")
    return say(ctx, target, text)


def _query(ctx: Context, args: str) -> Outcome:
    target, _, text = args.partition(" ")
    if not target:
        return Outcome(error="Usage: /query nick [message]")
    out = say(ctx, target, text) if text else Outcome()
    out.open = target
    return out


def _me(ctx: Context, args: str) -> Outcome:
    if (bad := _need_target(ctx)) is not None:
        return bad
    assert ctx.target is not None
    return say(ctx, ctx.target, args, "action")


def _notice(ctx: Context, args: str) -> Outcome:
    target, _, text = args.partition(" ")
    if not target or not text:
        return Outcome(error="Usage: /notice target message")
    return Outcome(send=[Message("NOTICE", (target, text))],
                   own=[] if ctx.echo else [(target, "notice", text)])


def _nick(ctx: Context, args: str) -> Outcome:
    if not args.strip():
        return Outcome(error="Usage: /nick newname")
    return Outcome(send=[Message("NICK", (args.split()[0],))])


def _topic(ctx: Context, args: str) -> Outcome:
    first, _, rest = args.partition(" ")
    if first and is_channel(first, ctx.chantypes):
        channel, text = first, rest
    elif ctx.target is not None and is_channel(ctx.target, ctx.chantypes):
        channel, text = ctx.target, args
    else:
        return Outcome(error="Usage: /topic [#channel] [new topic]")
    return Outcome(send=[Message("TOPIC", (channel, text) if text else (channel,))])


def _away(ctx: Context, args: str) -> Outcome:
    return Outcome(send=[Message("AWAY", (args,) if args else ())])


def _back(ctx: Context, args: str) -> Outcome:
    return Outcome(send=[Message("AWAY", ())])


def _whois(ctx: Context, args: str) -> Outcome:
    if not args.strip():
        return Outcome(error="Usage: /whois nick")
    return Outcome(send=[Message("WHOIS", (args.split()[0],))])


def _kick(ctx: Context, args: str) -> Outcome:
    first, _, rest = args.partition(" ")
    if first and is_channel(first, ctx.chantypes):
        channel, (victim, _, reason) = first, rest.partition(" ")
    elif ctx.target is not None and is_channel(ctx.target, ctx.chantypes):
        channel, victim, reason = ctx.target, first, rest
    else:
        return Outcome(error="Usage: /kick [#channel] nick [reason]")
    if not victim:
        return Outcome(error="Usage: /kick [#channel] nick [reason]")
    return Outcome(send=[Message("KICK", (channel, victim, reason) if reason else (channel, victim))])


def _mode(ctx: Context, args: str) -> Outcome:
    words = args.split()
    if not words or not (is_channel(words[0], ctx.chantypes) or words[0] == ctx.nick):
        if ctx.target is None or not is_channel(ctx.target, ctx.chantypes):
            return Outcome(error="Usage: /mode [#channel] [+o nick | +m | ...]")
        words.insert(0, ctx.target)
    return Outcome(send=[Message("MODE", tuple(words))])


def _quit(ctx: Context, args: str) -> Outcome:
    return Outcome(quit=args or "Leaving")


def _quote(ctx: Context, args: str) -> Outcome:
    if not args.strip():
        return Outcome(error="Usage: /quote RAW IRC LINE")
    try:
        return Outcome(send=[parse(args)])
    except ValueError as exc:
        return Outcome(error=f"Not an IRC line: {exc}")


def _names(ctx: Context, args: str) -> Outcome:
    channel = args.split()[0] if args.split() else ctx.target
    if not channel:
        return Outcome(error="Usage: /names #channel")
    return Outcome(send=[Message("NAMES", (channel,))])


def _help(ctx: Context, args: str) -> Outcome:
    name = args.strip().lstrip("/").lower()
    name = ALIASES.get(name, name)
    if name in COMMANDS:
        _, usage, text = COMMANDS[name]
        return Outcome(info=[f"{usage} — {text}"])
    width = max(len(usage) for _, usage, _ in COMMANDS.values())
    lines = ["Type a message and press Enter to send it; Shift+Enter starts a new line. Commands:", ""]
    lines += [f"  {usage:<{width}}  {text}" for _, usage, text in COMMANDS.values()]
    lines += ["", "Keys: Tab completes names, Up/Down recall what you typed, Alt+Up/Down change conversation, "
                  "Ctrl+F searches, Ctrl+End jumps to the latest message, Ctrl+L lists channels, Ctrl+/- zoom."]
    return Outcome(block=lines)


def _local(name: str, need: str = "") -> Handler:
    """A command the controller carries out itself (``need``: the usage when an argument is required)."""

    def handler(ctx: Context, args: str) -> Outcome:
        if need and not args.strip():
            return Outcome(error=f"Usage: {need}")
        return Outcome(action=(name, args.strip()))

    return handler


def _invite(ctx: Context, args: str) -> Outcome:
    words = args.split()
    if len(words) == 1 and ctx.target is not None and is_channel(ctx.target, ctx.chantypes):
        words.append(ctx.target)
    if len(words) < 2:
        return Outcome(error="Usage: /invite nick [#channel]")
    return Outcome(send=[Message("INVITE", (words[0], words[1]))])


def _list(ctx: Context, args: str) -> Outcome:
    return Outcome(send=[Message("LIST", tuple(args.split()[:1]))], action=("list", args.strip()))


def _ban(ctx: Context, args: str) -> Outcome:
    words = args.split()
    if ctx.target is None or not is_channel(ctx.target, ctx.chantypes) or not words:
        return Outcome(error="Usage: /ban nick (in a channel)")
    mask = words[0] if "!" in words[0] or "@" in words[0] else f"{words[0]}!*@*"
    return Outcome(send=[Message("MODE", (ctx.target, "+b", mask))])


Handler = Callable[[Context, str], Outcome]
COMMANDS: dict[str, tuple[Handler, str, str]] = {
    "join": (_join, "/join #channel [key]", "enter a channel (it is created if new)"),
    "part": (_part, "/part [#channel] [reason]", "leave a channel (or close a private chat)"),
    "msg": (_msg, "/msg nick text", "send a private message"),
    "query": (_query, "/query nick [text]", "open a private conversation"),
    "me": (_me, "/me does something", "an action: '* you does something'"),
    "notice": (_notice, "/notice target text", "send a notice"),
    "nick": (_nick, "/nick newname", "change your nickname"),
    "topic": (_topic, "/topic [text]", "show or set the channel topic"),
    "away": (_away, "/away [reason]", "mark yourself away (no reason: back)"),
    "back": (_back, "/back", "no longer away"),
    "whois": (_whois, "/whois nick", "who is this?"),
    "names": (_names, "/names [#channel]", "list who is in a channel"),
    "kick": (_kick, "/kick nick [reason]", "remove someone from the channel (operators)"),
    "mode": (_mode, "/mode [#channel] modes", "channel modes, e.g. /mode +o nick"),
    "ban": (_ban, "/ban nick", "ban someone from the channel (operators)"),
    "invite": (_invite, "/invite nick [#channel]", "invite someone to a channel"),
    "list": (_list, "/list [filter]", "browse the server's channels"),
    "ignore": (_local("ignore"), "/ignore [nick]", "hide someone's messages (no nick: list)"),
    "unignore": (_local("unignore", "/unignore nick"), "/unignore nick", "show someone's messages again"),
    "highlight": (_local("highlight"), "/highlight [word]", "also alert on this word (no word: list)"),
    "unhighlight": (_local("unhighlight", "/unhighlight word"), "/unhighlight word", "stop alerting on it"),
    "mute": (_local("mute"), "/mute", "no alerts from this conversation"),
    "unmute": (_local("unmute"), "/unmute", "alerts from this conversation again"),
    "clear": (_local("clear"), "/clear", "empty this conversation's window"),
    "close": (_local("close"), "/close", "close this conversation (leaving the channel)"),
    "reconnect": (_local("reconnect"), "/reconnect", "connect again now"),
    "quote": (_quote, "/quote LINE", "send a raw IRC line"),
    "help": (_help, "/help [command]", "this help"),
    "quit": (_quit, "/quit [reason]", "leave the server and close"),
}
ALIASES = {"j": "join", "leave": "part", "q": "query", "raw": "quote", "w": "whois", "exit": "quit",
           "wc": "close", "server": "reconnect"}


def interpret(text: str, ctx: Context) -> Outcome:
    """One line the user typed: a command, or a message to the open conversation."""
    if text.startswith("/") and not text.startswith("//"):
        name, _, args = text[1:].partition(" ")
        name = ALIASES.get(name.lower(), name.lower())
        if name not in COMMANDS:
            return Outcome(error=f"Unknown command /{name}. Type /help for the list (or /quote to send raw IRC).")
        return COMMANDS[name][0](ctx, args.strip(" ") if name != "quote" else args)
    if text.startswith("//"):
        text = text[1:]
    if (bad := _need_target(ctx)) is not None:
        return bad
    assert ctx.target is not None
    return say(ctx, ctx.target, text)
