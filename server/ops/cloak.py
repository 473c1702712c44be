"""Host cloaking: other users see a keyed hash of a client's address, never the
address itself.

The cloak is an HMAC-SHA256 of the address under a secret key, in three parts
from the most to the least specific: the whole address, its /24 (IPv6: /64) and
its /16 (IPv6: /48), e.g. ``5f0e12ab.9c3d7e41.0b2a6c9d.ip``. The same address
always gets the same cloak (channel bans keep working across reconnects), and a
channel operator can still ban a whole range with ``*!*@*.9c3d7e41.0b2a6c9d.ip``.
Without the key the address cannot be recovered, short of hashing every
candidate address, which the key prevents.

The key comes from ``cloak_key`` or, if that is empty, from
``<data_dir>/cloak.key``, created on first use (by whichever worker gets there
first: the file is created atomically) so cloaks survive restarts.
Operators see real addresses (WHOIS 338, WHOX ``%i``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from server.ops.config import Config

KEY_FILE = "cloak.key"


def load_key(config: Config) -> bytes:
    """The cloak key: configured, or kept under the data directory."""
    if config.cloak_key:
        return config.cloak_key.encode()
    path = Path(config.data_dir) / KEY_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process made it first: then theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _read(path)


def _read(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if len(key) < 16:
        raise ValueError(f"{path}: the cloak key is too short (at least 16 characters)")
    return key


def _part(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:8]


def cloak(ip: str, key: bytes) -> str:
    """The host other users see for ``ip``."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return f"{_part(key, ip)}.ip"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        wide, narrow = 16, 24
    else:
        wide, narrow = 48, 64
    full = str(addr)
    net_narrow = str(ipaddress.ip_network(f"{full}/{narrow}", strict=False))
    net_wide = str(ipaddress.ip_network(f"{full}/{wide}", strict=False))
    return f"{_part(key, full)}.{_part(key, net_narrow)}.{_part(key, net_wide)}.ip"
