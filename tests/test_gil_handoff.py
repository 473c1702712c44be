"""How a worker's threads share the GIL: the switch interval (resources.set_switch_interval)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def switch_interval(setting: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from server.ops.resources import set_switch_interval;"
         f" set_switch_interval({setting}); print(sys.getswitchinterval())"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    return float(out)


def test_switch_interval_is_set_and_zero_means_pythons_default() -> None:
    assert switch_interval("0.05") == pytest.approx(0.05)
    assert switch_interval("0") == pytest.approx(0.005)
    assert switch_interval("-1") == pytest.approx(0.005)


def test_the_switch_interval_is_a_setting_of_50_ms_by_default() -> None:
    code = ("import sys; from server.ops import config, resources; "
            "cfg = config.load(['--set', 'gil_switch_interval=0.02']); "
            "resources.set_switch_interval(cfg.gil_switch_interval); print(sys.getswitchinterval(), "
            "config.load([]).gil_switch_interval)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    assert [float(x) for x in out] == [pytest.approx(0.02), pytest.approx(0.05)]
