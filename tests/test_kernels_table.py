"""scripts/vm/kernels_table.py: a matrix run's results become docs/kernels.md."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "kernels_table", Path(__file__).resolve().parent.parent / "scripts" / "vm" / "kernels_table.py"
)
kernels_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernels_table)

DOCTOR = {
    "healthy": False,
    "checks": [
        {"name": "cgroups.memory", "status": "ok", "detail": "memory controller on cgroup v2 at /"},
        {"name": "engine.core", "status": "ok", "detail": "loads and attaches 8 programs"},
        {"name": "tracepoint.filemap:mm_filemap_get_pages", "status": "fail", "detail": "gone"},
    ],
}
DOCTOR_XML = json.dumps(DOCTOR).replace('"', "&quot;")
JUNIT = f"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.test_activity"
  name="test_writes_insert_and_dirty_but_do_not_miss[core]"/>
<testcase classname="tests.test_activity" name="test_cold_read_then_warm_read[core]">
  <skipped type="pytest.skip" message="no lookups on 6.1.0-57-amd64: the agent reports x missing"/>
</testcase>
<testcase classname="tests.test_activity" name="test_cold_read_then_warm_read[bcc]">
  <failure message="AssertionError: assert 0 == 16384&#10;more | detail">trace</failure>
</testcase>
<testcase classname="tests.test_doctor" name="test_root_gets_the_verdict_this_kernel_deserves">
  <properties><property name="doctor" value="{DOCTOR_XML}"/></properties>
</testcase>
</testsuite></testsuites>
"""


def test_cells_say_pass_skip_reason_failure_and_not_run(tmp_path):
    run = tmp_path / "6.1"
    run.mkdir()
    (run / "junit.xml").write_text(JUNIT)
    (run / "vmtest.txt").write_text(
        "kernel=6.1\nversion=6.1.192-3\nrelease=6.1.0-57-amd64\naccel=tcg\n"
        "boot_seconds=12.5\nseconds=400.0\nstatus=1\ndate=2026-12-02T13:00:00Z\n"
    )
    table = kernels_table.render(tmp_path)
    rows = {tuple(c.strip() for c in line.split(" | ")[:2]): line for line in table.splitlines()}
    assert "| 6.1 | 6.1.192-3 | 6.1.0-57-amd64 | v2 |" in table
    assert "| 12.5 s | 400.0 s, exit 1 |" in table
    assert "| 5.10 | not run |" in table
    assert "5.11–5.16 and 6.2–6.11" in table
    writes = rows[("| insertions and dirtied (write)", "CO-RE")].split(" | ")
    assert writes[2:4] == ["not run", "✔"]  # 5.10 not run, 6.1 passed
    lookups = rows[("| lookups, misses, hit ratio (read)", "CO-RE")]
    assert "✗ skipped: no lookups on 6.1.0-57-amd64: the agent reports x missing" in lookups
    failing = rows[("| lookups, misses, hit ratio (read)", "BCC")]
    assert "✗ FAILS: AssertionError: assert 0 == 16384 |" in failing  # first line only
    assert "`tracepoint.filemap:mm_filemap_get_pages` fail: gone" in table
    killed = tmp_path / "7"
    killed.mkdir()
    (killed / "vmtest.txt").write_text("kernel=7\nversion=7.3.4-1~bpo13+1\nstatus=124\n")
    table = kernels_table.render(tmp_path)
    assert "| ✗ no result: the guest run was killed at its timeout (exit 124)" in table
