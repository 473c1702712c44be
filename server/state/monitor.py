"""Who monitors whom (IRCv3 ``MONITOR``): plain bookkeeping for the registry.

Lives inside :class:`server.state.registry.Registry` and is touched only under
the bus lock, like the rest of it. Nicks are kept case-folded; each watcher's
list remembers the spelling it asked for (``MONITOR L`` shows that).
"""

from __future__ import annotations


class Monitors:
    def __init__(self) -> None:
        self.watchers: dict[str, set[int]] = {}  # folded nick -> sids monitoring it
        self.lists: dict[int, dict[str, str]] = {}  # sid -> folded nick -> nick as given

    def add(self, sid: int, fold: str, nick: str) -> None:
        self.lists.setdefault(sid, {})[fold] = nick
        self.watchers.setdefault(fold, set()).add(sid)

    def count(self, sid: int) -> int:
        return len(self.lists.get(sid, ()))

    def has(self, sid: int, fold: str) -> bool:
        return fold in self.lists.get(sid, ())

    def remove(self, sid: int, fold: str) -> None:
        mine = self.lists.get(sid)
        if mine is None or mine.pop(fold, None) is None:
            return
        if not mine:
            del self.lists[sid]
        who = self.watchers.get(fold)
        if who is not None:
            who.discard(sid)
            if not who:
                del self.watchers[fold]

    def clear(self, sid: int) -> None:
        """Forget ``sid``'s whole list (MONITOR C, or the client left)."""
        for fold in list(self.lists.get(sid, ())):
            self.remove(sid, fold)

    def listing(self, sid: int) -> list[str]:
        return list(self.lists.get(sid, {}).values())

    def of(self, fold: str) -> tuple[int, ...]:
        """The sids monitoring the nick ``fold``."""
        return tuple(self.watchers.get(fold, ()))
