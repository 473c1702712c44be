"""Logging for every process: stdlib ``logging`` to stderr, one line per record,
tagged with the process role. Passwords and message bodies are never logged."""

from __future__ import annotations

import logging
import sys
from typing import Any


def setup_logging(config: Any, role: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(config.log_level).upper(), logging.INFO))
