"""The registry's bookkeeping, without processes: LUSERS counts are kept
incrementally and must always equal a full scan."""

from __future__ import annotations

import random

from server.state.registry import Registry


def scan(reg: Registry) -> tuple[int, int, int]:
    users = [u for u in reg.users.values() if u.registered]
    return len(users), sum("i" in u.modes for u in users), sum("o" in u.modes for u in users)


def test_lusers_counts_follow_every_change() -> None:
    reg = Registry(lambda workers, item: None)
    rng = random.Random(7)
    alive: list[int] = []
    for step in range(2000):
        action = rng.random()
        if action < 0.4 or not alive:
            sid = step + 1
            reg.connect(sid, rng.randrange(4), "10.0.0.1", "h")
            reg.claim_nick(sid, f"n{sid}")
            if rng.random() < 0.9:
                reg.register(sid, "~u", "r", 0.0)
            alive.append(sid)
        elif action < 0.8:
            reg.set_user_mode(rng.choice(alive), rng.choice("io"), rng.random() < 0.5)
        else:
            sid = alive.pop(rng.randrange(len(alive)))
            reg.disconnect(sid, "bye")
        d = reg.lusers()
        assert (d["users"], d["invisible"], d["operators"]) == scan(reg)
        assert d["unknown"] == len(reg.users) - d["users"]
