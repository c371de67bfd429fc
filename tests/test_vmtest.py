"""scripts/vmtest itself: a real guest boots (Debian's 6.12 under qemu), runs a
command and hands back its output and exit status; bad input and hangs end
the way the interface promises. Short bounded runs; the kernel matrix is
tests/test_kernel_matrix.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

VMTEST = Path(__file__).resolve().parent.parent / "scripts" / "vmtest"

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif("VMTEST_KERNEL" in os.environ, reason="inside a vmtest guest"),
]


def _vmtest(*args: str, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VMTEST), *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def _guest_ready() -> None:
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/qemu-system-x86_64"):
        pytest.skip("needs root and qemu-system-x86 (scripts/bootstrap --test installs it)")


def test_unknown_kernel_is_a_clear_error_before_any_boot():
    result = _vmtest("run", "--kernel", "4.19", "--", "true", timeout=60)
    assert result.returncode == 2
    assert "unknown kernel '4.19': choose one of 5.10, 6.1, 6.12, 7" in result.stderr
    assert "Traceback" not in result.stderr


def test_command_runs_in_the_guest_with_our_cwd_env_and_exit_status(tmp_path):
    _guest_ready()
    out = tmp_path / "out"
    script = (
        "echo to-stdout; echo to-stderr >&2; pwd; echo probe=$VMTEST_PROBE; uname -r;"
        " stat -f -c %T /; cat /sys/fs/cgroup/cgroup.subtree_control;"
        f" echo written-in-guest > {out}/result; echo guest-only > {tmp_path}/scratch; exit 7"
    )
    result = _vmtest(
        "run",
        "--kernel",
        "6.12",
        "--out",
        str(out),
        "--",
        "sh",
        "-c",
        script,
        cwd=tmp_path,
        env=dict(os.environ, VMTEST_PROBE="passed through"),
    )
    assert result.returncode == 7, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == ["to-stdout", "to-stderr", str(tmp_path), "probe=passed through"], lines
    release = _vmtest("list", timeout=60).stdout.split("\n")[2].split("(")[-1].rstrip(")")
    assert lines[4] == release != os.uname().release  # Debian's 6.12, not the host's kernel
    assert lines[5] == "overlayfs"
    assert "memory" in lines[6].split()  # cgroup v2, memory controller enabled for children
    # --out is the host's directory; the rest of the host is seen read-only.
    assert (out / "result").read_text() == "written-in-guest\n"
    assert not (tmp_path / "scratch").exists()
    assert "kernel 6.12 = 6.12." in result.stderr and "exit 7" in result.stderr
    assert "version=6.12." in (out / "vmtest.txt").read_text()


def test_a_command_still_running_at_its_timeout_is_killed_with_124():
    _guest_ready()
    result = _vmtest(
        "run",
        "--kernel",
        "6.12",
        "--timeout",
        "10",
        "--",
        "sh",
        "-c",
        "echo started; sleep 600; echo never",
    )
    assert result.returncode == 124, result.stderr
    assert result.stdout.splitlines() == ["started"]
    assert "killed at its timeout" in result.stderr
