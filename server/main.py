"""Start the Chat-room server: ``python server/main.py --workers 4``.

Also ``python -m server`` and the ``chatroom-server`` script. See
``--help`` and docs/configuration.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the project root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from server.process.supervisor import main as run

    raise SystemExit(run())


if __name__ == "__main__":
    main()
