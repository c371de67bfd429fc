"""Which programs each kernel gets, chosen from its BTF only.

The signatures below were read from the BTF of Debian's kernels
(`bpftool btf dump file vmlinux`): bullseye 5.10.223, bookworm 6.1.176,
trixie 6.12.117, trixie-backports 7.3.4. What actually loads and counts on
them is checked in the guests (scripts/vmtest); this pins the choice."""

from __future__ import annotations

import pytest

from otel_pagecache.probes.bcc import _drift_flags, _kprobe_hook, _kprobe_hook_from_headers
from otel_pagecache.probes.btf_offsets import KIND_FUNC, KIND_TYPEDEF
from otel_pagecache.probes.core import choose_programs

P = "*"
RECLAIM_OLD = [("", P), ("", "int"), ("", "gfp_t")]
RECLAIM_7 = [("", P), ("", "gfp_t"), ("", "int"), ("", P)]
THROTTLE_THRESH = (
    [("", P), ("", P)]
    + [("", "long unsigned int")] * 9
    + [
        ("", "long int"),
        ("", "long unsigned int"),
    ]
)
THROTTLE_DTC = (
    [("", P), ("", P), ("", P)]
    + [("", "long unsigned int")] * 4
    + [
        ("", "long int"),
        ("", "long unsigned int"),
    ]
)
FAULTS = {
    "filemap_fault": [("vmf", P)],
    "filemap_map_pages": [("vmf", P), ("start_pgoff", "pgoff_t"), ("end_pgoff", "pgoff_t")],
}
LOOKUP_TPS = {
    "mm_filemap_get_pages": [
        ("", P),
        ("", P),
        ("", "long unsigned int"),
        ("", "long unsigned int"),
    ],
    "mm_filemap_fault": [("", P), ("", P), ("", "long unsigned int")],
    "mm_filemap_map_pages": [
        ("", P),
        ("", P),
        ("", "long unsigned int"),
        ("", "long unsigned int"),
    ],
}


def _kernel(tracepoints: dict, functions: dict):
    def params(name: str, kind: int):
        if kind == KIND_TYPEDEF and name.startswith("btf_trace_"):
            return tracepoints.get(name.removeprefix("btf_trace_"))
        return functions.get(name) if kind == KIND_FUNC else None

    return params


def _common(dirty: str, reclaim: list, throttle: list) -> dict:
    return {
        "mm_filemap_add_to_page_cache": [("", P), ("", P)],
        "mm_filemap_delete_from_page_cache": [("", P), ("", P)],
        dirty: [("", P), ("", P), ("", P)],
        "mm_vmscan_memcg_reclaim_begin": reclaim,
        "mm_vmscan_direct_reclaim_begin": reclaim,
        "mm_vmscan_memcg_reclaim_end": [("", P), ("", "long unsigned int")],
        "mm_vmscan_direct_reclaim_end": [("", P), ("", "long unsigned int")],
        "balance_dirty_pages": throttle,
    }


KERNELS = {
    "5.10": _kernel(
        _common("writeback_dirty_page", RECLAIM_OLD, THROTTLE_THRESH),
        {"generic_file_buffered_read": [("iocb", P), ("iter", P), ("written", "ssize_t")]} | FAULTS,
    ),
    "6.1": _kernel(
        _common("writeback_dirty_folio", RECLAIM_OLD, THROTTLE_THRESH),
        {"filemap_get_pages": [("iocb", P), ("iter", P), ("fbatch", P)]} | FAULTS,
    ),
    "6.12": _kernel(
        _common("writeback_dirty_folio", RECLAIM_OLD, THROTTLE_THRESH) | LOOKUP_TPS,
        {"filemap_get_pages": [("iocb", P), ("count", "size_t"), ("fbatch", P), ("u", "bool")]}
        | FAULTS,
    ),
    "7.3": _kernel(
        _common("writeback_dirty_folio", RECLAIM_7, THROTTLE_DTC) | LOOKUP_TPS,
        {"filemap_get_pages": [("iocb", P), ("count", "size_t"), ("fbatch", P), ("u", "bool")]}
        | FAULTS,
    ),
}


@pytest.mark.parametrize(
    ("kernel", "dirty", "reclaim_begin", "throttle", "hooks"),
    [
        (
            "5.10",
            "on_dirty_page",
            "on_memcg_reclaim_begin",
            "on_balance_dirty_pages_thresh",
            {
                "fentry:generic_file_buffered_read": (
                    "fentry_buffered_read",
                    "fentry_fault",
                    "fentry_map_pages",
                ),
                "kprobe:generic_file_buffered_read": (
                    "kprobe_buffered_read",
                    "kprobe_fault",
                    "kprobe_map_pages",
                ),
            },
        ),
        (
            "6.1",
            "on_dirty_folio",
            "on_memcg_reclaim_begin",
            "on_balance_dirty_pages_thresh",
            {
                "fentry:filemap_get_pages": (
                    "fentry_get_pages_iter",
                    "fentry_fault",
                    "fentry_map_pages",
                ),
                "kprobe:filemap_get_pages": (
                    "kprobe_get_pages_iter",
                    "kprobe_fault",
                    "kprobe_map_pages",
                ),
            },
        ),
        (
            "6.12",
            "on_dirty_folio",
            "on_memcg_reclaim_begin",
            "on_balance_dirty_pages_thresh",
            {"tracepoint": ("on_fault", "on_get_pages", "on_map_pages")},
        ),
        (
            "7.3",
            "on_dirty_folio",
            "on_memcg_reclaim_begin_gfp",
            "on_balance_dirty_pages",
            {"tracepoint": ("on_fault", "on_get_pages", "on_map_pages")},
        ),
    ],
)
def test_programs_follow_each_kernels_btf(kernel, dirty, reclaim_begin, throttle, hooks):
    choice = choose_programs(KERNELS[kernel])
    programs = set(choice.tracepoint_programs)
    assert {"on_add_to_page_cache", "on_delete_from_page_cache", dirty, throttle} <= programs
    assert reclaim_begin in programs
    assert reclaim_begin.replace("memcg", "direct") in programs
    assert {h.code: h.programs for h in choice.lookup_hooks} == hooks
    # One program per tracepoint: never both variants of a pair.
    assert len(programs) == 8
    # Only what the kernel lacks for good is reported missing.
    lookup_tps = {"filemap:mm_filemap_get_pages", "filemap:mm_filemap_fault"}
    assert (lookup_tps <= set(choice.missing_tracepoints)) == (kernel in ("5.10", "6.1"))
    assert "writeback:writeback_dirty_folio" not in choice.missing_tracepoints


def test_bcc_gets_the_same_choice_as_compile_flags():
    assert _drift_flags(choose_programs(KERNELS["5.10"]).tracepoint_programs) == [
        "-DDIRTY_PAGE_TRACEPOINT",
        "-DTHROTTLE_THRESH_ARGS",
    ]
    assert _drift_flags(choose_programs(KERNELS["7.3"]).tracepoint_programs) == [
        "-DRECLAIM_BEGIN_GFP_FIRST"
    ]


def test_a_kernel_without_any_read_function_gets_no_lookup_hook():
    params = _kernel(_common("writeback_dirty_folio", RECLAIM_OLD, THROTTLE_THRESH), FAULTS)
    assert choose_programs(params).lookup_hooks == []


def test_bcc_takes_lookups_from_kprobes_where_the_tracepoints_are_missing():
    """Before 6.12 the BCC engine hooks, by kprobe, the functions the CO-RE
    engine's kprobe hook names (as bcc's own cachestat does); from 6.12 it
    takes the tracepoints."""
    faults = [
        ("filemap_fault", "lookup_fault_entry"),
        ("filemap_map_pages", "lookup_map_pages_entry"),
    ]
    assert _kprobe_hook(choose_programs(KERNELS["5.10"]).lookup_hooks) == [
        ("generic_file_buffered_read", "lookup_read_iter"),
        *faults,
    ]
    assert _kprobe_hook(choose_programs(KERNELS["6.1"]).lookup_hooks) == [
        ("filemap_get_pages", "lookup_read_iter"),
        *faults,
    ]
    assert _kprobe_hook(choose_programs(KERNELS["6.12"]).lookup_hooks) == []


@pytest.mark.parametrize(
    ("version", "symbols", "read"),
    [
        ("5.10.0-33-amd64", ["generic_file_buffered_read"], "lookup_read_iter"),
        ("6.1.0-57-amd64", ["filemap_get_pages"], "lookup_read_iter"),
        ("6.6.58", ["filemap_get_pages"], "lookup_read_count"),
        ("6.1.0-57-amd64", [], None),
    ],
)
def test_bcc_without_btf_takes_its_kprobes_from_kallsyms_and_the_headers(
    tmp_path, version, symbols, read
):
    """No BTF, headers that match the kernel: which functions exist comes from
    /proc/kallsyms, the read function's signature from the headers' version."""
    kallsyms = tmp_path / "kallsyms"
    lines = [f"ffffffff8123c0d0 t {s}" for s in [*symbols, "filemap_fault", "filemap_map_pages"]]
    kallsyms.write_text("\n".join(["ffffffff81000000 T _stext", *lines]) + "\n")
    hook = _kprobe_hook_from_headers(version, str(kallsyms))
    if read is None:
        assert hook == []
    else:
        assert [program for _, program in hook] == [
            read,
            "lookup_fault_entry",
            "lookup_map_pages_entry",
        ]


@pytest.mark.parametrize(
    ("kernel", "exact"),
    [
        ("5.10", None),  # generic_file_buffered_read: no batch of folios to read
        ("6.1", "fexit_shared_iter"),
        ("6.12", "fexit_shared_count"),
        ("7.3", "fexit_shared_count"),
    ],
)
def test_shared_hits_are_exact_for_reads_where_filemap_get_pages_has_a_folio_batch(kernel, exact):
    choice = choose_programs(KERNELS[kernel])
    # Extent mode underneath: faults are apportioned by extents in exact mode too.
    assert choice.sharing_mode == "extent"
    assert choice.exact_sharing_program == exact


def test_a_pagevec_filemap_get_pages_stays_in_extent_mode():
    """5.12 .. 5.15 handed over a pagevec of pages, which the program does not read."""
    functions = {"filemap_get_pages": [("iocb", P), ("iter", P), ("pvec", P)]} | FAULTS
    choice = choose_programs(
        _kernel(_common("writeback_dirty_page", RECLAIM_OLD, THROTTLE_THRESH), functions)
    )
    assert choice.sharing_mode == "extent"
    assert choice.exact_sharing_program is None
