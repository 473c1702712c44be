"""Locust user classes speaking IRC (see :mod:`loadtest.irc_client`).

    locust -f loadtest/locustfile.py --headless -u 2000 -r 200 -t 60s --host 127.0.0.1:6667

``--host`` takes ``irc://HOST:PORT``, ``HOST:PORT`` or ``HOST`` (port 6667).
Users, by weight:

* lurkers (6): join one of the rooms and idle; their reader answers PING;
* chatters (3): sit in a few channels and talk at a human rate;
* room hoppers (1): join and part channels.

Everyone starts in one of 20 rooms (not one shared lobby: with 2000 users a
single channel makes every JOIN a 2000-line broadcast that this one locust
process would have to parse, and the generator would saturate first).

A server with flood control needs it relaxed for loopback (ours:
``--set flood_exempt=127.0.0.0/8``).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from locust import User, between, task

if __package__ in (None, ""):
    # locust loads this file by path: make ``loadtest`` and ``server.protocol`` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.irc_client import IRCClient, IRCError, parse_host
from loadtest.swarm import raise_fd_limit

raise_fd_limit()

CHANNELS = [f"#room{i}" for i in range(20)]


class IRCUser(User):
    """Base class: connect and register on start, quit on stop."""

    abstract = True

    def __init__(self, environment):  # type: ignore[no-untyped-def]
        super().__init__(environment)
        host, port = parse_host(self.host)
        self.client = IRCClient(host, port, environment.events.request)

    def on_start(self) -> None:
        self.client.connect()
        self.home = random.choice(CHANNELS)
        self.client.join(self.home)

    def on_stop(self) -> None:
        self.client.quit()


class Lurker(IRCUser):
    weight = 6
    wait_time = between(20, 40)

    @task
    def idle(self) -> None:
        if self.client.closed.is_set():
            raise IRCError("disconnected")


class Chatter(IRCUser):
    weight = 3
    wait_time = between(2, 8)

    def on_start(self) -> None:
        super().on_start()
        for channel in random.sample([c for c in CHANNELS if c != self.home], 2):
            self.client.join(channel)

    @task
    def talk(self) -> None:
        channel = random.choice(sorted(self.client.channels))
        self.client.say(channel, random.choice(["hi all", "how is it going?", "brb", "lol", "see you later"]))


class RoomHopper(IRCUser):
    weight = 1
    wait_time = between(3, 10)

    @task
    def hop(self) -> None:
        rooms = [c for c in self.client.channels if c != self.home]
        if rooms and (len(rooms) > 2 or random.random() < 0.5):
            self.client.part(random.choice(rooms))
        else:
            self.client.join(random.choice([c for c in CHANNELS if c not in self.client.channels]))
