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
    from server.irc.client import Client

log = logging.getLogger(__name__)

SASL_CHUNK = 400  # bytes of base64 per AUTHENTICATE line (IRCv3 SASL 3.1)
SASL_MAX = 4000  # base64 characters buffered for one exchange, at most (10 chunks)


# -- the shared steps ---------------------------------------------------------------
def check_credentials(s: Client, account: str, password: str) -> str | None:
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


def login_mask(s: Client) -> str:
    """``nick!user@host`` for 900/901, with ``*`` for what is not known yet
    (before NICK or USER), never an empty part."""
    return f"{s.nick or '*'}!{s.user or '*'}@{s.host}"


def log_in(s: Client, name: str) -> None:
    """Log in, or switch to another account (SASL re-authentication): peers
    with account-notify see the change."""
    s.account = name
    if casefold(name) == casefold(s.nick):
        s.protect_deadline = None
    if s.registered:
        s.request("login", s.sid, name)
    s.numeric(N.RPL_LOGGEDIN, login_mask(s), name, f"You are now logged in as {name}")
    log.info("client %s logged in as %s", s.ip, name)


def may_register(s: Client) -> str | None:
    """Why ``s`` may not register an account now, or None."""
    policy = s.config.account_registration
    if policy == "off":
        return "Account registration is disabled"
    if policy == "opers" and "o" not in s.modes:
        return "Only operators may register accounts on this server"
    return None


def registration_keys(s: Client) -> list[str]:
    """The keys of the ``draft/account-registration`` cap value: what REGISTER
    allows here. Not ``before-connect`` when a server password is set, so that
    REGISTER cannot come before the PASS check (the spec's server considerations)."""
    cfg = s.config
    keys = []
    if cfg.account_registration_before_connect and not cfg.password:
        keys.append("before-connect")
    if cfg.account_email_required:
        keys.append("email-required")
    if cfg.account_custom_name:
        keys.append("custom-account-name")
    return keys


def create(s: Client, name: str, password: str, email: str | None) -> str | None:
    """Create the account; None on success, else the FAIL code."""
    if not is_valid_nick(name, s.config.nick_len):
        return "BAD_ACCOUNT_NAME"
    if len(password) < s.config.password_min_length:
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
@command("REGISTER", 3, pre_registration=True)
def register(s: Client, msg: Message) -> None:
    """REGISTER <account> <email|*> <password>
    Creates an account named <account> ("*": your nick) with that password and logs you in,
    before or after connecting as the server allows (the draft/account-registration cap value)."""
    account, email, password = msg.params[0], msg.params[1], msg.params[2]
    keys = registration_keys(s)
    if not s.registered and "before-connect" not in keys:
        raise RemoteProtocolError.fail("REGISTER", "COMPLETE_CONNECTION_REQUIRED",
                                       text="Register your account once you are connected")
    if s.nick == "*":
        raise RemoteProtocolError.fail("REGISTER", "NEED_NICK", "*", text="Choose a nickname first")
    if not s.registered and (ban := s.request("banned", s.sid, time.time())) is not None:
        # as the registration itself would: no accounts from a banned address
        s.error(RemoteProtocolError(N.ERR_YOUREBANNEDCREEP, text=f"You are banned from this server: {ban}"))
        s.close("Banned")
        return
    if account == "*":
        account = s.nick
    if s.account is not None:
        raise RemoteProtocolError.fail("REGISTER", "ALREADY_AUTHENTICATED", s.account,
                                       text="You are already logged in")
    why = may_register(s)
    if why is not None:
        raise RemoteProtocolError.fail("REGISTER", "DISABLED", account, text=why)
    if "custom-account-name" not in keys and casefold(account) != casefold(s.nick):
        raise RemoteProtocolError.fail("REGISTER", "ACCOUNT_NAME_MUST_BE_NICK", account,
                                       text="The account name must be your current nickname")
    if email == "*" and "email-required" in keys:
        raise RemoteProtocolError.fail("REGISTER", "INVALID_EMAIL", account,
                                       text="An email address is required to register here")
    if email != "*" and not valid_email(email):
        raise RemoteProtocolError.fail("REGISTER", "INVALID_EMAIL", account, text="That is not an email address")
    code = create(s, account, password, None if email == "*" else email)
    texts = {"BAD_ACCOUNT_NAME": "Account names follow the nickname rules",
             "WEAK_PASSWORD": f"Passwords need at least {s.config.password_min_length} characters",
             "ACCOUNT_EXISTS": "That account already exists",
             "TEMPORARILY_UNAVAILABLE": "The server is busy; try again in a few seconds"}
    if code is not None:
        raise RemoteProtocolError.fail("REGISTER", code, account, text=texts[code])
    s.send(Message("REGISTER", ("SUCCESS", account, "Account created"), s.config.server_name))
    log_in(s, account)


def valid_email(text: str) -> bool:
    """A plausible address: one '@' with something on each side and a dot in
    the domain (no mail is sent, so this is all the checking there is)."""
    local, at, domain = text.partition("@")
    return bool(at and local and "." in domain.strip(".") and "@" not in domain and len(text) <= 254)


# -- SASL PLAIN -----------------------------------------------------------------------
def sasl_allowed(s: Client) -> bool:
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
def authenticate(s: Client, msg: Message) -> None:
    """AUTHENTICATE PLAIN
    Logs in with SASL PLAIN during registration (after CAP REQ :sasl): send
    AUTHENTICATE PLAIN, then the base64 of "account\\0account\\0password". AUTHENTICATE * aborts."""
    arg = msg.params[0]
    if arg == "*":
        s.sasl, s.sasl_buf = None, ""
        s.numeric(N.ERR_SASLABORTED, "SASL authentication aborted")
        return
    # Logged in already: a new exchange re-authenticates (IRCv3 SASL 3.2 says
    # servers SHOULD allow it); a success switches the account.
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
    if len(arg) > SASL_CHUNK:
        s.sasl, s.sasl_buf = None, ""
        s.numeric(N.ERR_SASLTOOLONG, "SASL message too long")
        return
    if arg != "+":
        if len(s.sasl_buf) + len(arg) > SASL_MAX:
            # an endless run of full chunks: fail the exchange, keep nothing
            s.sasl, s.sasl_buf = None, ""
            s.numeric(N.ERR_SASLFAIL, "SASL authentication failed: the payload is too long")
            return
        s.sasl_buf += arg
        if len(arg) == SASL_CHUNK:
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
def service_reply(s: Client, service: str, text: str) -> None:
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


def nickserv(s: Client, text: str) -> None:
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
            reply(f"Choose a password of at least {s.config.password_min_length} characters.")
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
        elif len(args[1]) < s.config.password_min_length:
            reply(f"Choose a password of at least {s.config.password_min_length} characters.")
        else:
            try:
                s.worker.get_store().set_password(casefold(s.account), new_hash(s, args[1]))
            except LoginRefused as exc:
                reply(exc.text + ".")
                return
            s.notify("account_created", casefold(s.account))  # (known already; a cluster copies the new hash)
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


def chanserv(s: Client, text: str) -> None:
    words = text.split()
    cmd = words[0].upper() if words else "HELP"
    args = words[1:]

    def reply(text: str) -> None:
        service_reply(s, "ChanServ", text)

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


def protect_nick(s: Client, protected: bool) -> None:
    """A registered nick used without logging in: warn, and rename after the grace."""
    grace = s.config.nick_protection_grace
    if not protected or grace <= 0:
        s.protect_deadline = None
        return
    s.protect_deadline = time.monotonic() + grace
    service_reply(s, "NickServ", f"The nickname {s.nick} is registered. Log in within {int(grace)} seconds "
                  f"(/msg NickServ IDENTIFY <password>) or it will be changed.")


def enforce_protection(s: Client) -> None:
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
