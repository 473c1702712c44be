"""Casemapping, name validation, ``nick!user@host`` and wildcard masks.

The shared vectors (userhost-split, mask-match, validate-hostname) are in
test_codec_vectors.py; these are our own edge cases.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.protocol import (
    Hostmask,
    casefold,
    is_channel,
    is_valid_channel,
    is_valid_hostname,
    is_valid_nick,
    is_valid_user,
    mask_match,
    normalize_mask,
    split_userhost,
)
from server.protocol.casemap import CASEMAPPINGS

# -- casefold ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "name", "folded"),
    [
        ("rfc1459", "NiCk[]\\~", "nick{}|^"),
        ("rfc1459", "nick{}|^", "nick{}|^"),
        ("ascii", "NiCk[]\\~", "nick[]\\~"),
        ("strict-rfc1459", "NiCk[]\\~", "nick{}|~"),
        ("rfc1459", "\u00c9T\u00c9", "\u00c9t\u00c9"),  # only ASCII letters fold
        ("ascii", "\u00c9T\u00c9", "\u00c9t\u00c9"),
        ("rfc1459", "#Chan-1_", "#chan-1_"),
        ("rfc1459", "", ""),
    ],
)
def test_casefold(mapping: str, name: str, folded: str) -> None:
    assert casefold(name, mapping) == folded


def test_casefold_defaults_to_rfc1459() -> None:
    assert casefold("A[") == "a{"


def test_casefold_unknown_mapping() -> None:
    with pytest.raises(KeyError):
        casefold("x", "utf8")


# -- nick, channel, user -------------------------------------------------------------


@pytest.mark.parametrize("nick", ["a", "Z", "[x]", "`_^{|}-", "\\o", "a-1", "_", "x" * 30, "N1ck"])
def test_valid_nicks(nick: str) -> None:
    assert is_valid_nick(nick)


@pytest.mark.parametrize(
    "nick",
    ["", "1abc", "-abc", "a b", "a!b", "a@b", "#chan", "&chan", ":a", "a,b", "a*b", "a?b", "a.b", "x" * 31,
     "\u00e9", "caf\u00e9", "a\0", "a\r", "\uff21"],
)  # fmt: skip
def test_invalid_nicks(nick: str) -> None:
    assert not is_valid_nick(nick)


def test_nick_maxlen() -> None:
    assert is_valid_nick("abc", maxlen=3)
    assert not is_valid_nick("abcd", maxlen=3)


@pytest.mark.parametrize("name", ["#a", "##", "#" + "a" * 63, "#caf\u00e9", "#a:b", "#a!b", "#\u2603"])
def test_valid_channels(name: str) -> None:
    assert is_valid_channel(name)


@pytest.mark.parametrize(
    "name",
    ["", "#", "a", "&a", "+a", "#" + "a" * 64, "#a b", "#a,b", "#a\x07", "#a\0", "#a\r", "#a\n", " #a"],
)
def test_invalid_channels(name: str) -> None:
    assert not is_valid_channel(name)


def test_channel_types_and_maxlen() -> None:
    assert is_valid_channel("&a", chantypes="#&")
    assert not is_valid_channel("#a", chantypes="&")
    assert is_valid_channel("#abc", maxlen=4)
    assert not is_valid_channel("#abcd", maxlen=4)


@pytest.mark.parametrize(("name", "expected"), [("#x", True), ("&x", True), ("#", True), ("", False), ("x", False)])
def test_is_channel(name: str, expected: bool) -> None:
    assert is_channel(name) is expected


def test_is_channel_with_chantypes() -> None:
    assert not is_channel("&x", chantypes="#")


@pytest.mark.parametrize("user", ["a", "~a", "user_1", "x" * 16, "\u00e9", "a.b-c"])
def test_valid_users(user: str) -> None:
    assert is_valid_user(user)


@pytest.mark.parametrize("user", ["", "x" * 17, "a@b", "a b", "a\0", "a\r", "a\n", "@"])
def test_invalid_users(user: str) -> None:
    assert not is_valid_user(user)


# -- split_userhost -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        ("nick!user@host", ("nick", "user", "host")),
        ("irc.example.com", ("irc.example.com", None, None)),
        ("nick", ("nick", None, None)),
        ("", (None, None, None)),
        ("!@", (None, None, None)),
        ("nick!", ("nick", None, None)),
        ("@host", (None, None, "host")),
        ("n!u@h@x", ("n", "u", "h@x")),
        ("n!u!v@h", ("n", "u!v", "h")),
    ],
)
def test_split_userhost(source: str, parts: tuple[str | None, str | None, str | None]) -> None:
    hostmask = split_userhost(source)
    assert hostmask == parts
    assert isinstance(hostmask, Hostmask)
    assert (hostmask.nick, hostmask.user, hostmask.host) == parts


# -- mask_match ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "subject", "casemapping", "expected"),
    [
        ("NICK!*@*", "nick!u@h", "rfc1459", True),
        ("NICK!*@*", "nick!u@h", "ascii", True),
        ("nick!*@*", "NICK!U@H", "rfc1459", True),
        ("nick[away]!*@*", "NICK{AWAY}!u@h", "rfc1459", True),
        ("nick[away]!*@*", "NICK{AWAY}!u@h", "ascii", False),
        ("nick{away}!*@*", "nick[away]!u@h", "rfc1459", True),
        ("a\\b!*@*", "a|b!u@h", "rfc1459", True),
        ("a\\b!*@*", "a|b!u@h", "ascii", False),
        ("a~!*@*", "a^!u@h", "rfc1459", True),
        ("a~!*@*", "a^!u@h", "strict-rfc1459", False),
        ("*", "", "rfc1459", True),
        ("*", "anything at all", "rfc1459", True),
        ("", "", "rfc1459", True),
        ("", "a", "rfc1459", False),
        ("?", "", "rfc1459", False),
        ("?", "a", "rfc1459", True),
        ("??", "a", "rfc1459", False),
        ("a*", "a", "rfc1459", True),
        ("*a", "ba", "rfc1459", True),
        ("*a", "ab", "rfc1459", False),
        ("a**b", "ab", "rfc1459", True),
        ("*a*b*", "xxbxxaxx", "rfc1459", False),
        ("*a*b*", "xxaxxbxx", "rfc1459", True),
        ("*ab", "aab", "rfc1459", True),  # needs the star to take back a character
        ("*aab", "aaab", "rfc1459", True),
        ("a*b?c", "axxbyc", "rfc1459", True),
        # Regex characters in a mask are literal.
        ("a.b!*@*", "axb!u@h", "rfc1459", False),
        ("a.b!*@*", "a.b!u@h", "rfc1459", True),
        ("a+!*@*", "aa!u@h", "rfc1459", False),
        ("(a|b)!*@*", "a!u@h", "rfc1459", False),
        ("(a|b)!*@*", "(a|b)!u@h", "rfc1459", True),
        ("$^!*@*", "$^!u@h", "ascii", True),
        ("*!*@*.example.com", "n!u@host.example.com", "rfc1459", True),
        ("*!*@*.example.com", "n!u@example.com", "rfc1459", False),
        ("*!*@*", "n!u@h\nx", "rfc1459", True),
    ],
)
def test_mask_match(mask: str, subject: str, casemapping: str, expected: bool) -> None:
    assert mask_match(mask, subject, casemapping) is expected


def reference_match(mask: str, subject: str) -> bool:
    """The obvious regex translation: right, but exponential on some masks."""
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in mask)
    return re.fullmatch(pattern, subject, re.DOTALL) is not None


@settings(max_examples=500, deadline=None)
@given(mask=st.text("ab*?", max_size=8), subject=st.text("abc", max_size=10))
def test_mask_match_agrees_with_the_regex_translation(mask: str, subject: str) -> None:
    assert mask_match(mask, subject, "ascii") is reference_match(mask, subject)


@settings(max_examples=200, deadline=None)
@given(subject=st.text("aAbB[]{}\\|~^!@.", max_size=12))
def test_a_subject_matches_itself_in_any_case(subject: str) -> None:
    # No wildcards in the alphabet: the mask is the subject itself, in another case.
    assert mask_match(subject.upper(), subject.lower())
    assert mask_match(casefold(subject), subject)
    assert mask_match(subject, casefold(subject))


def test_mask_match_is_not_exponential() -> None:
    # A peer chooses ban masks; with a backtracking regex this mask took hours.
    mask = "*a" * 40 + "b!*@*"
    subject = "a" * 300 + "!user@host.example"
    started = time.perf_counter()
    assert not mask_match(mask, subject)
    assert mask_match(mask, "a" * 300 + "b!user@host.example")
    assert time.perf_counter() - started < 2.0


# -- normalize_mask -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "normal"),
    [
        ("nick", "nick!*@*"),
        ("Nick*", "Nick*!*@*"),
        ("host.example.com", "*!*@host.example.com"),
        ("*.example.com", "*!*@*.example.com"),
        ("::1", "*!*@::1"),
        ("user@host", "*!user@host"),
        ("*@127.0.0.1", "*!*@127.0.0.1"),
        ("nick!user", "nick!user@*"),
        ("nick!user@host", "nick!user@host"),
        ("*!*@*", "*!*@*"),
    ],
)
def test_normalize_mask(mask: str, normal: str) -> None:
    assert normalize_mask(mask) == normal
    assert normalize_mask(normal) == normal  # idempotent


def test_normalized_masks_match() -> None:
    assert mask_match(normalize_mask("BOB"), "bob!~b@host.example")
    assert mask_match(normalize_mask("*.example"), "bob!~b@host.example")
    assert not mask_match(normalize_mask("bob"), "bobby!~b@host.example")


# -- is_valid_hostname --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "valid"),
    [
        ("a.b", True),
        ("a.b.", True),  # a fully qualified name
        ("a" * 63 + ".com", True),
        ("a" * 64 + ".com", False),
        (".".join(["a" * 49] * 5), True),  # 249 characters
        (".".join(["a" * 50] * 5) + "aaa", False),  # 257 characters
        ("a..b", False),
        (".a.b", False),
        ("a_b.com", False),
        ("a b.com", False),
        ("a-.com", False),
        ("a.-b", False),
        ("caf\u00e9.com", False),
        (".", False),
        ("localhost", False),
    ],
)
def test_is_valid_hostname(host: str, valid: bool) -> None:
    assert is_valid_hostname(host) is valid


@pytest.mark.parametrize("mapping", sorted(CASEMAPPINGS))
def test_casefold_fast_path_matches_the_tables(mapping: str) -> None:
    every_ascii = "".join(map(chr, range(128)))
    for name in (every_ascii, "#Room[1]\\~", "Nick^{}|", "", "#ÉtÉ[x]", "ÄB~"):
        assert casefold(name, mapping) == name.translate(CASEMAPPINGS[mapping])
    assert casefold("#Bench[A]~", mapping).startswith("#bench")
