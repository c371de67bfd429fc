"""Run as ``nobody``: each missing capability named once with its fix, no raw library noise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from otel_pagecache.probes.bcc import bcc_available

NOISE = ("could not open bpf map", "libbpf:", "Failed to compile", "Traceback")


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _as_nobody_run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_as_nobody,
        cwd="/",
        check=False,
    )


def test_agent_names_each_missing_capability_once_with_its_fix():
    result = _as_nobody_run("-m", "otel_pagecache.cli", "top", "--once", "--include", "/")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    for name in ("CAP_BPF", "CAP_PERFMON"):
        (line,) = [x for x in lines if f"missing capability {name} " in x]
        assert f"grant {name}" in line and f"AmbientCapabilities={name}" in line
    assert lines[-1].endswith("page-cache activity unavailable without them: residency only")
    assert len(lines) == 3, result.stderr
    assert not any(n in result.stderr for n in NOISE), result.stderr
    assert "CONTAINER / CGROUP" in result.stdout  # residency still works


@pytest.mark.skipif(not bcc_available(), reason="BCC's Python module is not importable")
def test_bcc_reports_permission_as_permission_and_keeps_its_stderr_quiet():
    """The capability pre-check is bypassed so BCC really tries, and is refused, as nobody."""
    script = (
        "import otel_pagecache.probes.bcc as bcc\n"
        "from otel_pagecache.probes import ProbeUnavailable\n"
        "bcc.missing_bpf_capabilities = lambda: []\n"
        "try:\n"
        "    bcc.BccProbe().start()\n"
        "except ProbeUnavailable as e:\n"
        "    print('REFUSED', e)\n"
    )
    result = _as_nobody_run("-c", script)
    assert result.returncode == 0, result.stderr
    assert "REFUSED permission denied creating BPF maps" in result.stdout, result.stdout
    assert "CAP_BPF" in result.stdout
    assert not any(n in result.stderr for n in NOISE), result.stderr
