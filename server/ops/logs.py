"""Logging for every process (supervisor, acceptor, workers, manager): stdlib
``logging`` to stderr, one record per line, tagged with the process role.

``log_format = "text"`` (the default) gives
``2026-01-01 12:00:00,000 INFO [worker-0] server.process.worker: ...``;
``log_format = "json"`` gives one JSON object per line with the keys ``time``,
``level``, ``process``, ``pid``, ``logger``, ``message`` (and ``exception``).
The level comes from ``log_level``. Passwords and message bodies are never
logged: log calls name clients by address and nick only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "process": self.role,
            "pid": record.process or os.getpid(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(config: Any, role: str) -> None:
    # No record names its thread (neither format does), and asking would give each
    # client thread (started with _thread, server/process/threads.py) a
    # threading._DummyThread that stays in threading's table for the process's life.
    logging.logThreads = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if str(getattr(config, "log_format", "text")).lower() == "json":
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(config.log_level).upper(), logging.INFO))
