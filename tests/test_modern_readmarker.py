"""draft/read-marker: MARKREAD per account and target, on four workers with
the clients on different workers; kept in SQLite across a restart."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.conftest import Server
from tests.ircclient import IRCClient

EXEMPT = ("--set", "flood_exempt=127.0.0.0/8")
CAPS = ("draft/read-marker",)
T1 = "2026-01-04T14:33:26.123Z"
T2 = "2026-01-05T08:00:00.000Z"


def spread(server: Server, specs: list[tuple[str, tuple[str, ...]]]) -> list[IRCClient]:
    clients = [server.client(n, caps) for n, caps in specs]
    workers = {server.worker_of(n) for n, _ in specs}
    assert len(workers) == len(specs), f"clients all on workers {workers}"
    return clients


def identify(c: IRCClient, account: str, password: str) -> None:
    c.send(f"PRIVMSG NickServ :IDENTIFY {account} {password}")
    assert c.expect("900").params[2] == account


def marker(c: IRCClient, target: str) -> str:
    m = c.expect(lambda m: m.verb == "MARKREAD" and m.params[0] == target)
    return m.params[1]


def test_cap_advertised(start_server: Callable[..., Server]) -> None:
    server = start_server(workers=4)
    c = server.client()
    c.send("CAP LS 302")
    assert "draft/read-marker" in c.expect("CAP").params[-1].split()


def test_markread_reaches_every_connection_of_the_account(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    a1, a2, other, plain = spread(server, [("ann", CAPS), ("ann2", CAPS), ("other", CAPS), ("plain", ())])
    a1.send("REGISTER ann * :correcthorse")
    a1.expect("REGISTER")
    identify(a2, "ann", "correcthorse")
    identify(plain, "ann", "correcthorse")  # same account, no cap: no MARKREAD lines
    a1.send("MARKREAD #room")
    assert marker(a1, "#room") == "*"
    a1.send(f"MARKREAD #room timestamp={T2}")
    assert marker(a1, "#room") == f"timestamp={T2}"
    assert marker(a2, "#room") == f"timestamp={T2}"
    # an older timestamp is ignored: the stored one comes back, nobody else hears of it
    a2.send(f"MARKREAD #Room timestamp={T1}")
    assert marker(a2, "#Room") == f"timestamp={T2}"
    # a DM target, case-insensitively
    a2.send(f"MARKREAD Other timestamp={T1}")
    assert marker(a2, "Other") == f"timestamp={T1}"
    assert marker(a1, "Other") == f"timestamp={T1}"
    a1.send("MARKREAD other")
    assert marker(a1, "other") == f"timestamp={T1}"
    # a timestamp in the future is clamped to now
    a1.send("MARKREAD #future timestamp=2999-01-01T00:00:00.000Z")
    value = marker(a1, "#future")
    assert value.startswith("timestamp=") and value[10:] <= time.strftime("%Y-%m-%dT%H:%M:%S.999Z", time.gmtime())
    assert marker(a2, "#future") == value
    for c in (a1, a2):
        c.sync()
    other.sync()
    other.expect_none("MARKREAD")
    plain.sync()
    plain.expect_none("MARKREAD")
    a1.expect_none("MARKREAD")
    a2.expect_none("MARKREAD")


def test_markread_on_join(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    ann, bob, plain = spread(server, [("ann", CAPS), ("bob", CAPS), ("plain", ())])
    ann.send("REGISTER ann * :correcthorse")
    ann.expect("REGISTER")
    ann.send(f"MARKREAD #chan timestamp={T1}")
    marker(ann, "#chan")
    ann.send("JOIN #Chan")
    lines = ann.collect("366")
    verbs = [m.verb for m in lines]
    assert "JOIN" in verbs and "MARKREAD" in verbs
    assert verbs.index("JOIN") < verbs.index("MARKREAD") < verbs.index("366")
    assert lines[verbs.index("MARKREAD")].params == ("#Chan", f"timestamp={T1}")
    # no account: "*"; no cap: nothing
    bob.send("JOIN #chan")
    lines = bob.collect("366")
    assert [m.params for m in lines if m.verb == "MARKREAD"] == [("#Chan", "*")]
    plain.send("JOIN #chan")
    lines = plain.collect("366")
    assert not [m for m in lines if m.verb == "MARKREAD"]


def test_markread_bad_input(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    c = server.client("nobody", CAPS)

    def fail(line: str) -> tuple[str, ...]:
        c.send(line)
        m = c.expect("FAIL")
        assert m.params[0] == "MARKREAD"
        return m.params[1:]

    assert fail("MARKREAD")[0] == "NEED_MORE_PARAMS"
    assert fail("MARKREAD #c bogus")[:2] == ("INVALID_PARAMS", "bogus")
    assert fail("MARKREAD #c timestamp=yesterday")[0] == "INVALID_PARAMS"
    assert fail("MARKREAD #c timestamp=")[0] == "INVALID_PARAMS"
    assert fail("MARKREAD a,b")[:2] == ("INVALID_PARAMS", "a,b")
    assert fail(f"MARKREAD #c timestamp={T1}")[:2] == ("ACCOUNT_REQUIRED", "#c")
    c.send("MARKREAD #c")  # a get without an account: nothing known
    assert marker(c, "#c") == "*"
    c.sync()
    assert not [m for m in c.drain() if m.verb in ("FAIL", "400")]


def test_markread_survives_restart(start_server: Callable[..., Server]) -> None:
    server = start_server(*EXEMPT, workers=4)
    ann = server.client("ann", CAPS)
    ann.send("REGISTER ann * :correcthorse")
    ann.expect("REGISTER")
    ann.send(f"MARKREAD #keep timestamp={T1}")
    marker(ann, "#keep")
    assert server.stop() == 0
    again = start_server(*EXEMPT, workers=4)
    ann = again.client("ann", CAPS)
    identify(ann, "ann", "correcthorse")
    ann.send("MARKREAD #KEEP")
    assert marker(ann, "#KEEP") == f"timestamp={T1}"
