"""Password guessing against a running server: how many guesses per second get
through from one address, and what they cost the server.

``python -m loadtest.bruteforce --port 6667 --pid <server pid> --mode oper``

``--conns`` clients (default 12) register, then each sends one guess, waits for
the answer, and sends the next, for ``--seconds``; a client the server drops
(Excess Flood) counts as ``dropped``. Modes: ``oper`` (``OPER
<name> <guess>``), ``identify`` (``PRIVMSG NickServ :IDENTIFY <account>
<guess>``). It prints one JSON line: answers per second, how many were checked
(``Password incorrect`` / NickServ "Invalid") and how many were refused
("try again"), and the CPU the server's processes used (psutil, % of one core).
Imports nothing from ``server`` but its codec.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

import psutil

from server.protocol import Decoder, Message


def _lines(sock: socket.socket, dec: Decoder) -> list[Message]:
    data = sock.recv(65536)
    if not data:
        raise ConnectionError("closed")
    return [m for m in dec.feed(data) if isinstance(m, Message)]


def hammer(host: str, port: int, nick: str, mode: str, target: str, until: float,
           counts: dict[str, int], lock: threading.Lock, source: str | None) -> None:
    try:
        _hammer(host, port, nick, mode, target, until, counts, lock, source)
    except (ConnectionError, OSError):
        with lock:
            counts["dropped"] += 1


def _hammer(host: str, port: int, nick: str, mode: str, target: str, until: float,
            counts: dict[str, int], lock: threading.Lock, source: str | None) -> None:
    sock = socket.create_connection((host, port), timeout=30, source_address=(source, 0) if source else None)
    dec = Decoder(strict=False)
    sock.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    while not any(m.verb in ("376", "422") for m in _lines(sock, dec)):
        pass
    i = 0
    while time.monotonic() < until:
        i += 1
        guess = f"guess{nick}{i}"
        line = f"OPER {target} {guess}" if mode == "oper" else f"PRIVMSG NickServ :IDENTIFY {target} {guess}"
        sock.sendall(line.encode() + b"\r\n")
        kind = ""
        while not kind:
            for m in _lines(sock, dec):
                if m.verb == "PING":
                    sock.sendall(b"PONG :" + m.params[-1].encode() + b"\r\n")
                text = m.params[-1] if m.params else ""
                if m.verb in ("464", "904", "381"):
                    kind = "refused" if "try again" in text else "checked"
        with lock:
            counts[kind] += 1
    sock.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, help="the server's supervisor pid (CPU of it and its children)")
    p.add_argument("--mode", choices=["oper", "identify"], default="oper")
    p.add_argument("--target", default="admin", help="the operator name or account guessed at")
    p.add_argument("--conns", type=int, default=12)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--sources", type=int, default=0,
                   help="spread the connections over this many loopback addresses (127.0.1.N): a distributed attack")
    p.add_argument("--many-targets", action="store_true", help="each address guesses at its own name (target + N)")
    args = p.parse_args()
    procs: list[psutil.Process] = []
    if args.pid:
        root = psutil.Process(args.pid)
        procs = [root, *root.children(recursive=True)]
    cpu0 = sum(sum(pr.cpu_times()[:2]) for pr in procs)
    counts = {"checked": 0, "refused": 0, "dropped": 0}
    lock = threading.Lock()
    start = time.monotonic()
    until = start + args.seconds
    threads = []
    for i in range(args.conns):
        source = f"127.0.1.{i % args.sources + 1}" if args.sources else None
        target = f"{args.target}{i % max(1, args.sources) + 1}" if args.many_targets else args.target
        threads.append(threading.Thread(target=hammer, args=(args.host, args.port, f"g{i}", args.mode, target,
                                                             until, counts, lock, source), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 60)
    elapsed = time.monotonic() - start
    cpu = sum(sum(pr.cpu_times()[:2]) for pr in procs) - cpu0
    print(json.dumps({"mode": args.mode, "conns": args.conns, "seconds": round(elapsed, 1),
                      "answers_per_s": round((counts["checked"] + counts["refused"]) / elapsed, 1),
                      "checked_per_s": round(counts["checked"] / elapsed, 2), **counts,
                      "server_cpu_pct": round(100 * cpu / elapsed, 1) if procs else None}))


if __name__ == "__main__":
    main()
