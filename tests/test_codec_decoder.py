"""The stream Decoder: every vector in every chunking, and every limit.

Chunkings follow gunicorn's ``tests/treq.py``: whole, line by line, byte by byte
and at random split points. Limits and odd input (bare LF, empty lines, long
lines, tag sections, buffer floods, bad UTF-8, NUL, stray CR) are decided here,
in the codec, and each is reported in-stream as a RemoteProtocolError.
"""

from __future__ import annotations

import doctest
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parser_tests import data

from server.protocol import (
    MAX_BODY,
    MAX_TAGS,
    Decoder,
    InputTooLong,
    InvalidUtf8,
    MalformedMessage,
    Message,
    RemoteProtocolError,
    error_reply,
    numerics,
)
from server.protocol import framing as framing_module

VECTORS: list[dict[str, Any]] = data.msg_split["tests"]
# The flood cap: the longest legal line (tags + body) is never cut off by it.
CAP = MAX_TAGS + MAX_BODY


def expected_message(atoms: dict[str, Any]) -> Message:
    return Message(atoms["verb"], tuple(atoms.get("params") or ()), atoms.get("source"), dict(atoms.get("tags") or {}))


EXPECTED = [expected_message(v["atoms"]) for v in VECTORS]
WIRE_LINES = [v["input"].encode("utf-8") + b"\r\n" for v in VECTORS]
STREAM = b"".join(WIRE_LINES)


def feed_all(decoder: Decoder, chunks: Iterable[bytes]) -> list[Message | RemoteProtocolError]:
    out: list[Message | RemoteProtocolError] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def split_at(data: bytes, cuts: Iterable[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted(set(cuts)):
        yield data[start:cut]
        start = cut
    yield data[start:]


def body_line(length: int, command: str = "PRIVMSG #c :") -> bytes:
    """A line body of exactly ``length`` bytes (without the line ending)."""
    assert length >= len(command)
    return command.encode() + b"a" * (length - len(command))


# -- every vector, every chunking ------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    list(zip(WIRE_LINES, EXPECTED, strict=True)),
    ids=[v["input"].encode("unicode_escape").decode()[:60] for v in VECTORS],
)
def test_vector_whole_and_byte_by_byte(wire: bytes, expected: Message) -> None:
    assert Decoder().feed(wire) == [expected]
    decoder = Decoder()
    assert feed_all(decoder, (wire[i : i + 1] for i in range(len(wire)))) == [expected]
    assert decoder.buffered == 0


def test_stream_whole() -> None:
    assert Decoder().feed(STREAM) == EXPECTED


def test_stream_line_by_line() -> None:
    assert feed_all(Decoder(), WIRE_LINES) == EXPECTED


def test_stream_byte_by_byte() -> None:
    decoder = Decoder()
    out: list[Message | RemoteProtocolError] = []
    for i in range(len(STREAM)):
        out.extend(decoder.feed(STREAM[i : i + 1]))
    assert out == EXPECTED


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_stream_random_splits(cuts: list[int]) -> None:
    assert feed_all(Decoder(), split_at(STREAM, cuts)) == EXPECTED


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_stream_random_splits_and_line_endings(data: st.DataObject) -> None:
    # Each line ends in CRLF or a bare LF, chosen at random, then the stream is cut.
    endings = data.draw(st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=len(VECTORS), max_size=len(VECTORS)))
    stream = b"".join(v["input"].encode() + end for v, end in zip(VECTORS, endings, strict=True))
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=30))
    assert feed_all(Decoder(), split_at(stream, cuts)) == EXPECTED


def test_empty_feed_and_partial_line_yield_nothing() -> None:
    decoder = Decoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"PING :x") == []
    assert decoder.buffered == len(b"PING :x")
    assert decoder.feed(b"\r") == []
    assert decoder.feed(b"\n") == [Message("PING", ("x",))]
    assert decoder.buffered == 0


def test_docstring_example() -> None:
    result = doctest.testmod(framing_module, raise_on_error=False)
    assert result.attempted >= 2
    assert result.failed == 0


# -- line endings and empty lines -------------------------------------------------


def test_bare_lf_and_crlf() -> None:
    out = Decoder().feed(b"NICK a\nNICK b\r\nNICK c\n")
    assert out == [Message("NICK", ("a",)), Message("NICK", ("b",)), Message("NICK", ("c",))]


def test_empty_and_blank_lines_are_skipped() -> None:
    out = Decoder().feed(b"\r\n\n\r\n   \r\n \nPING :x\r\n\r\n")
    assert out == [Message("PING", ("x",))]


def test_stray_cr_is_malformed() -> None:
    # A CR inside a line is not a line break; it would end up in a parameter that
    # cannot be sent on. The line is refused and the next one decoded.
    out = Decoder().feed(b"PRIVMSG #a :hi\rNICK x\r\nNICK y\r\n")
    assert len(out) == 2
    assert isinstance(out[0], MalformedMessage)
    assert error_reply(out[0], "srv", "me").params[:2] == ("me", "PRIVMSG")
    assert out[1] == Message("NICK", ("y",))
    assert isinstance(Decoder().feed(b"NICK a\r\r\n")[0], MalformedMessage)


# -- the body limit: 512 bytes including CRLF ---------------------------------------


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_body_of_510_bytes_is_accepted(ending: bytes) -> None:
    line = body_line(MAX_BODY - 2)
    (message,) = Decoder().feed(line + ending)
    assert isinstance(message, Message)
    assert message.params == ("#c", "a" * (MAX_BODY - 2 - len("PRIVMSG #c :")))


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_body_of_511_bytes_is_refused(ending: bytes) -> None:
    decoder = Decoder()
    out = decoder.feed(body_line(MAX_BODY - 1) + ending + b"PING :next\r\n")
    assert len(out) == 2
    assert isinstance(out[0], InputTooLong)
    reply = error_reply(out[0], "irc.example", "alice")
    assert reply.command == numerics.ERR_INPUTTOOLONG == "417"
    assert reply.source == "irc.example"
    assert reply.params[0] == "alice"
    assert reply.to_line() == ":irc.example 417 alice :Input line was too long"
    assert out[1] == Message("PING", ("next",))


def test_body_limit_counts_bytes_not_characters() -> None:
    prefix = b"PRIVMSG #c :"
    snowmen = (MAX_BODY - 2 - len(prefix)) // 3  # U+2603 is 3 bytes in UTF-8
    fits = prefix + "\u2603".encode() * snowmen
    fits += b"a" * (MAX_BODY - 2 - len(fits))
    assert len(fits) == MAX_BODY - 2
    (ok,) = Decoder().feed(fits + b"\r\n")
    assert isinstance(ok, Message)
    (too_long,) = Decoder().feed(fits + b"a\r\n")
    assert isinstance(too_long, InputTooLong)


def test_tag_section_does_not_count_against_the_body() -> None:
    tags = b"@" + b"k=" + b"v" * 1000 + b" "
    (message,) = Decoder().feed(tags + body_line(MAX_BODY - 2) + b"\r\n")
    assert isinstance(message, Message)
    assert message.tags == {"k": "v" * 1000}
    (refused,) = Decoder().feed(tags + body_line(MAX_BODY - 1) + b"\r\n")
    assert isinstance(refused, InputTooLong)


def test_custom_body_limit() -> None:
    decoder = Decoder(max_body=16)
    assert decoder.feed(b"PRIVMSG #c :ab\r\n") == [Message("PRIVMSG", ("#c", "ab"))]  # 16 bytes with CRLF
    assert isinstance(decoder.feed(b"PRIVMSG #c :abc\r\n")[0], InputTooLong)


# -- the tag limit: 8191 bytes including '@' and the space after it -------------------


def tag_section(length: int) -> bytes:
    """A tag section of exactly ``length`` bytes, '@' and trailing space included."""
    section = b"@k=" + b"v" * (length - len(b"@k= "))
    return section + b" "


def test_tag_section_of_8191_bytes_is_accepted() -> None:
    section = tag_section(MAX_TAGS)
    assert len(section) == MAX_TAGS
    (message,) = Decoder().feed(section + b"PING :x\r\n")
    assert message == Message("PING", ("x",), tags={"k": "v" * (MAX_TAGS - 4)})


def test_tag_section_of_8192_bytes_is_refused() -> None:
    out = Decoder().feed(tag_section(MAX_TAGS + 1) + b"PING :x\r\nPING :y\r\n")
    assert len(out) == 2
    assert isinstance(out[0], InputTooLong)
    assert out[1] == Message("PING", ("y",))


def test_tag_section_without_a_space_counts_whole_line() -> None:
    (too_long,) = Decoder().feed(b"@" + b"k" * MAX_TAGS + b"\r\n")
    assert isinstance(too_long, InputTooLong)


def test_longest_legal_line_fed_in_small_chunks_is_accepted() -> None:
    # Tags and body both at their limit: the flood cap must not cut this line off.
    wire = tag_section(MAX_TAGS) + body_line(MAX_BODY - 2) + b"\r\n"
    assert len(wire) == CAP
    decoder = Decoder()
    out = feed_all(decoder, (wire[i : i + 7] for i in range(0, len(wire), 7)))
    assert len(out) == 1
    assert isinstance(out[0], Message)
    assert out[0].command == "PRIVMSG"


# -- the buffer cap: flooding without a newline ------------------------------------


@pytest.mark.parametrize("chunk_size", [1000, CAP + 1, 3 * CAP], ids=["small-chunks", "cap+1", "one-big-chunk"])
def test_flood_without_newline_gives_one_error_then_recovers(chunk_size: int) -> None:
    decoder = Decoder()
    flood = b"A" * (5 * CAP)
    out = []
    for i in range(0, len(flood), chunk_size):
        out.extend(decoder.feed(flood[i : i + chunk_size]))
        # The flood is never held in memory beyond the cap.
        assert decoder.buffered <= CAP
    assert len(out) == 1
    assert isinstance(out[0], InputTooLong)
    # The rest of the flooded line is thrown away; the next line is decoded.
    assert decoder.feed(b"still flooding\r\nPING :back\r\n") == [Message("PING", ("back",))]
    assert decoder.feed(b"PING :again\r\n") == [Message("PING", ("again",))]
    assert decoder.buffered == 0


def test_flood_just_under_the_cap_waits_for_the_newline() -> None:
    decoder = Decoder()
    assert decoder.feed(b"A" * CAP) == []
    assert decoder.buffered == CAP
    out = decoder.feed(b"\r\nPING :x\r\n")
    assert len(out) == 2
    assert isinstance(out[0], InputTooLong)
    assert out[1] == Message("PING", ("x",))


def test_flood_then_newline_in_the_same_chunk() -> None:
    out = Decoder().feed(b"A" * (3 * CAP) + b"\r\nPING :x\r\n")
    assert len(out) == 2
    assert isinstance(out[0], InputTooLong)
    assert out[1] == Message("PING", ("x",))


def test_two_floods_give_two_errors() -> None:
    decoder = Decoder()
    out = decoder.feed(b"A" * (2 * CAP))
    out += decoder.feed(b"\nPING :x\n")
    out += decoder.feed(b"B" * (2 * CAP))
    out += decoder.feed(b"\nPING :y\n")
    assert [type(item) for item in out] == [InputTooLong, Message, InputTooLong, Message]


# -- UTF-8 -------------------------------------------------------------------------


def test_valid_utf8_is_decoded() -> None:
    (message,) = Decoder().feed("PRIVMSG #caf\u00e9 :h\u00e9llo \u2603 \U0001f600\r\n".encode())
    assert message == Message("PRIVMSG", ("#caf\u00e9", "h\u00e9llo \u2603 \U0001f600"))


def test_invalid_utf8_strict_is_refused_with_fail() -> None:
    decoder = Decoder()
    out = decoder.feed(b"PRIVMSG #a :caf\xe9\r\nPING :x\r\n")
    assert len(out) == 2
    error = out[0]
    assert isinstance(error, InvalidUtf8)
    line = error_reply(error, "irc.example", "alice").to_line()
    assert line.startswith(":irc.example FAIL PRIVMSG INVALID_UTF8 :")
    assert "alice" not in line
    assert out[1] == Message("PING", ("x",))


def test_invalid_utf8_command_is_found_behind_tags_and_source() -> None:
    (error,) = Decoder().feed(b"@a=b :n!u@h privmsg #a :\xff\r\n")
    assert isinstance(error, InvalidUtf8)
    assert error_reply(error, "srv", "me").params[:2] == ("PRIVMSG", "INVALID_UTF8")


def test_invalid_utf8_without_a_command_uses_a_star() -> None:
    (error,) = Decoder().feed(b"\xff\xfe\r\n")
    assert isinstance(error, InvalidUtf8)
    assert error_reply(error, "srv", "me").params[:2] == ("*", "INVALID_UTF8")


def test_invalid_utf8_lenient_is_latin1() -> None:
    decoder = Decoder(strict=False)
    out = decoder.feed(b"PRIVMSG #a :caf\xe9\r\nPRIVMSG #a :caf\xc3\xa9\r\n")
    assert out == [Message("PRIVMSG", ("#a", "caf\u00e9")), Message("PRIVMSG", ("#a", "caf\u00e9"))]


# -- malformed lines ---------------------------------------------------------------


def test_nul_is_malformed_with_400() -> None:
    out = Decoder().feed(b"PRIVMSG #a :a\x00b\r\nPING :x\r\n")
    assert len(out) == 2
    error = out[0]
    assert isinstance(error, MalformedMessage)
    reply = error_reply(error, "irc.example", "alice")
    assert reply.command == numerics.ERR_UNKNOWNERROR == "400"
    assert reply.to_line() == ":irc.example 400 alice PRIVMSG :Malformed message: NUL character"
    assert out[1] == Message("PING", ("x",))


def test_nul_is_malformed_in_lenient_mode_too() -> None:
    (error,) = Decoder(strict=False).feed(b"PING \x00\r\n")
    assert isinstance(error, MalformedMessage)


@pytest.mark.parametrize(
    "line",
    [b":irc.example", b":irc.example   ", b"@a=b", b"@a=b ", b"@a=b :irc.example", b":src :trailing", b"@a :"],
    ids=["source", "source-spaces", "tags", "tags-space", "tags-source", "source-trailing", "tags-colon"],
)
def test_line_without_a_command_is_malformed(line: bytes) -> None:
    out = Decoder().feed(line + b"\r\nPING :x\r\n")
    assert len(out) == 2
    assert isinstance(out[0], MalformedMessage)
    assert error_reply(out[0], "srv", "").to_line().startswith(":srv 400 * * :Malformed message")
    assert out[1] == Message("PING", ("x",))


# -- arbitrary bytes ---------------------------------------------------------------


# Uniform random bytes rarely form line structure; the second strategy makes
# lines out of the bytes the decoder treats specially.
JUNK = st.binary(max_size=1500) | st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"@", b":", b"=", b";", b"\x00", b"\xff", b"\xc3", b"a"]),
    max_size=300,
).map(b"".join)


@pytest.mark.parametrize(
    "decoder_args",
    [{}, {"strict": False}, {"max_body": 16, "max_tags": 32}],
    ids=["strict", "lenient", "tiny-limits"],
)
@settings(max_examples=150, deadline=None)
@given(junk=JUNK, cuts=st.lists(st.integers(min_value=0, max_value=1500), max_size=8))
def test_random_bytes_never_raise(decoder_args: dict[str, Any], junk: bytes, cuts: list[int]) -> None:
    decoder = Decoder(**decoder_args)
    out = feed_all(decoder, split_at(junk, [c for c in cuts if c <= len(junk)]))
    for item in out:
        assert isinstance(item, Message | RemoteProtocolError)
        if isinstance(item, RemoteProtocolError):
            # Every error can be answered with a well-formed line.
            assert error_reply(item, "srv", "nick").to_line()
    assert decoder.buffered <= decoder.max_tags + decoder.max_body
    # Whatever came before, the decoder keeps working after the next newline.
    tail = decoder.feed(b"\r\nPING :after\r\n")
    assert tail[-1] == Message("PING", ("after",))
