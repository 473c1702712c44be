"""Password hashing with scrypt (standard library), for operator blocks and
accounts. Hashes look like ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``.

Make one for the configuration file with ``python -m server.ops.passwords``.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import secrets
import sys

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


def main() -> None:
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("Password: ")
    print(hash_password(password))


if __name__ == "__main__":
    main()
