"""Password hashing with scrypt (standard library), for operator blocks and
accounts. Hashes look like ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``.

Make one for the configuration file with ``python -m server.ops.passwords``.

One hash costs about 40 ms of CPU and 16 MiB of memory, and hashlib releases
the GIL while it runs, so a worker's client threads could run as many at once
as clients ask for. :class:`HashGate` bounds that: at most ``hash_concurrency``
hashes run in a worker at a time; a client over it waits its turn (up to
``hash_wait`` seconds, then gets a clean "try again" reply).
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import hmac
import secrets
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

N, R, P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=64 << 20, dklen=32)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored hash; False for a
    malformed hash (never raises)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=128 << 20, dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


@functools.cache
def dummy_hash() -> str:
    """A hash no password matches, with the default cost: checked instead of a
    missing account's or operator's, so an unknown name takes as long as a known one."""
    return hash_password(secrets.token_hex(16))


class HashBusy(Exception):
    """No hashing slot came free in time."""


class HashGate:
    """At most ``slots`` password hashes at once in this process (one per worker).

    The number of slots is given at each use, so a reloaded configuration
    applies to the next hash without resizing anything."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.busy = 0
        self.waiting = 0

    @contextmanager
    def slot(self, slots: int, wait: float) -> Iterator[None]:
        """Hold one slot for the duration; raise :class:`HashBusy` after ``wait`` seconds."""
        with self.cond:
            self.waiting += 1
            try:
                if not self.cond.wait_for(lambda: self.busy < max(1, slots), timeout=wait):
                    raise HashBusy
            finally:
                self.waiting -= 1
            self.busy += 1
        try:
            yield
        finally:
            with self.cond:
                self.busy -= 1
                self.cond.notify()


GATE = HashGate()  # forked into each worker: one gate per worker process


def main() -> None:
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("Password: ")
    print(hash_password(password))


if __name__ == "__main__":
    main()
