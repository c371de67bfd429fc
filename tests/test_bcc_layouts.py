"""The BCC engine on kernels without BTF: its two fallbacks, forced on this one.

This kernel has BTF, and its headers (6.18, a custom build) are not packaged:
the fallbacks are forced here. "headers" (layouts from headers that match the
running kernel) can only be shown to compile and load, with Debian's 6.1
headers, whose layouts are wrong for 6.18, which is exactly why the engine
refuses mismatched headers; its counts are not asserted. "tracepoints" (no
struct reads at all) is exercised for real, with a worker in a cgroup v2
group of its own.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from otel_pagecache.probes.bcc import BccProbe, bcc_available
from tests.conftest import Worker, make_cold_file
from tests.kernel_features import EXACT_COLD_READ

MIB = 1 << 20
UNIFIED = Path("/sys/fs/cgroup/unified")

pytestmark = pytest.mark.skipif(not bcc_available(), reason="python3-bpfcc is not installed")


@pytest.mark.parametrize("layout", ["btf", "headers"])
def test_kprobe_lookups_compile_and_pass_the_verifier(monkeypatch, real_hierarchy, layout):
    """Where the lookup tracepoints are missing (before 6.12) BCC takes lookups
    from kprobes on the read and fault functions. Forced here, with the
    choice a 6.1 kernel's BTF gives (headers: from /proc/kallsyms and the
    headers' version): the programs compile and pass the verifier, and this
    host, which has no kprobes, refuses them by name and runs without lookups
    (their counts are tested in the 5.10 and 6.1 guests)."""
    from otel_pagecache.probes import bcc
    from otel_pagecache.probes.core import LookupHook

    real_choose = bcc.choose_programs

    def choose_without_lookup_tracepoints(params):
        choice = real_choose(params)
        choice.lookup_hooks = [
            LookupHook(
                "kprobe:filemap_get_pages",
                ("kprobe_get_pages_iter", "kprobe_fault", "kprobe_map_pages"),
            )
        ]
        return choice

    monkeypatch.setattr(bcc, "choose_programs", choose_without_lookup_tracepoints)
    monkeypatch.setattr(
        bcc,
        "_kprobe_hook_from_headers",
        lambda version: [bcc.KPROBE_PROGRAMS[s] for s in ("get_pages_iter", "fault", "map_pages")],
    )
    probe = BccProbe(layout=layout).start()
    try:
        assert b"lookup_read_iter" in probe._bpf.funcs  # loaded: the verifier took it
        if probe.has_lookups:  # a kernel with kprobes
            assert probe.lookup_hook == "kprobe:filemap_get_pages"
            assert "filemap_get_pages" in probe.attached
        else:
            assert probe.lookup_hook == "none"
            assert probe.lookup_hooks_refused[0].startswith("kprobe:filemap_get_pages (")
    finally:
        probe.close()


def test_headers_layout_compiles_and_loads(real_hierarchy):
    probe = BccProbe(layout="headers").start()
    try:
        assert probe.layout == "headers" and probe.attribution == "owner"
        assert "mm_filemap_add_to_page_cache" in probe.attached
    finally:
        probe.close()


@pytest.fixture
def v2_group():
    if not (UNIFIED / "cgroup.procs").exists():
        pytest.skip("no cgroup2 hierarchy at /sys/fs/cgroup/unified")
    own = "/"
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            own = line[3:] or "/"
    group = UNIFIED / own.lstrip("/") / f"otel-pagecache-test-{uuid.uuid4().hex[:6]}"
    group.mkdir()
    yield group
    for _ in range(50):
        try:
            group.rmdir()
            break
        except OSError:
            import time

            time.sleep(0.1)


def test_tracepoint_fields_only_count_by_the_current_tasks_cgroup(
    real_hierarchy, v2_group, data_dir
):
    cold = make_cold_file(data_dir / "cold-16m", 16 * MIB)
    worker = Worker()
    try:
        worker.warm_up()
        (v2_group / "cgroup.procs").write_text(str(worker.proc.pid))
        probe = BccProbe(layout="tracepoints").start()
        try:
            assert probe.attribution == "current_task" and probe.stall_kinds == []
            group_id = os.stat(v2_group).st_ino
            before = probe.read()
            worker.do("read", cold, EXACT_COLD_READ)
            worker.do("evict", cold)
            after = probe.read()
        finally:
            probe.close()
    finally:
        worker.close()
    pages = 16 * MIB // 4096

    def delta(table: str, key) -> int:
        return getattr(after, table).get(key, 0) - getattr(before, table).get(key, 0)

    assert delta("lookups", group_id) == pages
    assert pages <= delta("insertions", group_id) <= pages + 64
    # Without task flags every insertion waits in its CPU's slot until the next
    # event there says read or write. The read's own later batches resolve
    # them and the worker is pinned to one CPU, so little is still waiting
    # when we read (unpinned, a readahead window, up to read_ahead_kb, could
    # stay on each CPU the reader left).
    batch = 512 * (os.cpu_count() or 1)
    assert pages - batch <= delta("misses", group_id) <= pages + 64
    # No task flags without struct reads: removals are not split.
    assert delta("removals", (group_id, "unknown")) >= pages
    assert delta("removals", (group_id, "invalidation")) == 0
