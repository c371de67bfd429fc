"""The CO-RE engine: bpf/pagecache.bpf.c loaded through the system libbpf."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import threading
from collections.abc import Iterable
from importlib import resources

from . import ActivityReading, ProbeUnavailable
from .layout import (
    LOST_REASONS,
    REMOVAL_REASONS,
    CpuSlots,
    FileKey,
    RemovalKey,
    SpanSlotBase,
)
from .libbpf import (
    BTF_KIND_TYPEDEF,
    BpfObject,
    LibbpfError,
    LibbpfMissing,
    RingBuffer,
    vmlinux_btf_has,
)

_log = logging.getLogger(__name__)

# program -> tracepoint (group:name); the tracepoint's BTF typedef is
# btf_trace_<name>, which tells whether this kernel has it.
PROGRAMS = {
    "on_add_to_page_cache": "filemap:mm_filemap_add_to_page_cache",
    "on_delete_from_page_cache": "filemap:mm_filemap_delete_from_page_cache",
    "on_dirty_folio": "writeback:writeback_dirty_folio",
    "on_get_pages": "filemap:mm_filemap_get_pages",
    "on_fault": "filemap:mm_filemap_fault",
    "on_map_pages": "filemap:mm_filemap_map_pages",
    "on_memcg_reclaim_begin": "vmscan:mm_vmscan_memcg_reclaim_begin",
    "on_memcg_reclaim_end": "vmscan:mm_vmscan_memcg_reclaim_end",
    "on_direct_reclaim_begin": "vmscan:mm_vmscan_direct_reclaim_begin",
    "on_direct_reclaim_end": "vmscan:mm_vmscan_direct_reclaim_end",
    "on_balance_dirty_pages": "writeback:balance_dirty_pages",
}
# The hot path: every read() and page fault on a cached file goes through these.
LOOKUP_PROGRAMS = frozenset({"on_get_pages", "on_fault", "on_map_pages"})
REQUIRED_PROGRAMS = frozenset({"on_add_to_page_cache", "on_delete_from_page_cache"})
# Stall timing (begin/end pairs and the dirty throttle), attached unless asked not to.
STALL_PROGRAMS = frozenset(
    {
        "on_memcg_reclaim_begin",
        "on_memcg_reclaim_end",
        "on_direct_reclaim_begin",
        "on_direct_reclaim_end",
        "on_balance_dirty_pages",
    }
)

COUNTER_MAPS = (
    "pagecache_lookups",
    "pagecache_misses",
    "pagecache_insertions",
    "pagecache_dirtied",
)
_U64 = struct.Struct("=Q")
_S64 = struct.Struct("=q")


def kernel_hz(proc_root: str = "/proc", boot: str = "/boot") -> int | None:
    """CONFIG_HZ of the running kernel, from its config; None when not found."""
    import gzip

    sources = (
        (f"{proc_root}/config.gz", gzip.open),
        (f"{boot}/config-{os.uname().release}", open),
    )
    for path, opener in sources:
        try:
            with opener(path, "rt") as f:
                for line in f:
                    # CONFIG_HZ=250
                    if line.startswith("CONFIG_HZ="):
                        value = line.split("=", 1)[1].strip()
                        return int(value) if value.isdigit() else None
        except (OSError, EOFError, ValueError):
            continue
    return None


def default_object_path() -> str:
    return str(resources.files("otel_pagecache._bpf") / "pagecache.bpf.o")


def _sum_u64(values: list[bytes]) -> int:
    return sum(_U64.unpack_from(v)[0] for v in values)


class CoreProbe:
    """Opens, loads and attaches the programs; reads the maps; detaches on close()."""

    engine = "core"

    def __init__(
        self,
        object_path: str | None = None,
        lookups: bool = True,
        stalls: bool = True,
        max_memcgs: int = 0,
    ) -> None:
        self.object_path = object_path or default_object_path()
        # Entries of each per-memcg map; 0 keeps the object's PAGECACHE_MAX_MEMCGS.
        self.max_memcgs = max_memcgs
        self.want_lookups = lookups
        self.want_stalls = stalls
        self.has_lookups = False
        self.stall_kinds: list[str] = []
        self.missing_tracepoints: list[str] = []
        self._lock = threading.Lock()
        self._obj: BpfObject | None = None

    def start(self) -> CoreProbe:
        if not os.path.exists(self.object_path):
            raise ProbeUnavailable(
                f"BPF object {self.object_path} is missing: the package was built without "
                "clang; install clang and libbpf-dev and reinstall (scripts/bootstrap does)"
            )
        if not os.path.exists("/sys/kernel/btf/vmlinux"):
            raise ProbeUnavailable(
                "the kernel has no BTF (/sys/kernel/btf/vmlinux): CO-RE needs "
                "CONFIG_DEBUG_INFO_BTF=y; activity metrics are off"
            )
        try:
            present = vmlinux_btf_has(
                [(f"btf_trace_{tp.split(':')[1]}", BTF_KIND_TYPEDEF) for tp in PROGRAMS.values()]
            )
            hz = kernel_hz()
            if hz is None:
                _log.warning(
                    "kernel config not found (/proc/config.gz, /boot/config-%s): dirty-throttle "
                    "spans are off (their pause is in jiffies); mount /boot read-only to fix",
                    os.uname().release,
                )
            obj = BpfObject(self.object_path, kconfig=f"CONFIG_HZ={hz or 0}\n")
        except (LibbpfMissing, LibbpfError) as e:
            raise ProbeUnavailable(str(e)) from e
        wanted = []
        for program, tracepoint in PROGRAMS.items():
            exists = present[f"btf_trace_{tracepoint.split(':')[1]}"]
            enabled = (
                exists
                and (self.want_lookups or program not in LOOKUP_PROGRAMS)
                and (self.want_stalls or program not in STALL_PROGRAMS)
            )
            if not exists:
                self.missing_tracepoints.append(tracepoint)
            obj.set_autoload(program, enabled)
            if enabled:
                wanted.append(program)
        missing_required = [p for p in REQUIRED_PROGRAMS if p not in wanted]
        if missing_required:
            obj.close()
            raise ProbeUnavailable(
                "this kernel lacks the filemap tracepoints "
                f"{', '.join(PROGRAMS[p] for p in missing_required)}: activity metrics are off"
            )
        try:
            if self.max_memcgs:
                for name in (*COUNTER_MAPS, "pagecache_removals"):
                    obj.set_max_entries(name, self.max_memcgs)
            obj.load()
            for program in wanted:
                obj.attach(program)
        except LibbpfError as e:
            obj.close()
            raise ProbeUnavailable(_explain(e)) from e
        self._obj = obj
        attached = set(obj.attached)
        self.has_lookups = attached >= LOOKUP_PROGRAMS
        self.stall_kinds = [
            kind
            for kind, programs in (
                ("memcg_reclaim", {"on_memcg_reclaim_begin", "on_memcg_reclaim_end"}),
                ("direct_reclaim", {"on_direct_reclaim_begin", "on_direct_reclaim_end"}),
                ("dirty_throttle", {"on_balance_dirty_pages"}),
            )
            if attached >= programs
        ]
        if self.missing_tracepoints:
            _log.warning(
                "kernel lacks %s: running without %s",
                ", ".join(self.missing_tracepoints),
                "lookups and hit ratio" if not self.has_lookups else "some lookup events",
            )
        elif not self.want_lookups:
            _log.info("lookup path left unattached (no lookups, no hit ratio), as asked")
        return self

    @property
    def attached(self) -> list[str]:
        return self._obj.attached if self._obj is not None else []

    def program_fds(self) -> dict[str, int]:
        obj = self._obj
        return {p: obj.program_fd(p) for p in obj.attached} if obj is not None else {}

    def read(self) -> ActivityReading:
        with self._lock:
            obj = self._obj
            if obj is None:
                return ActivityReading()
            reading = ActivityReading()
            # The counters' hash maps are read before the per-CPU slots: a slot
            # flushed in between is then missed once (and seen next time)
            # rather than counted twice.
            counters = {}
            for name in COUNTER_MAPS:
                bpf_map = obj.map(name)
                table = counters[name] = {}
                for key, value in bpf_map.items():
                    table[_U64.unpack(key)[0]] = _sum_u64(bpf_map.per_cpu(value))
                reading.map_entries[name] = (len(table), bpf_map.max_entries)
            removals = obj.map("pagecache_removals")
            for key, value in removals.items():
                k = RemovalKey.from_buffer_copy(key)
                reason = REMOVAL_REASONS.get(k.reason, "unknown")
                reading.removals[(k.memcg, reason)] = _sum_u64(removals.per_cpu(value))
            reading.map_entries["pagecache_removals"] = (
                len(reading.removals),
                removals.max_entries,
            )
            files = obj.map("pagecache_file_pages")
            for key, value in files.items():
                k = FileKey.from_buffer_copy(key)
                reading.files[(k.memcg, k.dev, k.ino)] = _S64.unpack(value)[0]
            reading.map_entries["pagecache_file_pages"] = (len(reading.files), files.max_entries)
            lost = obj.map("pagecache_lost")
            for index, reason in LOST_REASONS.items():
                value = lost.lookup(struct.pack("=I", index))
                reading.lost[reason] = _sum_u64(lost.per_cpu(value)) if value else 0
            reading.lookups_in_slots = self._slot_lookups(obj)
            for memcg, pages in reading.lookups_in_slots.items():
                lookups = counters["pagecache_lookups"]
                lookups[memcg] = lookups.get(memcg, 0) + pages
            reading.lookups = counters["pagecache_lookups"]
            reading.misses = counters["pagecache_misses"]
            reading.insertions = counters["pagecache_insertions"]
            reading.dirtied = counters["pagecache_dirtied"]
            return reading

    @staticmethod
    def _slot_lookups(obj: BpfObject) -> dict[int, int]:
        """Lookups still held in the per-CPU slots: they belong to their memcg too.

        (Insertions whose fate, read miss or write, is not known yet are not
        counted; they are as soon as the next event on that CPU decides.)
        """
        slots = obj.map("cpu_slots")
        raw = slots.lookup(struct.pack("=I", 0))
        out: dict[int, int] = {}
        if raw:
            for cpu in slots.per_cpu(raw):
                slot = CpuSlots.from_buffer_copy(cpu[: ctypes.sizeof(CpuSlots)]).lookup
                if slot.lookups:
                    out[slot.memcg] = out.get(slot.memcg, 0) + slot.lookups
        return out

    def stall_ring(self, callback) -> RingBuffer:
        """A ring buffer on the stall events; ``callback(bytes)`` per record."""
        with self._lock:
            if self._obj is None:
                raise ProbeUnavailable("probe is closed")
            return self._obj.ring_buffer("stall_events", callback)

    def publish_span_slots(self, pid: int, address: int, count: int, size: int) -> None:
        """Tell the stall programs where process ``pid`` keeps its span slots."""
        with self._lock:
            if self._obj is not None:
                self._obj.map("span_slot_bases").update(
                    struct.pack("=I", pid), bytes(SpanSlotBase(address, count, size))
                )

    def forget_span_slots(self, pids: Iterable[int]) -> None:
        with self._lock:
            if self._obj is not None:
                bases = self._obj.map("span_slot_bases")
                for pid in pids:
                    bases.delete(struct.pack("=I", pid))

    def forget(self, memcg_ids: Iterable[int], files: bool = True) -> None:
        """Delete every entry of these memcgs (gone cgroups), keeping maps bounded;
        ``files=False`` leaves the (large) per-file map unscanned."""
        with self._lock:
            obj = self._obj
            if obj is None:
                return
            doomed = set(memcg_ids)
            if not doomed:
                return
            for name in COUNTER_MAPS:
                bpf_map = obj.map(name)
                for memcg in doomed:
                    bpf_map.delete(_U64.pack(memcg))
            removals = obj.map("pagecache_removals")
            for memcg in doomed:
                for reason in REMOVAL_REASONS:
                    removals.delete(bytes(RemovalKey(memcg, reason, 0)))
            if not files:
                return
            file_map = obj.map("pagecache_file_pages")
            for key, _ in list(file_map.items()):
                if FileKey.from_buffer_copy(key).memcg in doomed:
                    file_map.delete(key)

    def forget_files(self, keys: Iterable[tuple[int, int, int]]) -> None:
        with self._lock:
            if self._obj is None:
                return
            files = self._obj.map("pagecache_file_pages")
            for memcg, dev, ino in keys:
                files.delete(bytes(FileKey(memcg, ino, dev, 0)))

    def close(self) -> None:
        with self._lock:
            if self._obj is not None:
                self._obj.close()
                self._obj = None


def _explain(error: LibbpfError) -> str:
    if error.errno == errno.EPERM:
        return (
            f"{error.strerror}: loading BPF programs needs CAP_BPF and CAP_PERFMON (or "
            "CAP_SYS_ADMIN); run the agent as root or grant them. Activity metrics are off"
        )
    return f"{error}; activity metrics are off"
