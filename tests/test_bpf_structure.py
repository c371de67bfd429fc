"""One bookkeeping, many attachments: every BPF program (CO-RE, its variants
for old kernels, both BCC programs) takes lookup ranges, read continuation,
pending insertions, fault-around and stall begin/end from
bpf/pagecache_bookkeeping.h and keeps no copy of its own."""

from __future__ import annotations

import re
from pathlib import Path

from otel_pagecache.probes.bcc import _source

BPF = Path(__file__).resolve().parent.parent / "bpf"
HEADER = "pagecache_bookkeeping.h"
PROGRAMS = ("pagecache.bpf.c", "pagecache_bcc.c", "pagecache_bcc_tp.c")


def _defined_functions(text: str) -> set[str]:
    # static __always_inline void lookup_read(TASK_T task, u64 mapping, ...)
    return set(re.findall(r"^static __always_inline [\w\s*]+?\b(\w+)\(", text, re.MULTILINE))


def test_every_program_includes_the_bookkeeping_header():
    for name in PROGRAMS:
        assert f'#include "{HEADER}"' in (BPF / name).read_text(), name


def test_no_program_defines_bookkeeping_of_its_own():
    bookkeeping = _defined_functions((BPF / HEADER).read_text())
    assert {"lookup_read", "lookup_fault", "lookup_fault_around", "count_lookups"} <= bookkeeping
    assert {"note_insertion", "resolve_pending", "stall_begin", "stall_end"} <= bookkeeping
    # The slots' and stalls' fields are touched only by the header: an
    # engine doing so would be keeping its own bookkeeping.
    bookkeeping_fields = re.compile(r"->(lookup|insert)\.|fault_(mapping|index|tid)|->last\b")
    for path in sorted(BPF.glob("*")):
        if path.name in (HEADER, "pagecache.h", "vmlinux.h"):
            continue
        text = path.read_text()
        assert not bookkeeping & _defined_functions(text), path.name
        assert not bookkeeping_fields.search(text), (path.name, bookkeeping_fields.search(text))


def test_bcc_gets_the_header_pasted_once_into_its_text():
    """BCC's map calls work only in the text it compiles: the loader pastes our
    #include "..." files in place (the engine-neutral header among them)."""
    marker = "#ifndef __PAGECACHE_BOOKKEEPING_H__"
    for layout in ("btf", "headers", "tracepoints"):
        text = _source(layout)
        assert text.count(marker) == 1, layout
        assert not re.search(r'^#include "', text, re.MULTILINE), layout
