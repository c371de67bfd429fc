"""probes/layout.py mirrors bpf/pagecache.h: checked against the object's own BTF."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from otel_pagecache.probes import layout
from otel_pagecache.probes.core import default_object_path

MIRRORS = {
    "removal_key": layout.RemovalKey,
    "file_key": layout.FileKey,
    "lookup_slot": layout.LookupSlot,
    "insert_slot": layout.InsertSlot,
    "share_memo": layout.ShareMemo,
    "cpu_slots": layout.CpuSlots,
    "stall_start": layout.StallStart,
    "stall_event": layout.StallEvent,
    "span_slot": layout.SpanSlot,
    "span_slot_base": layout.SpanSlotBase,
    "slots_announcement": layout.SlotsAnnouncement,
    "whatif_config": layout.WhatifConfig,
    "whatif_sample": layout.WhatifSample,
    "extent_key": layout.ExtentKey,
    "extent_owners": layout.ExtentOwners,
    "shared_key": layout.SharedKey,
}


def _btf_structs(path: str) -> dict[str, tuple[int, dict[str, int]]]:
    """{struct name: (size, {member: byte offset})} from `bpftool btf dump`."""
    raw = subprocess.run(
        ["bpftool", "btf", "dump", "file", path, "format", "raw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    structs: dict[str, tuple[int, dict[str, int]]] = {}
    current = None
    # [12] STRUCT 'lookup_slot' size=64 vlen=9
    header = re.compile(r"^\[\d+\] STRUCT '(\w+)' size=(\d+) vlen=\d+")
    # 	'memcg' type_id=3 bits_offset=0
    member = re.compile(r"^\s+'(\w+)' type_id=\d+ bits_offset=(\d+)")
    for line in raw.splitlines():
        if m := header.match(line):
            current = structs[m.group(1)] = (int(m.group(2)), {})
        elif current is not None and (m := member.match(line)):
            current[1][m.group(1)] = int(m.group(2)) // 8
        else:
            current = None if not line.startswith((" ", "\t")) else current
    return structs


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool not installed")
def test_python_mirrors_match_the_compiled_structs():
    structs = _btf_structs(default_object_path())
    for name, mirror in MIRRORS.items():
        size, members = structs[name]
        assert ctypes.sizeof(mirror) == size, name
        assert {f: getattr(mirror, f).offset for f, _ in mirror._fields_} == members, name


def test_python_mirrors_match_the_header_constants():
    """Numbers that BTF does not carry (#defines), read from bpf/pagecache.h."""
    header = (Path(__file__).parents[1] / "bpf" / "pagecache.h").read_text()
    # #define SPAN_SLOTS_MAGIC 0x6f74656c2d706373ULL /* "otel-pcs" */
    defines = {
        m.group(1): int(m.group(2), 0)
        for m in re.finditer(r"^#define (\w+) (0x[0-9a-fA-F]+|\d+)U?L*\b", header, re.M)
    }
    assert defines["SPAN_SLOTS_MAGIC"] == layout.SPAN_SLOTS_MAGIC
    assert defines["PAGECACHE_MAX_TRACED_PROCESSES"] == layout.MAX_TRACED_PROCESSES
