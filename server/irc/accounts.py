"""Accounts: IRCv3 ``draft/account-registration`` (REGISTER), SASL PLAIN
(AUTHENTICATE), and NickServ / ChanServ services for clients without them.

Passwords are hashed with scrypt (server/ops/passwords.py) in the client's own
thread, under the worker's hash gate and the failed-login back-off
(server/irc/logins.py); they are never logged or stored in the clear.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import secrets
import time
from typing import TYPE_CHECKING

from server.irc.commands import command
from server.irc.logins import LoginRefused, check, new_hash, remember
from server.ops.passwords import dummy_hash, verify_password
from server.protocol import Message, RemoteProtocolError, casefold, is_valid_nick
from server.protocol import numerics as N

if TYPE_CHECKING:
    from server.process.session import Session

log = logging.getLogger(__name__)

MIN_PASSWORD = 6


# -- the shared steps ---------------------------------------------------------------
def check_credentials(s: Session, account: str, password: str) -> str | None:
    """The account's proper name when the password is right. An unknown
    account costs the same hash as a known one. Raises :class:`LoginRefused`
    when the back-off (or a full hash gate) keeps the password from being checked."""
    fold = casefold(account)
    found: list[str] = []

    def verify() -> bool:
        record = s.worker.get_store().account(fold)
        ok = verify_password(password, record[1] if record is not None else dummy_hash())
        if ok and record is not None:
            found.append(record[0])
        return bool(found)

    if not check(s, "account:" + fold, verify):
        log.info("failed login for account %r from %s", account, s.ip)
        return None
    return found[0]


def log_in(s: Session, name: str) -> None:
    s.account = name
    if casefold(name) == casefold(s.nick):
        s.protect_deadline = None
    if s.registered:
        s.request("login", s.sid, name)
    s.numeric(N.RPL_LOGGEDIN, s.prefix, name, f"You are now logged in as {name}")
    log.info("client %s logged in as %s", s.ip, name)


def may_register(s: Session) -> str | None:
    """Why ``s`` may not register an account now, or None."""
    policy = s.config.account_registration
    if policy == "off":
        return "Account registration is disabled"
    if policy == "opers" and "o" not in s.modes:
        return "Only operators may register accounts on this server"
    return None


def create(s: Session, name: str, password: str, email: str | None) -> str | None:
    """Create the account; None on success, else the FAIL code."""
    if not is_valid_nick(name, s.config.nick_len):
        return "BAD_ACCOUNT_NAME"
    if len(password) < MIN_PASSWORD:
        return "WEAK_PASSWORD"
    fold = casefold(name)
    try:
        hashed = new_hash(s, password)
    except LoginRefused:
        return "TEMPORARILY_UNAVAILABLE"
    if not s.worker.get_store().create_account(fold, name, hashed, email):
        return "ACCOUNT_EXISTS"
    s.request("account_created", fold)
    remember(s, "account:" + fold)
    log.info("account %s registered from %s", name, s.ip)
    return None


# -- REGISTER (draft/account-registration) ----------------------------------------
@command("REGISTER", 3)
def register(s: Session, msg: Message) -> None:
    account, email, password = msg.params[0], msg.params[1], msg.params[2]
    if account == "*":
        account = s.nick
    if s.account is not None:
        raise RemoteProtocolError.fail("REGISTER", "ALREADY_AUTHENTICATED", s.account,
                                       text="You are already logged in")
    why = may_register(s)
    if why is not None:
        raise RemoteProtocolError.fail("REGISTER", "DISABLED", account, text=why)
    code = create(s, account, password, None if email == "*" else email)
    texts = {"BAD_ACCOUNT_NAME": "Account names follow the nickname rules",
             "WEAK_PASSWORD": f"Passwords need at least {MIN_PASSWORD} characters",
             "ACCOUNT_EXISTS": "That account already exists",
             "TEMPORARILY_UNAVAILABLE": "The server is busy; try again in a few seconds"}
    if code is not None:
        raise RemoteProtocolError.fail("REGISTER", code, account, text=texts[code])
    s.send(Message("REGISTER", ("SUCCESS", account, "Account created"), s.config.server_name))
    log_in(s, account)


# -- SASL PLAIN -----------------------------------------------------------------------
def sasl_allowed(s: Session) -> bool:
    if s.tls:
        return True
    policy = s.config.sasl_plaintext
    if policy == "always":
        return True
    if policy == "loopback":
        try:
            return ipaddress.ip_address(s.ip).is_loopback
        except ValueError:
            return False
    return False


@command("AUTHENTICATE", 1, pre_registration=True)
def authenticate(s: Session, msg: Message) -> None:
    arg = msg.params[0]
    if arg == "*":
        s.sasl, s.sasl_buf = None, ""
        s.numeric(N.ERR_SASLABORTED, "SASL authentication aborted")
        return
    if s.account is not None:
        s.numeric(N.ERR_SASLALREADY, "You have already authenticated using SASL")
        return
    if s.sasl is None:
        if arg.upper() != "PLAIN":
            s.numeric(N.RPL_SASLMECHS, "PLAIN", "are available SASL mechanisms")
            s.numeric(N.ERR_SASLFAIL, "SASL authentication failed")
            return
        if not sasl_allowed(s):
            s.numeric(N.ERR_SASLFAIL, "SASL PLAIN needs a TLS connection here")
            return
        s.sasl, s.sasl_buf = "PLAIN", ""
        s.send(Message("AUTHENTICATE", ("+",)))
        return
    if arg != "+":
        s.sasl_buf += arg
        if len(s.sasl_buf) > 4000:
            s.sasl, s.sasl_buf = None, ""
            s.numeric(N.ERR_SASLTOOLONG, "SASL message too long")
            return
        if len(arg) == 400:
            return  # more chunks follow
    data, s.sasl, s.sasl_buf = s.sasl_buf, None, ""
    try:
        authzid, authcid, password = base64.b64decode(data, validate=True).decode().split("\0")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        s.numeric(N.ERR_SASLFAIL, "SASL authentication failed")
        return
    try:
        name = check_credentials(s, authcid, password)
    except LoginRefused as exc:
        s.numeric(N.ERR_SASLFAIL, f"SASL authentication failed: {exc.text}")
        return
    if name is None or (authzid and casefold(authzid) != casefold(authcid)):
        s.numeric(N.ERR_SASLFAIL, "SASL authentication failed")
        return
    log_in(s, name)
    s.numeric(N.RPL_SASLSUCCESS, "SASL authentication successful")


# -- services -------------------------------------------------------------------------
def service_reply(s: Session, service: str, text: str) -> None:
    s.send(Message("NOTICE", (s.nick, text), f"{service}!{service}@services.{s.config.server_name}"))


NICKSERV_HELP = [
    "NickServ keeps your nickname yours. Commands:",
    "REGISTER <password> [email]  - register your current nickname as an account",
    "IDENTIFY [account] <password> - log in",
    "LOGOUT                       - log out",
    "SET PASSWORD <new password>  - change your password (when logged in)",
    "DROP <password>              - delete your account",
    "INFO [account]               - whether an account exists",
]

CHANSERV_HELP = [
    "ChanServ keeps channels yours across restarts. Commands:",
    "REGISTER <#channel>                - register a channel you operate (needs an account)",
    "OP|VOICE <#channel> <account>      - give an account lasting op or voice",
    "DEOP <#channel> <account>          - take it away",
    "SET <#channel> HISTORY ON|OFF      - keep the channel's history or not",
    "INFO <#channel>                    - who founded it and who has access",
    "DROP <#channel>                    - unregister (founder only)",
]


def nickserv(s: Session, text: str) -> None:
    words = text.split()
    cmd = words[0].upper() if words else "HELP"
    args = words[1:]

    def reply(text: str) -> None:
        service_reply(s, "NickServ", text)

    if cmd == "REGISTER" and args:
        if s.account is not None:
            reply(f"You are already logged in as {s.account}.")
            return
        why = may_register(s)
        if why is not None:
            reply(why + ".")
            return
        code = create(s, s.nick, args[0], args[1] if len(args) > 1 else None)
        if code == "ACCOUNT_EXISTS":
            reply(f"The nickname {s.nick} is already registered.")
        elif code == "TEMPORARILY_UNAVAILABLE":
            reply("The server is busy; try again in a few seconds.")
        elif code == "WEAK_PASSWORD":
            reply(f"Choose a password of at least {MIN_PASSWORD} characters.")
        elif code is not None:
            reply("That nickname cannot be registered.")
        else:
            reply(f"Registered {s.nick}; you are logged in.")
            log_in(s, s.nick)
    elif cmd == "IDENTIFY" and args:
        account, password = (args[0], args[1]) if len(args) > 1 else (s.nick, args[0])
        try:
            name = check_credentials(s, account, password)
        except LoginRefused as exc:
            reply(exc.text + ".")
            s.numeric(N.ERR_SASLFAIL, f"Authentication failed: {exc.text}")
            return
        if name is None:
            reply("Invalid account or password.")
            s.numeric(N.ERR_SASLFAIL, "Authentication failed")
        else:
            log_in(s, name)
            reply(f"You are now identified as {name}.")
    elif cmd == "LOGOUT":
        if s.account is not None:
            s.account = None
            s.request("login", s.sid, None)
            s.numeric(N.RPL_LOGGEDOUT, s.prefix, "You are now logged out")
        reply("You are logged out.")
    elif cmd == "SET" and len(args) >= 2 and args[0].upper() == "PASSWORD":
        if s.account is None:
            reply("Log in first.")
        elif len(args[1]) < MIN_PASSWORD:
            reply(f"Choose a password of at least {MIN_PASSWORD} characters.")
        else:
            try:
                s.worker.get_store().set_password(casefold(s.account), new_hash(s, args[1]))
            except LoginRefused as exc:
                reply(exc.text + ".")
                return
            reply("Password changed.")
    elif cmd == "DROP" and args:
        try:
            checked = s.account is not None and check_credentials(s, s.account, args[0]) is not None
        except LoginRefused as exc:
            reply(exc.text + ".")
            return
        if s.account is None or not checked:
            reply("Log in and give your password to drop your account.")
        else:
            fold = casefold(s.account)
            s.worker.get_store().drop_account(fold)
            s.request("account_dropped", fold)
            reply(f"Account {s.account} dropped.")
            s.account = None
    elif cmd == "INFO":
        name = args[0] if args else s.nick
        exists = s.worker.get_store().account(casefold(name)) is not None
        reply(f"{name} is {'a registered account' if exists else 'not registered'}.")
    else:
        for line in NICKSERV_HELP:
            reply(line)


def chanserv(s: Session, text: str) -> None:
    words = text.split()
    cmd = words[0].upper() if words else "HELP"
    args = words[1:]
    reply = lambda t: service_reply(s, "ChanServ", t)  # noqa: E731
    try:
        if cmd == "REGISTER" and args:
            name = s.request("chan_register", s.sid, args[0], time.time())
            reply(f"{name} is registered to {s.account}.")
        elif cmd == "DROP" and args:
            reply(f"{s.request('chan_drop', s.sid, args[0])} is no longer registered.")
        elif cmd in ("OP", "VOICE", "DEOP") and len(args) >= 2:
            level = {"OP": "op", "VOICE": "voice", "DEOP": None}[cmd]
            name = s.request("chan_access", s.sid, args[0], args[1], level)
            reply(f"{args[1]} now has {level or 'no'} access on {name}.")
        elif cmd == "SET" and len(args) >= 3 and args[1].upper() == "HISTORY":
            on = args[2].upper() in ("ON", "1", "YES", "TRUE")
            name = s.request("set_history", s.sid, args[0], on)
            reply(f"History for {name} is now {'on' if on else 'off'}.")
        elif cmd == "INFO" and args:
            info = s.request("chan_info", args[0])
            if info is None:
                reply(f"{args[0]} is not registered.")
            else:
                access = ", ".join(f"{a} ({lvl})" for a, lvl in sorted(info["access"].items()))
                reply(f"{info['name']}: founder {info['founder']}; access: {access}; "
                      f"history {'on' if info['history'] else 'off'}.")
        else:
            for line in CHANSERV_HELP:
                reply(line)
    except RemoteProtocolError as exc:
        reply(exc.text + ".")


SERVICES = {"nickserv": nickserv, "chanserv": chanserv}


def protect_nick(s: Session, protected: bool) -> None:
    """A registered nick used without logging in: warn, and rename after the grace."""
    grace = s.config.nick_protection_grace
    if not protected or grace <= 0:
        s.protect_deadline = None
        return
    s.protect_deadline = time.monotonic() + grace
    service_reply(s, "NickServ", f"The nickname {s.nick} is registered. Log in within {int(grace)} seconds "
                  f"(/msg NickServ IDENTIFY <password>) or it will be changed.")


def enforce_protection(s: Session) -> None:
    """Called by the worker's timer when the grace ran out."""
    s.protect_deadline = None
    if s.account is not None and casefold(s.account) == casefold(s.nick):
        return
    for _ in range(5):
        guest = f"Guest{secrets.randbelow(100000):05d}"
        try:
            s.request("claim_nick", s.sid, guest)
        except RemoteProtocolError:
            continue
        s.nick = guest
        service_reply(s, "NickServ", f"Your nickname was changed to {guest}: that nickname is registered.")
        return
