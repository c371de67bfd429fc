"""What the agent itself says the running kernel lacks, for the kernel tests.

The tests marked ``kernel`` run on the host and in every guest of the VM
kernel matrix (tests/test_kernel_matrix.py). A test of a feature the running
kernel legitimately lacks skips, with the reason in the agent's own words
(the engine's report of missing tracepoints); it never passes silently. An
engine that fails to load is not such a case: those tests fail.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess

import pytest

from otel_pagecache.probes import ProbeUnavailable
from otel_pagecache.probes.btf_offsets import KIND_FUNC, KernelBtf
from otel_pagecache.probes.core import (
    LOOKUP_PROGRAMS,
    PROGRAMS,
    SHARED_EXACT_FUNCTION,
    CoreProbe,
    choose_programs,
)
from otel_pagecache.probes.libbpf import fexit_refused

# Set by scripts/vmtest in its guests: the matrix name of the kernel.
GUEST_KERNEL = os.environ.get("VMTEST_KERNEL")
LOOKUP_TRACEPOINTS = tuple(PROGRAMS[p] for p in sorted(LOOKUP_PROGRAMS))


# The read size of a cold read whose lookups a test asserts exactly, on every
# hook. 6.12+'s mm_filemap_get_pages stays silent when filemap_get_pages hands
# back a partial batch because its last folio was still locked by the read's
# own I/O: a read of several pages whose first batch goes that way is counted
# from its next batch on (docs/engines.md, "unreported batches"). A one-page
# read's batch is one folio, which that path retries until it is reported, so
# one-page reads are exact however the I/O is timed. Multi-page cold reads are
# checked by test_activity's migrating-reader tests, which allow exactly that
# kernel limit on a tracepoint hook; warm multi-page reads never take it.
EXACT_COLD_READ = 4096


@functools.cache
def exact_sharing_program() -> str:
    """The exact-mode program choose_programs picks for this kernel, "" if
    none (no filemap_get_pages with a folio batch)."""
    with KernelBtf() as btf:
        return choose_programs(btf.params).exact_sharing_program


# The guests that run the shared-hit cases against /proc/kpagecgroup
# (test_sharing*.py): 6.12 and 7.x, as issue 17 asks. 5.10 (extent mode,
# struct page) and 6.1 (exact mode) are covered by test_activity.py's
# both-engine check, which costs them seconds where the cases cost a minute.
SHARING_CASE_GUESTS = ("6.12", "7")
sharing_cases_here = pytest.mark.skipif(
    GUEST_KERNEL is not None and GUEST_KERNEL not in SHARING_CASE_GUESTS,
    reason=f"the shared-hit cases run in the {' and '.join(SHARING_CASE_GUESTS)} guests",
)


@functools.cache
def shared_mode() -> str:
    """How the CO-RE engine must tell shared hits here: "exact" for reads
    where filemap_get_pages hands over a folio batch and fexit loads, else
    "extent". Known for the guests (6.1, 6.12, 7.x exact; 5.10 has no such
    function); elsewhere (this project's host refuses fentry/fexit, others
    may not) an empty fexit on the function is tried, apart from the engine."""
    if GUEST_KERNEL is not None:
        return "exact" if GUEST_KERNEL in ("6.1", "6.12", "7") else "extent"
    if not exact_sharing_program():
        return "extent"
    with KernelBtf() as btf:
        refused = fexit_refused(btf.type_id(SHARED_EXACT_FUNCTION, KIND_FUNC) or 0)
    return "extent" if refused else "exact"


@functools.cache
def core_report() -> tuple[bool, tuple[str, ...]]:
    """(serves lookups, tracepoints missing) as the CO-RE engine reports them here.
    (True, ()) if it cannot load: the tests that need it then fail on their own,
    with the engine's error, rather than skip."""
    try:
        probe = CoreProbe(lookups=True, stalls=True).start()
    except ProbeUnavailable:
        return True, ()
    try:
        return probe.has_lookups, tuple(probe.missing_tracepoints)
    finally:
        probe.close()


def skip_if_lacking(tracepoints: tuple[str, ...], what: str, missing=None) -> None:
    """Skip when the agent reports any of ``tracepoints`` missing from this kernel."""
    missing = core_report()[1] if missing is None else missing
    lacking = [t for t in tracepoints if t in missing]
    if lacking:
        pytest.skip(
            f"no {what} on {os.uname().release}: the agent reports {', '.join(lacking)} "
            "missing from this kernel"
        )


def skip_unless_lookups(probe=None) -> None:
    """Skip a lookups test when the engine (``probe``, started; else CO-RE's
    report) serves no lookups here because the kernel lacks their hooks."""
    has, missing = (probe.has_lookups, probe.missing_tracepoints) if probe else core_report()
    if not has:
        skip_if_lacking(LOOKUP_TRACEPOINTS, "lookups", missing)


@functools.cache
def preempts_tracepoint_programs() -> bool:
    """Whether this kernel may preempt a BPF program on a tracepoint: its
    preemption mode is full or lazy (7.x boots lazy). Read from debugfs,
    "none voluntary full (lazy)"; a guest of scripts/vmtest mounts it (the
    guest is thrown away), elsewhere an unreadable mode counts as no."""
    mode = "/sys/kernel/debug/sched/preempt"
    if GUEST_KERNEL and not os.path.exists(mode):
        subprocess.run(
            ["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"], capture_output=True
        )
    try:
        with open(mode) as f:
            text = f.read()
    except OSError:
        return False
    return "(full)" in text or "(lazy)" in text


def skipped_program_runs() -> int:
    """Runs of the probes' programs the kernel skipped (bpf_prog_info's
    recursion_misses: the program was already running on that CPU, which
    happens when a kernel preempts a BPF program), all engines together."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    try:
        programs = json.loads(out.stdout or "[]")
    except ValueError:
        return 0
    ours = ("on_", "fentry_", "kprobe_", "raw_tracepoint")
    return sum(p.get("recursion_misses", 0) for p in programs if p.get("name", "").startswith(ours))
