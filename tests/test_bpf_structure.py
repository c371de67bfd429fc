"""One bookkeeping, many attachments: every BPF program (CO-RE, its variants
for old kernels, both BCC programs) takes lookup ranges, read continuation,
pending insertions, fault-around and stall begin/end from
bpf/pagecache_bookkeeping.h and keeps no copy of its own; nor of the removal
reason (eviction or invalidation) or the creation of counters on first use."""

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


def _code(path: Path) -> str:
    """The file's text without its comments."""
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", path.read_text(), flags=re.DOTALL)


def _engine_files() -> list[Path]:
    return [p for p in sorted(BPF.glob("*")) if p.name not in (HEADER, "pagecache.h", "vmlinux.h")]


def _function(text: str, name: str) -> str:
    """A static inline function's definition, from its signature to its closing brace."""
    match = re.search(
        rf"^static __always_inline [\w\s*]+?\b{name}\(.*?^}}$", text, re.MULTILINE | re.DOTALL
    )
    return match.group(0) if match else ""


def test_removal_reason_is_decided_once():
    """Eviction, invalidation or (BCC's tracepoint-only program, which cannot read
    the task) unknown: removal_reason() in the header chooses; each program only
    hands it the task, and reads the task's flags its own way."""
    header = _code(BPF / HEADER)
    reason = re.compile(r"\bREMOVAL_(EVICTION|INVALIDATION|UNKNOWN)\b")
    assert "removal_reason" in _defined_functions(header)
    assert set(reason.findall(_function(header, "removal_reason"))) == {
        "EVICTION",
        "INVALIDATION",
        "UNKNOWN",
    }
    assert len(reason.findall(header)) == 3
    reclaim_flags = re.compile(r"\bPF_(KSWAPD|MEMALLOC)\b|reclaim_state\(task\)")
    for path in _engine_files():
        text = _code(path)
        assert not reason.search(text), (path.name, reason.search(text))
        assert not reclaim_flags.search(text), (path.name, reclaim_flags.search(text))
    for name in PROGRAMS:
        text = _code(BPF / name)
        assert "removal_reason(" in text, name
        assert ("#define TASK_FIELDS_UNREADABLE" in text) == (name == "pagecache_bcc_tp.c"), name


def test_counters_are_created_in_one_place():
    """Look the key up and add; else insert (BPF_NOEXIST); on a race look up again;
    else count the loss: find_or_create() in the header, for every per-CPU counter
    (count) and pagecache_file_pages (file_key_add). An engine only says how it looks
    up and inserts (map_find, map_insert): no other insertion, and no program decides
    what a full map loses."""
    header = _code(BPF / HEADER)
    assert {"find_or_create", "count", "file_key_add"} <= _defined_functions(header)
    creating = _function(header, "find_or_create")
    assert len(re.findall(r"\bmap_insert\(", creating)) == 1
    assert len(re.findall(r"\bmap_find\(", creating)) == 2
    assert len(re.findall(r"\bmap_insert\(", header)) == 1
    assert "LOST_MEMCG_MAP_FULL" in _function(header, "count")
    assert "LOST_FILE_MAP_FULL" in _function(header, "file_key_add")
    insertion = re.compile(r"\bBPF_NOEXIST\b|\.insert\(|\bmap_insert\(")
    full = re.compile(r"\bLOST_(MEMCG|FILE)_MAP_FULL\b")
    engines_inserting = set()
    for path in _engine_files():
        text = _code(path)
        accessor = _function(text, "map_insert")
        if accessor:
            engines_inserting.add(path.name)
            assert insertion.search(accessor.split("{", 1)[1]), path.name
        outside = text.replace(accessor, "")
        assert not insertion.search(outside), (path.name, insertion.search(outside))
        assert not full.search(text), (path.name, full.search(text))
    assert engines_inserting == {"pagecache.bpf.c", "pagecache_bcc_common.h"}


def test_bcc_gets_the_header_pasted_once_into_its_text():
    """BCC's map calls work only in the text it compiles: the loader pastes our
    #include "..." files in place (the engine-neutral header among them)."""
    marker = "#ifndef __PAGECACHE_BOOKKEEPING_H__"
    for layout in ("btf", "headers", "tracepoints"):
        text = _source(layout)
        assert text.count(marker) == 1, layout
        assert not re.search(r'^#include "', text, re.MULTILINE), layout


def test_lookups_from_the_read_and_fault_functions_are_decided_once():
    """Before 6.12 both engines take lookups from the read and fault functions
    (CO-RE by fentry or kprobe, BCC by kprobe): the byte range clamped to the
    file's size and the fault-around window clamped to its last page are
    worked out in the header, from what each engine reads its own way."""
    header = _code(BPF / HEADER)
    entered = {"lookup_read_entered", "lookup_fault_around_entered"}
    assert entered <= _defined_functions(header)
    assert "LOOKUP_PAGE_SHIFT" in _function(header, "read_range")
    assert "read_range(" in _function(header, "lookup_read_entered")
    for name in ("pagecache.bpf.c", "pagecache_bcc.c"):
        text = _code(BPF / name)
        for function in entered:
            assert f"{function}(" in text, (name, function)
    # No engine turns bytes into pages or clamps to the file's size itself.
    clamping = re.compile(r"PAGE_SHIFT|\bend\s*=\s*size\b|last_in_file")
    for path in _engine_files():
        text = _code(path)
        assert not clamping.search(text), (path.name, clamping.search(text))


def test_a_new_read_is_saved_in_one_place():
    """A multi-page read becomes its thread's reads_in_progress entry in
    read_started() only: rewritten in place when the thread has one (a look-up,
    not an LRU update, on the hot path of large cached reads), else created."""
    header = _code(BPF / HEADER)
    started = _function(header, "read_started")
    assert "read_progress_find(" in started and "read_progress_save(" in started
    assert len(re.findall(r"\bread_progress_save\(", header)) == 1
