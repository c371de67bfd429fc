"""The libbpf binding's ring-buffer and map paths, on a small test object."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from otel_pagecache.probes.libbpf import BpfObject

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@pytest.fixture
def ringbuf_object(tmp_path, real_hierarchy) -> Path:
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang is not installed (scripts/bootstrap installs it)")
    out = tmp_path / "ringbuf_probe.bpf.o"
    subprocess.run(
        [
            clang,
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-I",
            str(ROOT / "bpf"),
            "-c",
            str(HERE / "bpf" / "ringbuf_probe.bpf.c"),
            "-o",
            str(out),
        ],
        check=True,
    )
    return out


def test_ring_buffer_records_arrive_and_close_detaches(ringbuf_object, tmp_path):
    obj = BpfObject(str(ringbuf_object))
    try:
        obj.load()
        obj.attach("emit")
        target = obj.map("target_tgid")
        assert not target.percpu and target.max_entries == 1
        key = struct.pack("=I", 0)
        assert target.lookup(key) == struct.pack("=I", 0)
        target.update(key, struct.pack("=I", os.getpid()))  # trace our own process
        assert target.lookup(key) == struct.pack("=I", os.getpid())

        records = []
        ring = obj.ring_buffer({"records": records.append})
        data = tmp_path / "small"
        data.write_bytes(b"x" * 8192)
        with open(data, "rb") as f:
            f.read()
        handled = ring.poll(1000)
        ring.close()
        assert handled >= 1
        tgid, _pad, index, last = struct.unpack("=IIQQ", records[0][:24])
        assert tgid == os.getpid() and index == 0 and last >= 1
    finally:
        obj.close()
    assert obj.attached == []
