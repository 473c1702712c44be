"""The cyclic GC of the server's processes (server/ops/resources.py tune_gc)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from server.ops.resources import GC_YOUNG_THRESHOLD

ROOT = Path(__file__).resolve().parent.parent


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    # In a process of its own: freezing would change the test process's GC.
    out = subprocess.run(
        [sys.executable, "-c", "import gc; from server.ops.resources import tune_gc; before = gc.get_threshold();"
         " tune_gc(); print(before[1:] == gc.get_threshold()[1:], gc.get_threshold()[0], gc.get_freeze_count() > 0)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out == ["True", str(GC_YOUNG_THRESHOLD), "True"]

