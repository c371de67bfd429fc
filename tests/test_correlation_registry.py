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
    time.sleep(0.05)
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
