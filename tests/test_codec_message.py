"""The Message model: parse/format round trips, refusals, tag escaping, errors."""

from __future__ import annotations

import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.protocol import (
    MAX_BODY,
    MAX_TAGS,
    Decoder,
    InputTooLong,
    InvalidUtf8,
    LocalProtocolError,
    MalformedMessage,
    Message,
    ProtocolError,
    RemoteProtocolError,
    build,
    error_reply,
    escape_tag_value,
    format_tags,
    numerics,
    parse,
    unescape_tag_value,
)

# -- strategies ------------------------------------------------------------------

# Characters that trip up IRC parsers, mixed into otherwise arbitrary text: the
# tag-escaping set, separators, and whitespace that is *not* an IRC SPACE.
TRICKY = " ;\\\r\n=:@!#+/\t\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u3000"
ANY_CHAR = st.characters(exclude_categories=("Cs",))  # surrogates cannot be UTF-8 encoded


def text_from(chars: st.SearchStrategy[str], *, min_size: int = 0, max_size: int = 30) -> st.SearchStrategy[str]:
    return st.text(st.one_of(st.sampled_from(TRICKY), chars), min_size=min_size, max_size=max_size)


def without(*bad: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([c for c in TRICKY if c not in bad]), ANY_CHAR.filter(lambda c: c not in bad))


# IRCv3 message-tags: key = ['+'] [vendor '/'] key_name; vendor is a host name.
TAG_KEYS = st.from_regex(r"\+?(?:[A-Za-z0-9][A-Za-z0-9.-]{0,10}/)?[A-Za-z0-9-]{1,10}", fullmatch=True)
TAG_VALUES = text_from(ANY_CHAR.filter(lambda c: c != "\0"))
TAGS = st.dictionaries(TAG_KEYS, TAG_VALUES, max_size=4)
SOURCES = st.text(without(" ", "\r", "\n", "\0"), min_size=1, max_size=30)
COMMANDS = st.from_regex(r"[A-Za-z]{1,12}|[0-9]{3}", fullmatch=True)
MIDDLE_PARAMS = st.builds(
    operator.add,
    st.text(without(" ", "\r", "\n", "\0", ":"), min_size=1, max_size=1),
    st.text(without(" ", "\r", "\n", "\0"), max_size=15),
)
LAST_PARAMS = st.text(without("\r", "\n", "\0"), max_size=40)
PARAMS = st.builds(
    lambda middle, last: (*middle, *last),
    st.lists(MIDDLE_PARAMS, max_size=6),
    st.lists(LAST_PARAMS, max_size=1),
)
MESSAGES = st.builds(Message, COMMANDS, PARAMS, st.none() | SOURCES, TAGS)


# -- round trips -----------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(MESSAGES)
def test_parse_of_to_line_round_trips(message: Message) -> None:
    line = message.to_line()
    assert not any(c in line for c in "\r\n\0")
    assert parse(line) == message


@settings(max_examples=200, deadline=None)
@given(MESSAGES)
def test_decoder_of_to_bytes_round_trips(message: Message) -> None:
    wire = message.to_bytes()
    assert wire.endswith(b"\r\n")
    if message.tags:
        tag_len = wire.index(b" ") + 1
        body_len = len(wire) - tag_len
    else:
        tag_len, body_len = 0, len(wire)
    expected: list[object] = [message]
    if tag_len > MAX_TAGS or body_len > MAX_BODY:
        expected = [InputTooLong]
    out = Decoder().feed(wire)
    assert [m if isinstance(m, Message) else type(m) for m in out] == expected


@settings(max_examples=200, deadline=None)
@given(message=MESSAGES, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_decoder_round_trips_at_random_splits(message: Message, cuts: list[int]) -> None:
    # Without tags, so only the body limit applies.
    message = Message(message.command, message.params, message.source)
    wire = message.to_bytes()
    if len(wire) > MAX_BODY:
        return
    decoder = Decoder()
    out = []
    start = 0
    for cut in sorted(c for c in set(cuts) if c <= len(wire)):
        out.extend(decoder.feed(wire[start:cut]))
        start = cut
    out.extend(decoder.feed(wire[start:]))
    assert out == [message]


# Whatever fields a message has, formatting either refuses with LocalProtocolError
# or produces a line that parses back to the very same message.
WILD_TEXT = st.text(st.sampled_from(" :\r\n\0@;=\\!#aZ9\t/+.-\u00e9"), max_size=8)


@settings(max_examples=500, deadline=None)
@given(
    command=WILD_TEXT,
    params=st.lists(WILD_TEXT, max_size=4),
    source=st.none() | WILD_TEXT,
    tags=st.dictionaries(WILD_TEXT, WILD_TEXT, max_size=3),
)
def test_formatting_never_produces_an_invalid_line(
    command: str, params: list[str], source: str | None, tags: dict[str, str]
) -> None:
    message = Message(command, tuple(params), source, tags)
    try:
        line = message.to_line()
    except LocalProtocolError:
        return
    assert not any(c in line for c in "\r\n\0")
    assert parse(line) == message


# -- refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        Message("PRIVMSG", ("#a", "x\ry")),
        Message("PRIVMSG", ("#a", "x\ny")),
        Message("PRIVMSG", ("#a", "x\0y")),
        Message("PRIVMSG", ("#a\r", "x")),
        Message("PRIVMSG", ("#a\n", "x")),
        Message("PRIVMSG", ("#\0a", "x")),
        Message("PRIVMSG", ("#a", "x"), source="n!u@h\r"),
        Message("PRIVMSG", ("#a", "x"), source="n!u@h\n"),
        Message("PRIVMSG", ("#a", "x"), source="n\0!u@h"),
        Message("PRIVMSG", ("#a", "x"), tags={"k": "v\0"}),
        Message("PRIVMSG", ("#a", "x"), tags={"k\r": "v"}),
        Message("PRIVMSG", ("#a", "x"), tags={"k\n": "v"}),
        Message("PRIVMSG\r\n", ("#a", "x")),
    ],
    ids=[
        "cr-last", "lf-last", "nul-last", "cr-middle", "lf-middle", "nul-middle",
        "cr-source", "lf-source", "nul-source", "nul-tag-value", "cr-tag-key", "lf-tag-key", "crlf-command",
    ],
)  # fmt: skip
def test_cr_lf_nul_are_refused(message: Message) -> None:
    with pytest.raises(LocalProtocolError):
        message.to_line()
    with pytest.raises(LocalProtocolError):
        message.to_bytes()


@pytest.mark.parametrize(
    "params",
    [("a b", "x"), (":a", "x"), ("", "x"), ("#a", "", "x"), ("#a", ":", "x")],
    ids=["space", "leading-colon", "empty-first", "empty-middle", "lone-colon"],
)
def test_bad_middle_params_are_refused(params: tuple[str, ...]) -> None:
    with pytest.raises(LocalProtocolError):
        Message("PRIVMSG", params).to_line()


@pytest.mark.parametrize(
    ("last", "wire"),
    [("", ":"), ("a b", ":a b"), (":a", "::a"), (":", "::"), (" ", ": "), ("a", "a"), ("a:b", "a:b")],
)
def test_last_param_gets_a_colon_only_when_needed(last: str, wire: str) -> None:
    assert Message("PRIVMSG", ("#a", last)).to_line() == f"PRIVMSG #a {wire}"


@pytest.mark.parametrize(
    "command",
    ["", "PRIV MSG", "PRIV1", "12", "1234", "PRIVMSG ", ":PRIVMSG", "\u00c9T\u00c9", "\u0967\u0968\u0969", "A-B"],
)
def test_bad_commands_are_refused(command: str) -> None:
    with pytest.raises(LocalProtocolError):
        Message(command, ("x",)).to_line()


@pytest.mark.parametrize("command", ["PRIVMSG", "privmsg", "001", "433", "x"])
def test_good_commands_are_accepted(command: str) -> None:
    assert Message(command).to_line() == command


@pytest.mark.parametrize("source", ["", "a b", " ", "a\tb c"])
def test_bad_sources_are_refused(source: str) -> None:
    with pytest.raises(LocalProtocolError):
        Message("PING", ("x",), source=source).to_line()


@pytest.mark.parametrize("key", ["", "a b", "a=b", "a;b", "+", "vendor/", "/x", "a\\b", "\u00e9", "a/b/c"])
def test_bad_tag_keys_are_refused(key: str) -> None:
    with pytest.raises(LocalProtocolError):
        format_tags({key: "v"})
    with pytest.raises(LocalProtocolError):
        Message("PING", tags={key: "v"}).to_line()


def test_local_protocol_error_is_a_value_error() -> None:
    assert issubclass(LocalProtocolError, ValueError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)


# -- tag escaping ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("", ""),
        ("plain", "plain"),
        (";", "\\:"),
        (" ", "\\s"),
        ("\\", "\\\\"),
        ("\r", "\\r"),
        ("\n", "\\n"),
        ("a;b c\\d\re\nf", "a\\:b\\sc\\\\d\\re\\nf"),
        ("=:@+\u00e9", "=:@+\u00e9"),
    ],
)
def test_escape_tag_value(raw: str, escaped: str) -> None:
    assert escape_tag_value(raw) == escaped
    assert unescape_tag_value(escaped) == raw


@pytest.mark.parametrize(
    ("escaped", "raw"),
    [
        ("\\", ""),  # a lone trailing backslash is dropped
        ("abc\\", "abc"),
        ("a\\\\\\", "a\\"),  # an escaped backslash, then a lone one
        ("\\x", "x"),  # an unknown escape keeps its character
        ("\\1", "1"),
        ("\\b\\t", "bt"),
        ("\\S\\R\\N", "SRN"),  # escapes are case sensitive
        ("\\:\\s\\r\\n\\\\", "; \r\n\\"),
        ("\\\\s", "\\s"),
        ("\\;", ";"),
    ],
)
def test_unescape_tag_value(escaped: str, raw: str) -> None:
    assert unescape_tag_value(escaped) == raw


@settings(max_examples=300, deadline=None)
@given(text_from(ANY_CHAR, max_size=50))
def test_tag_escaping_round_trips(value: str) -> None:
    escaped = escape_tag_value(value)
    assert not any(c in escaped for c in "; \r\n")
    assert unescape_tag_value(escaped) == value


def test_format_tags() -> None:
    assert format_tags({}) == ""
    assert format_tags({"a": "", "b": "x y", "+draft/reply": "1", "example.com/k": "a;b"}) == (
        "a;b=x\\sy;+draft/reply=1;example.com/k=a\\:b"
    )


def test_tags_are_parsed_and_unescaped() -> None:
    message = parse("@a;b=;c=x\\sy;+draft/reply=1;example.com/k=a\\:b :n!u@h PRIVMSG #c :hi")
    assert message.tags == {"a": "", "b": "", "c": "x y", "+draft/reply": "1", "example.com/k": "a;b"}


# -- parse -------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["", " ", ":src", ":src ", "@a=b", "@a=b :src", ":src :trailing", ":x"])
def test_parse_without_a_command_is_malformed(line: str) -> None:
    with pytest.raises(MalformedMessage):
        parse(line)


@pytest.mark.parametrize("space", ["\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\u3000"])
def test_parse_splits_on_space_only(space: str) -> None:
    # Only ASCII SPACE separates parameters; other whitespace is an ordinary character.
    assert parse(f"PRIVMSG #a{space}b :hi{space}").params == (f"#a{space}b", f"hi{space}")
    assert parse(f"MODE #c +o{space}x").params == ("#c", f"+o{space}x")


def test_parse_tolerates_several_spaces() -> None:
    assert parse("  :src   PRIVMSG   #a    b   :c  d ") == Message("PRIVMSG", ("#a", "b", "c  d "), "src")


# -- the model ---------------------------------------------------------------------


def test_build_and_message_basics() -> None:
    tags = {"time": "2024-01-01T00:00:00.000Z"}
    message = build("privmsg", "#c", "hi there", source="n!u@h", tags=tags)
    assert message == Message("privmsg", ("#c", "hi there"), "n!u@h", {"time": "2024-01-01T00:00:00.000Z"})
    tags["time"] = "changed"
    assert message.tags["time"] == "2024-01-01T00:00:00.000Z"  # build copies the tags
    assert message.verb == "PRIVMSG"
    assert message.command == "privmsg"
    assert str(message) == message.to_line() == "@time=2024-01-01T00:00:00.000Z :n!u@h privmsg #c :hi there"
    assert message.to_bytes() == message.to_line().encode() + b"\r\n"
    assert build("PING") == Message("PING")


def test_params_given_as_a_list_become_a_tuple() -> None:
    message = Message("JOIN", ["#a"])  # type: ignore[arg-type]
    assert message.params == ("#a",)
    assert message == Message("JOIN", ("#a",))


def test_to_bytes_is_utf8() -> None:
    assert Message("PRIVMSG", ("#a", "caf\u00e9 \u2603")).to_bytes() == "PRIVMSG #a :caf\u00e9 \u2603\r\n".encode()


# -- RemoteProtocolError.reply -----------------------------------------------------


def test_numeric_reply() -> None:
    error = RemoteProtocolError(numerics.ERR_NOSUCHNICK, "bob", text="No such nick/channel")
    reply = error_reply(error, "irc.example", "alice")
    assert reply == Message("401", ("alice", "bob", "No such nick/channel"), source="irc.example")
    assert reply.to_line() == ":irc.example 401 alice bob :No such nick/channel"
    assert parse(":server 401 nick target :text") == error_reply(RemoteProtocolError("401", "target", text="text"),
        "server", "nick"
    )


def test_numeric_reply_before_registration_uses_a_star() -> None:
    reply = error_reply(RemoteProtocolError(numerics.ERR_NOTREGISTERED, text="You have not registered"), "srv", "")
    assert reply.to_line() == ":srv 451 * :You have not registered"


def test_numeric_reply_with_empty_text() -> None:
    assert error_reply(RemoteProtocolError("401", "bob"), "srv", "me").to_line() == ":srv 401 me bob :"


@pytest.mark.parametrize("kind", ["FAIL", "WARN", "NOTE"])
def test_standard_reply_has_no_nick(kind: str) -> None:
    error = RemoteProtocolError(kind, "JOIN", "CHANNEL_FULL", "#c", text="Channel is full")
    line = error_reply(error, "srv", "alice").to_line()
    assert line == f":srv {kind} JOIN CHANNEL_FULL #c :Channel is full"


def test_fail_constructor() -> None:
    error = RemoteProtocolError.fail("CHATHISTORY", "INVALID_PARAMS", "x", text="Bad")
    assert (error.numeric, error.params, error.text) == ("FAIL", ("CHATHISTORY", "INVALID_PARAMS", "x"), "Bad")
    assert error_reply(error, "srv", "alice").to_line() == ":srv FAIL CHATHISTORY INVALID_PARAMS x Bad"
    assert isinstance(error, ProtocolError)
    assert not isinstance(error, ValueError)


def test_error_subclasses() -> None:
    assert error_reply(InputTooLong(), "s", "n").to_line() == ":s 417 n :Input line was too long"
    assert error_reply(InvalidUtf8("NICK"), "s", "n").params[:2] == ("NICK", "INVALID_UTF8")
    assert error_reply(InvalidUtf8(""), "s", "n").params[0] == "*"
    assert error_reply(MalformedMessage("why", "PING"), "s", "n").to_line() == ":s 400 n PING :Malformed message: why"
    for cls in (InputTooLong, InvalidUtf8, MalformedMessage):
        assert issubclass(cls, RemoteProtocolError)


# -- numerics ----------------------------------------------------------------------


def test_numerics_are_three_digit_strings_with_modern_names() -> None:
    names = [name for name in vars(numerics) if name.isupper()]
    assert len(names) > 50
    for name in names:
        value = getattr(numerics, name)
        assert name.startswith(("RPL_", "ERR_")), name
        assert isinstance(value, str)
        assert len(value) == 3
        assert value.isdigit()
        assert value.isascii()
    assert numerics.ERR_NICKNAMEINUSE == "433"
    assert numerics.RPL_WELCOME == "001"
