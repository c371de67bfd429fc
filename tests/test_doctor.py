"""`otel-pagecache doctor`: on this host as root and as nobody, and its parsers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_pagecache.doctor import (
    TRACEPOINTS,
    _check_tracefs,
    effective_capabilities,
    lockdown_mode,
    tracefs_mounts,
)
from tests.kernel_features import GUEST_KERNEL
from tests.pace import scaled


def _doctor(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otel_pagecache.cli", "--log-level", "ERROR", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        **kwargs,
    )


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.kernel
def test_root_gets_the_verdict_this_kernel_deserves(real_hierarchy, record_property):
    """On the host (6.18, v1): the full feature set. In the matrix's guests (v2):
    exactly the tracepoints the kernel lacks (tracefs is the ground truth) fail,
    named as missing, and the verdict says so."""
    events = Path("/sys/kernel/tracing/events")
    if not events.is_dir():
        pytest.skip("tracefs is not mounted at /sys/kernel/tracing (scripts/bootstrap mounts it)")
    absent = {
        f"tracepoint.{tp}" for tp in TRACEPOINTS if not (events / tp.replace(":", "/")).is_dir()
    }
    if GUEST_KERNEL is None:
        assert not absent, "this host's kernel has every tracepoint the agent uses"
    result = _doctor("--json")
    record_property("doctor", result.stdout)  # for the kernel matrix's table (JUnit XML)
    report = json.loads(result.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["btf"]["status"] == "ok"
    assert by_name["engine.core"]["status"] == "ok", by_name["engine.core"]
    assert f"cgroup v{real_hierarchy.version} " in by_name["cgroups.memory"]["detail"]
    # What a missing tracepoint costs depends on what stands in for it: before
    # 6.12 the lookups come from fentry/kprobe hooks (the "lookups" line says
    # which, the tracepoints' lines are info), and before 5.17 writeback_dirty_page
    # serves what writeback_dirty_folio does.
    lookups = by_name["lookups"]
    lookup_tps = {f"tracepoint.filemap:mm_filemap_{e}" for e in ("get_pages", "fault", "map_pages")}
    expected = set(absent)
    if lookups["status"] == "ok":
        expected -= lookup_tps
        assert lookups["detail"].startswith("served by "), lookups
        if lookup_tps & absent:
            assert "tracepoint" not in lookups["detail"], lookups
    else:
        expected.add("lookups")
    if (events / "writeback/writeback_dirty_page").is_dir():
        expected.discard("tracepoint.writeback:writeback_dirty_folio")
    failing = {c["name"] for c in report["checks"] if c["status"] not in ("ok", "info")}
    assert failing == expected, result.stdout
    for name in absent - {"tracepoint.writeback:writeback_dirty_folio"}:
        assert "missing from this kernel" in by_name[name]["detail"], by_name[name]
    assert report["healthy"] is (not expected)
    assert result.returncode == (1 if expected else 0), result.stdout
    if GUEST_KERNEL is None:  # each doctor run compiles BCC: ~1 min under TCG
        text = _doctor()
        assert text.returncode == 0 and text.stdout.rstrip().endswith("full feature set works")


def test_without_privileges_it_says_what_fails_and_how_to_fix_it(real_hierarchy):
    result = _doctor("--json", preexec_fn=_as_nobody, cwd="/")
    report = json.loads(result.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert result.returncode == 1 and report["healthy"] is False
    # One check per missing capability, each with its own fix.
    for name in ("CAP_BPF", "CAP_PERFMON"):
        check = by_name[f"capabilities.{name.lower()}"]
        assert check["status"] == "fail" and name in check["detail"], check
        assert f"grant {name}" in check["fix"] and f"AmbientCapabilities={name}" in check["fix"]
    assert by_name["engine.core"]["status"] == "fail"
    assert "CAP_BPF" in by_name["engine.core"]["fix"]
    if "engine.bcc" in by_name and by_name["engine.bcc"]["status"] != "info":
        assert "CAP_BPF" in by_name["engine.bcc"]["fix"], by_name["engine.bcc"]
    assert by_name["cgroups.memory"]["status"] == "ok"  # residency still works
    if tracefs_mounts():
        # Mounted with mode 0700 (as on this host): unreadable, not "not mounted".
        assert "but unreadable by this user" in by_name["tracefs"]["detail"], by_name["tracefs"]
    # No raw libbpf or BCC lines: everything is in the report.
    assert "could not open bpf map" not in result.stderr and "libbpf:" not in result.stderr
    assert "Failed to compile" not in result.stdout + result.stderr


def test_tracefs_check_tells_unmounted_from_mounted(tmp_path):
    (tmp_path / "self").mkdir()
    info = tmp_path / "self" / "mountinfo"
    info.write_text("22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n")
    check = _check_tracefs(str(tmp_path))
    assert check.detail.startswith("not mounted") and "mount -t tracefs" in check.fix
    traced = tmp_path / "tracing"
    (traced / "events").mkdir(parents=True)
    info.write_text(f"45 23 0:13 / {traced} rw,relatime - tracefs tracefs rw\n")
    assert tracefs_mounts(str(tmp_path)) == [str(traced)]
    assert _check_tracefs(str(tmp_path)).status == "ok"


def test_lockdown_and_capability_parsers(tmp_path):
    (tmp_path / "lockdown").write_text("none [integrity] confidentiality\n")
    assert lockdown_mode(str(tmp_path / "lockdown")) == "integrity"
    assert lockdown_mode(str(tmp_path / "absent")) is None
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text("Name:\tx\nCapEff:\t000001c000000000\n")
    caps = effective_capabilities(str(tmp_path))
    assert caps & (1 << 39) and caps & (1 << 38) and not caps & (1 << 21)
    (tmp_path / "self" / "status").write_text("CapEff:\tzz\n")
    assert effective_capabilities(str(tmp_path)) == 0


def test_engine_failures_name_their_cause(monkeypatch):
    import otel_pagecache.probes.bcc as bcc
    from otel_pagecache.probes import ProbeUnavailable

    monkeypatch.setattr(bcc, "bcc_available", lambda: False)
    try:
        bcc.BccProbe().start()
        raise AssertionError("started without BCC")
    except ProbeUnavailable as e:
        assert "python3-bpfcc" in str(e)
    monkeypatch.setattr(bcc, "bcc_available", lambda: True)
    monkeypatch.setattr(bcc, "find_headers", lambda: None)
    try:
        bcc.BccProbe().start()
        raise AssertionError("started without headers")
    except ProbeUnavailable as e:
        assert "linux-headers" in str(e) and "BCC_KERNEL_SOURCE" in str(e)


@pytest.mark.kernel
def test_auto_falls_back_to_bcc_when_core_cannot_run(monkeypatch, real_hierarchy):
    import otel_pagecache.probes.core as core
    from otel_pagecache.agent import choose_engine
    from otel_pagecache.config import Settings
    from otel_pagecache.probes import ProbeUnavailable
    from otel_pagecache.probes.bcc import bcc_available

    if not bcc_available():
        pytest.skip("BCC's Python module (python3-bpfcc) is not installed")

    def refuse(self):
        raise ProbeUnavailable("no BTF (simulated)")

    monkeypatch.setattr(core.CoreProbe, "start", refuse)
    probe, reason = choose_engine(Settings(stalls=False))
    try:
        assert probe.engine == "bcc"
        assert "core: no BTF (simulated)" in reason
    finally:
        probe.close()
