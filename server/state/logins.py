"""Failed-login back-off: per source address and per account, shared by all workers.

It lives in the registry (so in the manager, under the bus lock): an address
whose connections land on four workers is still one address. No I/O, no clock:
callers pass ``now``.

The contract:

* **Every attempt is charged before the password is checked** (``attempt``), and
  refunded when it succeeds (``succeeded``) or could not run (``refund``). So
  twelve connections from one address that guess at once are twelve charges,
  not twelve free guesses before the first failure is counted.
* A key (an address, or an account) that has been charged ``free`` times waits
  ``base * 2**(n - free)`` seconds after its last charge, at most ``cap``; a
  refused attempt is not charged, so waiting out the delay is always enough.
  A key not charged for ``reset`` seconds starts again from zero.
* **The account's back-off does not apply to an address that logged in to that
  account before** (the last few are remembered): an attacker who keeps an
  account backed off does not lock its owner out at home. Their address's own
  back-off still applies.
* Memory is bounded: at most ``MAX_KEYS`` records, the least recently charged
  go first.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_KEYS = 100_000
KNOWN_ADDRESSES = 8  # per account


class Policy(NamedTuple):
    """The worker's configuration, sent with each attempt (so SIGHUP applies at once)."""

    free: int = 3  # charges before any wait
    base: float = 1.0  # the first wait, doubled at every further charge
    cap: float = 60.0  # the longest wait
    reset: float = 900.0  # seconds without a charge after which a key is forgotten


def delay(n: int, policy: Policy) -> float:
    """How long a key charged ``n`` times waits after its last charge."""
    if n < policy.free:
        return 0.0
    exponent = min(n - policy.free, 64)  # 2**64 seconds is past any cap
    return min(policy.cap, policy.base * 2.0 ** exponent)


class LoginThrottle:
    def __init__(self) -> None:
        # key -> (charges, time of the last charge); insertion order = charge order
        self.records: dict[str, tuple[int, float]] = {}
        self.known: dict[str, list[str]] = {}  # account key -> addresses that logged in to it

    def _current(self, key: str, now: float, policy: Policy) -> tuple[int, float]:
        n, last = self.records.get(key, (0, 0.0))
        if n and now - last >= policy.reset:
            return 0, 0.0
        return n, last

    def wait(self, key: str | None, now: float, policy: Policy) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        if key is None:
            return 0.0
        n, last = self._current(key, now, policy)
        return max(0.0, last + delay(n, policy) - now) if n else 0.0

    def attempt(self, address: str | None, account: str | None, now: float, policy: Policy) -> float:
        """Charge one attempt from ``address`` on ``account`` and return 0, or
        return the seconds to wait and charge nothing. ``None`` for a key means
        it does not apply (an exempt address, a check with no account)."""
        waits = [self.wait(address, now, policy)]
        if account is not None and (address is None or address not in self.known.get(account, ())):
            waits.append(self.wait(account, now, policy))
        longest = max(waits)
        if longest > 0:
            return longest
        for key in (address, account):
            if key is not None:
                n, _ = self._current(key, now, policy)
                self.records.pop(key, None)  # re-insert at the end: the newest charge
                self.records[key] = (n + 1, now)
        while len(self.records) > MAX_KEYS:
            del self.records[next(iter(self.records))]
        return 0.0

    def refund(self, address: str | None, account: str | None) -> None:
        """Take back one charge (the attempt succeeded, or never ran)."""
        for key in (address, account):
            if key is None or key not in self.records:
                continue
            n, last = self.records[key]
            if n <= 1:
                del self.records[key]
            else:
                self.records[key] = (n - 1, last)

    def succeeded(self, address: str | None, account: str | None) -> None:
        """The password was right: refund the charge and remember the address."""
        self.refund(address, account)
        if address is None or account is None:
            return
        known = self.known.setdefault(account, [])
        if address in known:
            known.remove(address)
        known.append(address)
        del known[:-KNOWN_ADDRESSES]
        while len(self.known) > MAX_KEYS:
            del self.known[next(iter(self.known))]
