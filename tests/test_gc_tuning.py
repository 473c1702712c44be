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


ARENAS = """
import ctypes, sys, threading
from server.ops.resources import one_malloc_arena
if sys.argv[1] == "one":
    assert one_malloc_arena()
def allocate():
    keep.append(bytearray(4000))  # more than the small-object allocator serves: malloc
keep = []
threads = [threading.Thread(target=allocate) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()  # "Arena N:" per arena, on stderr
"""


def arenas(mode: str) -> int:
    err = subprocess.run([sys.executable, "-c", ARENAS, mode], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stderr
    return sum(1 for line in err.splitlines() if line.startswith("Arena "))


def test_one_malloc_arena_keeps_every_thread_in_one_arena() -> None:
    # Each new thread gets an arena of its own by default: the control shows the test can fail.
    assert arenas("default") > 1
    assert arenas("one") == 1
