"""Python mirrors of bpf/pagecache.h (keys, values, bounds).

tests/test_bpf_layout.py compares these with the BTF of the compiled object.
"""

from __future__ import annotations

import ctypes

# The per-memcg counter maps, each named after the reading's field it fills.
COUNTER_MAPS = (
    "pagecache_lookups",
    "pagecache_misses",
    "pagecache_insertions",
    "pagecache_dirtied",
)
# Every map sized PAGECACHE_MAX_MEMCGS (pagecache.h), which
# OTEL_PAGECACHE_BPF_MAX_MEMCGS overrides on both engines.
PER_MEMCG_MAPS = (*COUNTER_MAPS, "pagecache_removals", "pagecache_shared_hits")

REMOVAL_EVICTION = 0
REMOVAL_INVALIDATION = 1
REMOVAL_UNKNOWN = 2
REMOVAL_REASONS = {
    REMOVAL_EVICTION: "eviction",
    REMOVAL_INVALIDATION: "invalidation",
    REMOVAL_UNKNOWN: "unknown",
}

LOST_MEMCG_MAP_FULL = 0
LOST_FILE_MAP_FULL = 1
LOST_STALL_RINGBUF_FULL = 2
LOST_STALL_STARTS_FULL = 3
LOST_ANNOUNCEMENT_RINGBUF_FULL = 4
LOST_WHATIF_CAPPED = 5
LOST_WHATIF_RINGBUF_FULL = 6
LOST_EXTENT_MAP_FULL = 7
LOST_FILE_OWNERS_FULL = 8
LOST_SHARED_MAP_FULL = 9
LOST_SHARED_RANGE_CUT = 10
LOST_REASONS = {
    LOST_MEMCG_MAP_FULL: "memcg_map_full",
    LOST_FILE_MAP_FULL: "file_map_full",
    LOST_STALL_RINGBUF_FULL: "stall_ring_buffer_full",
    LOST_STALL_STARTS_FULL: "stall_starts_full",
    LOST_ANNOUNCEMENT_RINGBUF_FULL: "announcement_ring_buffer_full",
    LOST_WHATIF_CAPPED: "whatif_capped",
    LOST_WHATIF_RINGBUF_FULL: "whatif_ring_buffer_full",
    LOST_EXTENT_MAP_FULL: "sharing_extent_map_full",
    LOST_FILE_OWNERS_FULL: "sharing_file_map_full",
    LOST_SHARED_MAP_FULL: "shared_hits_map_full",
    LOST_SHARED_RANGE_CUT: "shared_range_cut",
}

# Shared hits (bpf/pagecache_sharing.h).
SHARING_EXTENT_SHIFT = 9
SHARING_EXTENT_OWNERS = 3
SHARING_WHOLE_FILE = 0xFFFFFFFFFFFFFFFF

STALL_KINDS = {0: "memcg_reclaim", 1: "direct_reclaim", 2: "dirty_throttle"}

# The plugin's announcement: prctl(PR_SET_NAME, name, address, count << 32 |
# size, SPAN_SLOTS_MAGIC) (see SPAN_SLOTS_MAGIC in bpf/pagecache.h).
SPAN_SLOTS_MAGIC = 0x6F74656C2D706373
MAX_TRACED_PROCESSES = 16384  # span_slot_bases' size


class RemovalKey(ctypes.Structure):
    _fields_ = (("memcg", ctypes.c_uint64), ("reason", ctypes.c_uint32), ("pad", ctypes.c_uint32))


class FileKey(ctypes.Structure):
    _fields_ = (
        ("memcg", ctypes.c_uint64),
        ("ino", ctypes.c_uint64),
        ("dev", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    )


class ExtentKey(ctypes.Structure):
    _fields_ = (("mapping", ctypes.c_uint64), ("extent", ctypes.c_uint64))


class ExtentOwners(ctypes.Structure):
    _fields_ = (
        ("memcg", ctypes.c_uint64 * SHARING_EXTENT_OWNERS),
        ("pages", ctypes.c_int32 * SHARING_EXTENT_OWNERS),
        ("other", ctypes.c_int32),
    )


class SharedKey(ctypes.Structure):
    _fields_ = (("reader", ctypes.c_uint64), ("owner", ctypes.c_uint64))


class LookupSlot(ctypes.Structure):
    _fields_ = (
        ("memcg", ctypes.c_uint64),
        ("lookups", ctypes.c_uint64),
        ("mapping", ctypes.c_uint64),
        ("index", ctypes.c_uint64),
        ("last", ctypes.c_uint64),
        ("fault_mapping", ctypes.c_uint64),
        ("fault_index", ctypes.c_uint64),
        ("cset", ctypes.c_uint64),
        ("flushes", ctypes.c_uint64),
        ("tid", ctypes.c_uint32),
        ("fault_tid", ctypes.c_uint32),
    )


class InsertSlot(ctypes.Structure):
    _fields_ = (
        ("memcg", ctypes.c_uint64),
        ("mapping", ctypes.c_uint64),
        ("pages", ctypes.c_uint64),
        ("tid", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    )


class ShareMemo(ctypes.Structure):
    _fields_ = (
        ("reader", ctypes.c_uint64),
        ("mapping", ctypes.c_uint64),
        ("extent", ctypes.c_uint64),
        ("generation", ctypes.c_uint64),
    )


class CpuSlots(ctypes.Structure):
    _fields_ = (("lookup", LookupSlot), ("insert", InsertSlot), ("share", ShareMemo))


class SpanSlot(ctypes.Structure):
    _fields_ = (
        ("tid", ctypes.c_uint32),
        ("trace_flags", ctypes.c_uint32),
        ("trace_id", ctypes.c_uint8 * 16),
        ("span_id", ctypes.c_uint8 * 8),
    )


class SpanSlotBase(ctypes.Structure):
    _fields_ = (("address", ctypes.c_uint64), ("count", ctypes.c_uint32), ("size", ctypes.c_uint32))


class SlotsAnnouncement(ctypes.Structure):
    _fields_ = (("pid", ctypes.c_uint32), ("pad", ctypes.c_uint32))


class StallStart(ctypes.Structure):
    _fields_ = (
        ("start_ns", ctypes.c_uint64),
        ("memcg", ctypes.c_uint64),
        ("gfp", ctypes.c_uint64),
        ("order", ctypes.c_int32),
        ("kind", ctypes.c_uint32),
        ("span", SpanSlot),
    )


class StallEvent(ctypes.Structure):
    _fields_ = (
        ("start_ns", ctypes.c_uint64),
        ("duration_ns", ctypes.c_uint64),
        ("memcg", ctypes.c_uint64),
        ("pages", ctypes.c_uint64),
        ("gfp", ctypes.c_uint64),
        ("ratelimit", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("order", ctypes.c_int32),
        ("kind", ctypes.c_uint32),
        ("planned", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
        ("span", SpanSlot),
        ("ns_pid", ctypes.c_uint32),
        ("ns_tid", ctypes.c_uint32),
    )


class WhatifConfig(ctypes.Structure):
    _fields_ = (
        ("enabled", ctypes.c_uint32),
        ("shift", ctypes.c_uint32),
        ("max_pages", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    )


class WhatifSample(ctypes.Structure):
    _fields_ = (
        ("memcg", ctypes.c_uint64),
        ("mapping", ctypes.c_uint64),
        ("first", ctypes.c_uint64),
        ("skip", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("shift", ctypes.c_uint32),
    )


def kernel_dev_to_user(dev: int) -> tuple[int, int]:
    """The kernel's internal dev_t (major << 20 | minor) as (major, minor)."""
    return dev >> 20, dev & 0xFFFFF
