"""The agent trusts a span-slot registry only if its own process wrote it."""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from pathlib import Path

import pytest

from otel_pagecache.correlation import SlotRegistry, parse_registry, registry_path
from otel_pagecache.probes.btf_offsets import KernelBtf
from otel_pagecache.probes.core import BpfObject, choose_programs, default_object_path, kernel_hz
from otel_pagecache.probes.layout import SpanSlot


@pytest.fixture
def target():
    proc = subprocess.Popen(["sleep", "60"])
    deadline = time.monotonic() + 5
    while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":  # exec'd
        assert time.monotonic() < deadline, "sleep(1) did not start within 5 s"
        time.sleep(0.005)
    path = Path(registry_path(proc.pid))
    yield proc.pid, path
    proc.kill()
    proc.wait(10)
    path.unlink(missing_ok=True)


def _scan(pid: int) -> list:
    published = []
    SlotRegistry(lambda *entry: published.append(entry), lambda pids: None).scan()
    return [e for e in published if e[0] == pid]


def _content() -> str:
    return f"140000000000 4096 {ctypes.sizeof(SpanSlot)}\n"


def test_the_processes_own_fresh_file_is_published(target):
    pid, path = target
    path.write_text(_content())
    assert _scan(pid) == [(pid, 140000000000, 4096, ctypes.sizeof(SpanSlot))]


def test_another_users_file_is_ignored(target):
    pid, path = target
    path.write_text(_content())
    os.chown(path, 65534, 65534)
    assert _scan(pid) == []


def test_a_symlink_is_ignored(target, tmp_path):
    pid, path = target
    real = tmp_path / "real"
    real.write_text(_content())
    path.symlink_to(real)
    assert _scan(pid) == []


def test_a_file_older_than_the_process_is_ignored(target):
    pid, path = target
    path.write_text(_content())
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert _scan(pid) == []


def test_registry_parser_accepts_only_three_sane_numbers():
    size = ctypes.sizeof(SpanSlot)
    assert parse_registry(f"1 2 {size}\n".encode()) == (1, 2, size)
    for bad in (b"", b"1 2", b"1 2 3 4", b"-1 2 32", b"1 0 32", b"x y z", b"1 2 31"):
        assert parse_registry(bad) is None


def test_the_object_loads_without_a_kernel_config_file(real_hierarchy):
    # What libbpf would otherwise read from /proc/config.gz or /boot: given here.
    assert kernel_hz() in (100, 250, 300, 1000)
    obj = BpfObject(default_object_path(), kconfig="CONFIG_HZ=0\n")
    # The programs that fit this kernel (the others are variants for older ones).
    with KernelBtf() as btf:
        choice = choose_programs(btf.params)
    wanted = set(choice.tracepoint_programs)
    if choice.lookup_hooks:
        wanted |= set(choice.lookup_hooks[0].programs)
    try:
        for program in obj.programs:
            obj.set_autoload(program, program in wanted)
        obj.load()
    finally:
        obj.close()


class _CountingRegistry(SlotRegistry):
    """A registry that counts its reads of registry files."""

    def __init__(self) -> None:
        self.published: list[tuple[int, int, int, int]] = []
        super().__init__(lambda *entry: self.published.append(entry), lambda pids: None)
        self.reads: list[int] = []
        self._last = time.monotonic()  # no scan in these tests: requests only

    def _read(self, pid: int):
        self.reads.append(pid)
        return super()._read(pid)


def test_an_announced_process_is_read_at_once_under_the_same_checks(target):
    pid, path = target
    path.write_text(_content())
    registry = _CountingRegistry()
    registry.request(pid)
    registry.run_once(0.2)
    assert registry.published == [(pid, 140000000000, 4096, ctypes.sizeof(SpanSlot))]
    assert registry.announced == 1
    # Another user's file is refused on announcement as in the scan.
    os.chown(path, 65534, 65534)
    other = _CountingRegistry()
    other.request(pid)
    other.run_once(0.2)
    assert other.reads == [pid] and other.published == []


def test_unlinked_stalls_ask_once_per_scan_for_a_process_without_slots(target):
    pid, path = target
    registry = _CountingRegistry()
    for _ in range(5):
        registry.request(pid, announced=False)
    registry.run_once(0.2)
    assert registry.reads == [pid]  # found without a registry: not read again
    # An announcement is always read: it comes right after the file was written.
    path.write_text(_content())
    registry.request(pid)
    registry.run_once(0.2)
    assert registry.reads == [pid, pid] and len(registry.published) == 1
    # Known now: a stall's request costs nothing.
    registry.request(pid, announced=False)
    registry.run_once(0.2)
    assert registry.reads == [pid, pid]


def test_requests_are_bounded_between_scans():
    registry = _CountingRegistry()
    for pid in range(SlotRegistry.MAX_PENDING + 100):
        registry.request(10_000_000 + pid)  # never blocks, past the queue's bound too
    registry.run_once(0.5)
    assert len(registry.reads) == SlotRegistry.MAX_LOOKUPS_PER_SCAN


def _rename_self(name: bytes) -> None:
    with open("/proc/thread-self/comm", "wb") as f:
        f.write(name)


@pytest.mark.kernel
def test_a_rename_to_the_same_name_announces_the_process(real_hierarchy):
    """The kernel side of the announcement (bpf/pagecache_bookkeeping.h
    slots_announced; the BCC engine's is the same code, exercised by
    tests/test_correlation.py): a thread renamed to the name it has sends its
    process's pid, whether its slots are known or not (they may be new: an
    exec'd child, instrumentation set up again); a real rename sends nothing."""
    from otel_pagecache.probes.core import CoreProbe

    probe = CoreProbe(lookups=False).start()
    try:
        if "on_task_rename" not in probe.attached:
            pytest.fail(f"task:task_rename not attached: {probe.attached}")
        announced: list[int] = []
        ring = probe.stall_ring(lambda record: None, on_announcement=announced.append)
        try:
            with open("/proc/thread-self/comm", "rb") as f:
                name = f.read().rstrip(b"\n")
            _rename_self(name)
            _rename_self(b"otel-pc-renamed")  # a real rename: nothing
            _rename_self(name)  # back: a new name again, nothing
            ring.poll(1000)
            ring.poll(100)
            assert announced == [os.getpid()]
            probe.publish_span_slots(os.getpid(), 140000000000, 4096, ctypes.sizeof(SpanSlot))
            _rename_self(name)  # known: announced again, its slots may be new
            _rename_self(b"otel-pc-renamed")
            ring.poll(1000)
            ring.poll(100)
            assert announced == [os.getpid(), os.getpid()]
        finally:
            probe.forget_span_slots([os.getpid()])
            ring.close()
    finally:
        probe.close()


def test_forked_children_get_a_registry_only_while_the_slots_are_open(tmp_path):
    """A forked child has its parent's slots (same address, its own pid): it
    publishes them. Once the slots are closed (instrumentation removed) a
    child must not: at-fork handlers stay registered, and a child that then
    execs another program (subprocess with a preexec_fn runs them) would
    announce the parent's address under its pid, stale after the exec (in the
    full suite the pytest process's closed slots misled the pipeline test's
    app this way)."""
    from otel_pagecache.correlation import SpanSlots

    slots = SpanSlots(count=64)

    def child_registry() -> tuple[int, bytes | None]:
        # preexec_fn: the child returns to Python after fork, so the at-fork
        # handlers run in it, as they do for a real fork.
        proc = subprocess.Popen(["sleep", "5"], preexec_fn=lambda: None)
        try:
            path = Path(registry_path(proc.pid))
            return proc.pid, path.read_bytes() if path.exists() else None
        finally:
            proc.kill()
            proc.wait()
            Path(registry_path(proc.pid)).unlink(missing_ok=True)

    try:
        pid, open_registry = child_registry()
        assert open_registry is not None, f"no registry for forked child {pid}"
        assert parse_registry(open_registry) == (slots.address, 64, ctypes.sizeof(SpanSlot))
    finally:
        slots.close()
    assert not Path(registry_path(os.getpid())).exists()
    pid, closed_registry = child_registry()
    assert closed_registry is None, f"forked child {pid} of closed slots got a registry"
