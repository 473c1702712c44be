"""Every vector of the shared ircdocs parser tests (PyPI ``irc-parser-tests``).

The vectors are data; this file only says how each kind maps onto our codec.
Our own cases for what the package lacks live in the other ``test_codec_*`` and
``test_casemap_hostmask`` files.
"""

from __future__ import annotations

from typing import Any

import pytest
from parser_tests import data

from server.protocol import Message, is_valid_hostname, mask_match, parse, split_userhost

MSG_SPLIT: list[dict[str, Any]] = data.msg_split["tests"]
MSG_JOIN: list[dict[str, Any]] = data.msg_join["tests"]
USERHOST_SPLIT: list[dict[str, Any]] = data.userhost_split["tests"]
MASK_MATCH: list[dict[str, Any]] = data.mask_match["tests"]
VALIDATE_HOSTNAME: list[dict[str, Any]] = data.validate_hostname["tests"]


def readable(text: str, limit: int = 60) -> str:
    """A test id: control characters escaped, long inputs cut."""
    shown = text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def message_from_atoms(atoms: dict[str, Any]) -> Message:
    """The vectors' atoms (missing keys mean none/empty) as our Message."""
    return Message(
        atoms["verb"],
        tuple(atoms.get("params") or ()),
        atoms.get("source"),
        dict(atoms.get("tags") or {}),
    )


def test_the_vector_files_are_all_there() -> None:
    # An empty parametrize list is a skip, not a failure: guard against a package
    # upgrade that renames or empties a file and silently drops the tests below.
    assert len(MSG_SPLIT) >= 35
    assert len(MSG_JOIN) >= 17
    assert len(USERHOST_SPLIT) >= 9
    assert len(MASK_MATCH) >= 6
    assert len(VALIDATE_HOSTNAME) >= 13


@pytest.mark.parametrize("vector", MSG_SPLIT, ids=[readable(v["input"]) for v in MSG_SPLIT])
def test_msg_split(vector: dict[str, Any]) -> None:
    message = parse(vector["input"])
    expected = message_from_atoms(vector["atoms"])
    assert message.tags == expected.tags
    assert message.source == expected.source
    assert message.command == expected.command
    assert message.params == expected.params
    assert message == expected


@pytest.mark.parametrize("vector", MSG_JOIN, ids=[v.get("desc") or readable(v["matches"][0]) for v in MSG_JOIN])
def test_msg_join(vector: dict[str, Any]) -> None:
    line = message_from_atoms(vector["atoms"]).to_line()
    assert line in vector["matches"]


@pytest.mark.parametrize("vector", MSG_JOIN, ids=[v.get("desc") or readable(v["matches"][0]) for v in MSG_JOIN])
def test_msg_join_matches_parse_back(vector: dict[str, Any]) -> None:
    # Every accepted spelling of a message parses to the same atoms.
    expected = message_from_atoms(vector["atoms"])
    for line in vector["matches"]:
        assert parse(line) == expected, line


@pytest.mark.parametrize("vector", USERHOST_SPLIT, ids=[readable(v["source"]) for v in USERHOST_SPLIT])
def test_userhost_split(vector: dict[str, Any]) -> None:
    atoms = vector["atoms"]
    nick, user, host = split_userhost(vector["source"])
    assert (nick, user, host) == (atoms.get("nick"), atoms.get("user"), atoms.get("host"))


MASK_CASES = [
    (vector["mask"], subject, expected)
    for vector in MASK_MATCH
    for key, expected in (("matches", True), ("fails", False))
    for subject in vector[key]
]


@pytest.mark.parametrize(
    ("mask", "subject", "expected"),
    MASK_CASES,
    ids=[f"{mask} {'~' if expected else '!~'} {subject}" for mask, subject, expected in MASK_CASES],
)
def test_mask_match(mask: str, subject: str, expected: bool) -> None:
    assert mask_match(mask, subject) is expected


@pytest.mark.parametrize(
    "vector",
    VALIDATE_HOSTNAME,
    ids=[f"{readable(v['host']) or '<empty>'}-{'valid' if v['valid'] else 'invalid'}" for v in VALIDATE_HOSTNAME],
)
def test_validate_hostname(vector: dict[str, Any]) -> None:
    assert is_valid_hostname(vector["host"]) is vector["valid"]
