"""One password check, as a client's thread runs it: NickServ IDENTIFY, SASL,
OPER and the server PASS all come through :func:`check`.

1. The back-off (server/state/logins.py, in the registry, shared by all
   workers) charges the attempt to the client's address and to the account
   tried, or says how long to wait: then nothing is hashed at all.
2. The hash runs under the worker's :data:`~server.ops.passwords.GATE`, so a
   worker never runs more than ``hash_concurrency`` of them at once.
3. A right password refunds the charge (and the address is remembered for
   that account); a hash that never ran (no slot in ``hash_wait``) too.

A refused check raises :class:`LoginRefused`; the caller answers with its
command's usual failure reply and the exception's text.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from server.ops.passwords import GATE, HashBusy, hash_password

if TYPE_CHECKING:
    from server.irc.client import Client
    from server.ops.config import Config

log = logging.getLogger(__name__)


class LoginRefused(Exception):
    """The password was not checked; ``text`` says why, for the client."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def address_key(ip: str, config: Config) -> str | None:
    """What the per-address back-off counts: the address (IPv6: its /64), or
    None for an address in ``login_backoff_exempt``."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "ip:" + ip
    if any(addr in net for net in config.networks("login_backoff_exempt")):
        return None
    if addr.version == 6:
        return "ip:" + str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return "ip:" + str(addr)


def policy(config: Config) -> tuple[int, float, float, float]:
    return (config.login_free_attempts, config.login_backoff, config.login_backoff_max,
            config.login_backoff_reset)


def busy_text() -> str:
    return "The server is busy checking passwords; try again in a few seconds"


def check(s: Client, account_key: str | None, verify: Callable[[], bool], hashing: bool = True) -> bool:
    """Whether ``verify()`` says yes, run under the back-off and (``hashing``)
    the hash gate. ``account_key`` is what the per-account back-off counts
    (``"account:<fold>"``, ``"oper:<name>"``; None: none)."""
    cfg = s.config
    ip_key = address_key(s.ip, cfg)
    wait = s.request("login_attempt", ip_key, account_key, time.time(), policy(cfg))
    if wait > 0:
        log.info("login from %s (%s) refused: backing off for %.1f s", s.ip, account_key or "PASS", wait)
        raise LoginRefused(f"Too many failed attempts; try again in {math.ceil(wait)} seconds")
    try:
        if hashing:
            with GATE.slot(cfg.hash_concurrency, cfg.hash_wait):
                ok = verify()
        else:
            ok = verify()
    except HashBusy:
        s.notify("login_done", ip_key, account_key, False)
        raise LoginRefused(busy_text()) from None
    if ok:
        s.notify("login_done", ip_key, account_key, True)
    return ok


def remember(s: Client, account_key: str) -> None:
    """A new account was just created from this address: it counts as one
    that logged in to it (the account's back-off spares it)."""
    s.notify("login_done", address_key(s.ip, s.config), account_key, True)


def new_hash(s: Client, password: str) -> str:
    """``hash_password`` under the hash gate (REGISTER, SET PASSWORD); raises
    :class:`LoginRefused` when no slot comes free in ``hash_wait``."""
    try:
        with GATE.slot(s.config.hash_concurrency, s.config.hash_wait):
            return hash_password(password)
    except HashBusy:
        raise LoginRefused(busy_text()) from None
