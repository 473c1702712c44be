"""What each IRC command means.

:mod:`server.irc.commands` is the table (a leaf: it imports no handler);
the handler modules below register into it when imported, and
:mod:`server.irc.dispatch` runs a message through it. Importing this package
loads every handler, so ``from server.irc import dispatch`` is all a client
thread needs.
"""

from server.irc import (
    accounts,
    channels,
    help,
    history,
    messaging,
    monitor,
    multiline,
    operators,
    readmarker,
    redaction,
    registration,
    server_info,
    stats,
    users,
)
from server.irc.dispatch import dispatch
from server.irc.registration import flush_nick

__all__ = ["accounts", "channels", "dispatch", "flush_nick", "help", "history", "messaging", "monitor",
           "multiline", "operators", "readmarker", "redaction", "registration", "server_info", "stats", "users"]
