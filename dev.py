#!/usr/bin/env python3
"""Set-up and everyday tasks, with nothing but python3 (and its venv module).

    python3 dev.py run     # start the server on port 6667 (4 workers)
    python3 dev.py test    # lint, type-check and run the whole test suite
    python3 dev.py gui     # open the desktop client

Each task first makes ``.venv`` and installs the project into it (editable, with
the test and load-test extras) when that is missing or pyproject.toml changed.
Extra arguments go to the underlying command, e.g. ``python3 dev.py run --port 7000``
or ``python3 dev.py test -k codec``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".chatroom-installed"


def bootstrap() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print("dev.py: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing the project and its extras into .venv", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-e", f"{ROOT}[test,load]"], check=True)
    STAMP.write_text(want)


def run(cmd: list[str]) -> int:
    proc = subprocess.Popen(cmd, cwd=ROOT)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the child too (same process group): let it shut
            # down cleanly (subprocess.call would SIGKILL it here).
            continue


def main(argv: list[str]) -> int:
    task, *rest = argv or ["help"]
    if task not in {"run", "test", "gui"}:
        print(__doc__)
        return 0 if task in {"help", "-h", "--help"} else 2
    bootstrap()
    if task == "run":
        return run([str(PY), "server/main.py", "--workers", "4", *rest])
    if task == "gui":
        return run([str(PY), "-m", "gui", *rest])
    steps = [
        [str(PY), "-m", "ruff", "check", "."],
        [str(PY), "-m", "mypy"],
        [str(PY), "-m", "pytest", *rest],
    ]
    for step in steps:
        shown = " ".join(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in step)
        print("dev.py: $", shown, flush=True)
        code = run(step)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
