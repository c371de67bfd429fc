"""The agent trusts a span-slot registry only if its own process wrote it."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
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


def test_an_announced_process_without_a_registry_is_forgotten_once_gone(target):
    """The kernel may have recorded the slots an announcement carried (5.15+)
    though the agent cannot read the process's file: the map entry is still
    removed when the process is gone, and not before."""
    pid, _ = target
    forgotten: list[int] = []
    registry = SlotRegistry(lambda *entry: None, forgotten.extend)
    registry._last = time.monotonic()  # no scan until asked
    registry.request(pid)  # announced, no file
    registry.run_once(0.2)
    registry.scan()
    assert forgotten == []  # alive: kept
    os.kill(pid, 9)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)
    registry.scan()
    assert forgotten == [pid]
    registry.scan()
    assert forgotten == [pid]  # once


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


def _registry_since(pid: int, since: float) -> bytes | None:
    """The registry of ``pid`` if written after ``since``: a file of an earlier
    process of the same pid is not this one's (the agent ignores it too)."""
    path = Path(registry_path(pid))
    try:
        if path.stat().st_mtime >= since:
            return path.read_bytes()
    except OSError:
        pass
    return None


def _forked_child_registry(slots) -> tuple[bytes | None, bytes | None]:
    """Fork (as multiprocessing or a pre-fork server does); in the child, the
    registry of its pid before and after its first span starts."""
    read_end, write_end = os.pipe()
    before = time.time() - 1  # mtime granularity
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        try:

            def registry() -> str:
                found = _registry_since(os.getpid(), before)
                return found.decode().strip() if found is not None else "-"

            at_fork = registry()
            slots.set(threading.get_native_id(), 1, 2, 1)
            os.write(write_end, f"{at_fork}|{registry()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as f:
            at_fork, at_span = f.read().decode().split("|")
    finally:
        os.waitpid(pid, 0)
        Path(registry_path(pid)).unlink(missing_ok=True)
    return tuple(None if r == "-" else r.encode() for r in (at_fork, at_span))


def test_forked_children_publish_the_slots_at_their_first_span_while_they_are_open():
    """A forked child has its parent's slots (same address, its own pid): it
    publishes them when it first starts a span, not at the fork, so a child
    that execs at once (subprocess with a preexec_fn runs the at-fork
    handlers) leaves no registry behind (its exec skips atexit). Once the
    slots are closed (instrumentation removed) a child never publishes: the
    at-fork handlers stay registered, and their address would name memory no
    span fills (in the full suite the pytest process's closed slots misled
    the pipeline test's app this way)."""
    from otel_pagecache.correlation import SpanSlots

    slots = SpanSlots(count=64)
    try:
        at_fork, at_span = _forked_child_registry(slots)
        assert at_fork is None, f"a forked child wrote a registry before any span: {at_fork}"
        assert at_span is not None, "a forked child's first span published no registry"
        assert parse_registry(at_span) == (slots.address, 64, ctypes.sizeof(SpanSlot))
        before = time.time() - 1  # mtime granularity
        proc = subprocess.Popen(["sleep", "5"], preexec_fn=lambda: None)
        try:
            assert _registry_since(proc.pid, before) is None, (
                f"child {proc.pid}, exec'd after a fork, left a registry"
            )
        finally:
            proc.kill()
            proc.wait()
    finally:
        slots.close()
    assert not Path(registry_path(os.getpid())).exists()
    assert _forked_child_registry(slots) == (None, None), "a child of closed slots published"


# The plugin's process: instruments itself, says where its slots are, waits.
_PLUGIN_PROCESS = """
import sys
from otel_pagecache.correlation import SpanSlots
slots = SpanSlots()
print(slots.address, slots.count, flush=True)
sys.stdin.read()
"""


@pytest.mark.kernel
@pytest.mark.parametrize("engine", ["core", "bcc"])
def test_an_announcement_records_its_slots_in_the_kernel_before_the_rename_returns(
    real_hierarchy, engine
):
    """The rename that announces span slots carries them, and the program
    records them itself, from the syscall's saved registers
    (bpf_task_pt_regs, or before 5.15 the top of the kernel stack): the
    process's first stall links however late user space runs. Here no one
    reads the announcement ring, so the map entry can only come from the
    kernel side; a same-name rename without the slots, and one with a wrong
    magic number, record nothing."""
    from otel_pagecache.correlation import PR_SET_NAME, _prctl
    from otel_pagecache.probes.bcc import BccProbe, bcc_available
    from otel_pagecache.probes.core import CoreProbe
    from otel_pagecache.probes.layout import SPAN_SLOTS_MAGIC
    from tests.bpf_maps import span_slot_base

    if engine == "bcc" and not bcc_available():
        pytest.skip("BCC's Python module (python3-bpfcc) is not installed")
    probe = (CoreProbe if engine == "core" else BccProbe)(lookups=False).start()
    plugin = subprocess.Popen(
        [os.sys.executable, "-c", _PLUGIN_PROCESS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address, count = (int(f) for f in plugin.stdout.readline().split())
        assert span_slot_base(plugin.pid) == {
            "address": address,
            "count": count,
            "size": ctypes.sizeof(SpanSlot),
        }
        # This process: a plain same-name rename, then one with a wrong magic.
        name = Path("/proc/thread-self/comm").read_bytes().rstrip(b"\n")
        _rename_self(name)
        size = ctypes.sizeof(SpanSlot)
        assert _prctl()(PR_SET_NAME, name, 140000000000, 64 << 32 | size, SPAN_SLOTS_MAGIC ^ 1) == 0
        assert span_slot_base(os.getpid()) is None
    finally:
        plugin.stdin.close()
        plugin.wait(10)
        probe.forget_span_slots([plugin.pid, os.getpid()])
        probe.close()
