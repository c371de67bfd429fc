"""The churn soak (bench/soak.py), short: 100 memcgs created and removed per
second for a minute, with I/O in each, the real agent exporting every second
to a real OTLP receiver. Every requirement of the full 10-minute run is
checked by the script itself, which exits 1 when one fails; this test runs it
and shows its figures. The full run: see bench/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


def test_short_churn_soak(real_hierarchy):
    if os.geteuid() != 0:
        pytest.skip("the soak creates memory cgroups and loads BPF: root only")
    args = ["--seconds", "60", "--rate", "100", "--lifetime", "6", "--warmup", "30"]
    result = subprocess.run(
        [sys.executable, str(SOAK), *args], capture_output=True, text=True, timeout=300
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exported set = live set within one interval" in result.stdout
