"""Load tests for Chat-room and any IRC server: a locust client and locustfile
(:mod:`.irc_client`, ``locustfile.py``) and benchmark scenarios
(:mod:`.bench`, driving generator processes from :mod:`.swarm` against a
server from :mod:`.target`). Imports nothing from ``server`` but its codec."""
