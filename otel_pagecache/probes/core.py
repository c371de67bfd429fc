"""The CO-RE engine: bpf/pagecache.bpf.c loaded through the system libbpf."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources

from . import ActivityReading, ProbeUnavailable
from .btf_offsets import KIND_FUNC, KIND_TYPEDEF, KernelBtf
from .layout import (
    COUNTER_MAPS,
    LOST_REASONS,
    PER_MEMCG_MAPS,
    REMOVAL_REASONS,
    CpuSlots,
    FileKey,
    LookupSlot,
    RemovalKey,
    SharedKey,
    SlotsAnnouncement,
    SpanSlotBase,
    WhatifConfig,
)
from .libbpf import BpfMap, BpfObject, LibbpfError, LibbpfMissing, RingBuffer, fexit_refused
from .lookup_slots import held_lookups, read_lookups

_log = logging.getLogger(__name__)

# Tracepoint program -> tracepoint (group:name). Where a tracepoint's
# arguments changed, two programs serve it and choose_programs() autoloads the
# one this kernel's BTF fits (the why of each: the drift block of
# bpf/pagecache.bpf.c).
PROGRAMS = {
    "on_add_to_page_cache": "filemap:mm_filemap_add_to_page_cache",
    "on_delete_from_page_cache": "filemap:mm_filemap_delete_from_page_cache",
    "on_dirty_folio": "writeback:writeback_dirty_folio",
    "on_dirty_page": "writeback:writeback_dirty_page",
    "on_get_pages": "filemap:mm_filemap_get_pages",
    "on_fault": "filemap:mm_filemap_fault",
    "on_map_pages": "filemap:mm_filemap_map_pages",
    "on_memcg_reclaim_begin": "vmscan:mm_vmscan_memcg_reclaim_begin",
    "on_memcg_reclaim_begin_gfp": "vmscan:mm_vmscan_memcg_reclaim_begin",
    "on_memcg_reclaim_end": "vmscan:mm_vmscan_memcg_reclaim_end",
    "on_direct_reclaim_begin": "vmscan:mm_vmscan_direct_reclaim_begin",
    "on_direct_reclaim_begin_gfp": "vmscan:mm_vmscan_direct_reclaim_begin",
    "on_direct_reclaim_end": "vmscan:mm_vmscan_direct_reclaim_end",
    "on_balance_dirty_pages": "writeback:balance_dirty_pages",
    "on_balance_dirty_pages_thresh": "writeback:balance_dirty_pages",
    "on_task_rename": "task:task_rename",
}
# The hot path from 6.12: every read() and page fault on a cached file.
LOOKUP_PROGRAMS = frozenset({"on_get_pages", "on_fault", "on_map_pages"})
REQUIRED_PROGRAMS = frozenset({"on_add_to_page_cache", "on_delete_from_page_cache"})
# Stall timing (begin/end pairs and the dirty throttle), attached unless asked not to.
STALL_KINDS = {
    "memcg_reclaim": ("vmscan:mm_vmscan_memcg_reclaim_begin", "vmscan:mm_vmscan_memcg_reclaim_end"),
    "direct_reclaim": (
        "vmscan:mm_vmscan_direct_reclaim_begin",
        "vmscan:mm_vmscan_direct_reclaim_end",
    ),
    "dirty_throttle": ("writeback:balance_dirty_pages",),
}
STALL_PROGRAMS = frozenset(p for p, tp in PROGRAMS.items() if tp.startswith("vmscan:")) | {
    "on_balance_dirty_pages",
    "on_balance_dirty_pages_thresh",
    "on_task_rename",  # span slots announced by the plugin, for the stall spans' links
}
# Lookups before 6.12 (no mm_filemap_get_pages): the read and fault functions,
# by fentry or, where fentry is refused, by kprobe. Read function -> program
# suffix, first match in this kernel's BTF wins.
READ_FUNCTIONS = (
    ("filemap_get_pages", "get_pages"),  # 5.12 .. 6.11; suffix _iter or _count
    ("generic_file_buffered_read", "buffered_read"),  # up to 5.11, once per read()
)
FAULT_FUNCTIONS = (("filemap_fault", "fault"), ("filemap_map_pages", "map_pages"))
# Shared hits' exact mode: fexit on this function reads the folio batch it found.
SHARED_EXACT_FUNCTION = "filemap_get_pages"


@dataclass(frozen=True)
class LookupHook:
    """One way to serve lookups: a short stable code for doctor and the
    agent's own metrics (``tracepoint``, ``fentry:filemap_get_pages``,
    ``kprobe:generic_file_buffered_read``) and its programs."""

    code: str
    programs: tuple[str, ...]


@dataclass
class ProgramChoice:
    tracepoint_programs: list[str] = field(default_factory=list)
    lookup_hooks: list[LookupHook] = field(default_factory=list)  # tried in order
    missing_tracepoints: list[str] = field(default_factory=list)
    # How shared hits can be told here when lookups are counted (sharing.MODES):
    # "extent" needs the insertion tracepoint's folio (its memcg, index, order).
    sharing_mode: str = "none"
    # Exact mode for reads on top of extent mode, where fexit attaches: the
    # program that reads filemap_get_pages' folio batch at its exit.
    exact_sharing_program: str | None = None


def choose_programs(params) -> ProgramChoice:
    """The programs that fit this kernel, from its BTF only (never its version).

    ``params(name, kind)`` is KernelBtf.params: the parameters of a function
    (KIND_FUNC) or of a tracepoint's btf_trace_<name> typedef (KIND_TYPEDEF),
    None when absent.
    """
    choice = ProgramChoice()
    tp_params = {
        tp: params(f"btf_trace_{tp.split(':')[1]}", KIND_TYPEDEF)
        for tp in dict.fromkeys(PROGRAMS.values())
    }

    def want(program: str) -> None:
        choice.tracepoint_programs.append(program)

    for program in ("on_add_to_page_cache", "on_delete_from_page_cache"):
        if tp_params[PROGRAMS[program]] is not None:
            want(program)
    if tp_params["writeback:writeback_dirty_folio"] is not None:
        want("on_dirty_folio")
    elif tp_params["writeback:writeback_dirty_page"] is not None:
        want("on_dirty_page")
    for kind in ("memcg", "direct"):
        begin = tp_params[f"vmscan:mm_vmscan_{kind}_reclaim_begin"]
        if begin is not None:
            # (void *, int order, gfp_t) until 7.x made it (void *, gfp_t, int, memcg)
            gfp_first = len(begin) > 1 and begin[1][1] == "gfp_t"
            want(f"on_{kind}_reclaim_begin" + ("_gfp" if gfp_first else ""))
        if tp_params[f"vmscan:mm_vmscan_{kind}_reclaim_end"] is not None:
            want(f"on_{kind}_reclaim_end")
    throttle = tp_params["writeback:balance_dirty_pages"]
    if throttle is not None:
        # 1 + 12 arguments up to 6.12, 1 + 8 (with the dtc pointer) later
        want("on_balance_dirty_pages" + ("_thresh" if len(throttle) >= 13 else ""))
    if tp_params["task:task_rename"] is not None:
        want("on_task_rename")
    lookup_tps = [PROGRAMS[p] for p in sorted(LOOKUP_PROGRAMS)]
    if all(tp_params[tp] is not None for tp in lookup_tps):
        choice.lookup_hooks.append(LookupHook("tracepoint", tuple(sorted(LOOKUP_PROGRAMS))))
    else:
        choice.lookup_hooks += _function_hooks(params)
    # Shared hits in extent mode: owners kept from insertions and deletions
    # (pagecache_sharing.h), apportioned to whatever serves lookups.
    if choice.lookup_hooks and all(
        tp_params[PROGRAMS[p]] is not None for p in sorted(REQUIRED_PROGRAMS)
    ):
        choice.sharing_mode = "extent"
        # Exact for reads where filemap_get_pages hands over a folio_batch
        # (5.16+; a pagevec of pages before): (iocb, iter, fbatch) until the
        # byte count replaced the iov_iter.
        get_pages = params(SHARED_EXACT_FUNCTION, KIND_FUNC)
        if get_pages and len(get_pages) >= 3 and get_pages[2][0] == "fbatch":
            choice.exact_sharing_program = "fexit_shared_" + (
                "count" if get_pages[1][0] == "count" else "iter"
            )
    # writeback_dirty_page is only the old name of writeback_dirty_folio.
    old_dirty = "on_dirty_page" in choice.tracepoint_programs
    choice.missing_tracepoints = [
        tp
        for tp, found in tp_params.items()
        if found is None
        and tp != "writeback:writeback_dirty_page"
        and not (old_dirty and tp == "writeback:writeback_dirty_folio")
    ]
    return choice


def _function_hooks(params) -> list[LookupHook]:
    """fentry then kprobe on the read and fault functions this kernel has."""
    read = None
    for function, suffix in READ_FUNCTIONS:
        found = params(function, KIND_FUNC)
        if found is not None:
            if suffix == "get_pages":  # (iocb, iter, batch) until the count replaced iter
                suffix += "_count" if len(found) > 1 and found[1][0] == "count" else "_iter"
            read = (function, suffix)
            break
    if read is None:
        return []
    suffixes = [read[1]] + [s for f, s in FAULT_FUNCTIONS if params(f, KIND_FUNC) is not None]
    return [
        LookupHook(f"{kind}:{read[0]}", tuple(f"{kind}_{s}" for s in suffixes))
        for kind in ("fentry", "kprobe")
    ]


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


def _total(bpf_map: BpfMap, value: bytes) -> int:
    """A u64 counter's value: summed over CPUs in a per-CPU map."""
    return sum(_U64.unpack_from(v)[0] for v in bpf_map.per_cpu(value))


class CoreProbe:
    """Opens, loads and attaches the programs; reads the maps; detaches on close()."""

    engine = "core"
    # CO-RE relocates every struct access against the kernel's own BTF, so
    # pages count for the memcg that owns them.
    layout = "btf"
    attribution = "owner"

    def __init__(
        self,
        object_path: str | None = None,
        lookups: bool = True,
        stalls: bool = True,
        max_memcgs: int = 0,
        hook_kinds: Iterable[str] = ("tracepoint", "fentry", "kprobe"),
        sharing: bool = True,
        sharing_extents: int = 0,
        shared_exact: bool = True,
    ) -> None:
        self.object_path = object_path or default_object_path()
        # Entries of each per-memcg map; 0 keeps the object's PAGECACHE_MAX_MEMCGS.
        self.max_memcgs = max_memcgs
        self.want_lookups = lookups
        # Which kinds of lookup hook may be tried (bench/lookup_hooks.py
        # measures each alone); the kernel's BTF decides which exist.
        self.hook_kinds = tuple(hook_kinds)
        self.want_stalls = stalls
        # Shared hits (pagecache_sharing.h); off: the same object with the
        # feature's code dropped at load (bench/ measures its cost so).
        self.want_sharing = sharing
        # Entries of sharing_extents; 0 keeps SHARING_MAX_EXTENTS (tests fill a
        # small one to see file mode).
        self.sharing_extents = sharing_extents
        # False: extent mode even where exact mode would serve (tests check
        # extent mode on the kernels that have exact mode).
        self.want_shared_exact = shared_exact
        self.shared_mode = "none"
        # Why exact mode could not serve where the kernel has its function
        # (fexit refused, as on hosts that refuse fentry); "" otherwise.
        self.shared_exact_refused = ""
        self.has_lookups = False
        # Which hook serves lookups: "tracepoint", "fentry:<function>",
        # "kprobe:<function>" or "none"; and the ones tried and refused.
        self.lookup_hook = "none"
        self.lookup_hooks_refused: list[str] = []
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
        shared_exact_wanted = self.want_sharing and self.want_shared_exact
        try:
            with KernelBtf() as btf:
                choice = choose_programs(btf.params)
                exact_refused = (
                    fexit_refused(btf.type_id(SHARED_EXACT_FUNCTION, KIND_FUNC) or 0)
                    if choice.exact_sharing_program and shared_exact_wanted
                    else ""
                )
        except (LibbpfMissing, LibbpfError, OSError) as e:
            raise ProbeUnavailable(str(e)) from e
        hz = kernel_hz()
        if hz is None:
            _log.warning(
                "kernel config not found (/proc/config.gz, /boot/config-%s): dirty-throttle "
                "spans are off (their pause is in jiffies); mount /boot read-only to fix",
                os.uname().release,
            )
        self.missing_tracepoints = choice.missing_tracepoints
        base = [
            p for p in choice.tracepoint_programs if self.want_stalls or p not in STALL_PROGRAMS
        ]
        missing_required = sorted(REQUIRED_PROGRAMS - set(base))
        if missing_required:
            raise ProbeUnavailable(
                "this kernel lacks the filemap tracepoints "
                f"{', '.join(PROGRAMS[p] for p in missing_required)}: activity metrics are off"
            )
        # Each way to serve lookups in turn (fentry is refused on some hosts,
        # kprobes are not built into others), then none: the rest still works.
        hooks: list[LookupHook | None] = (
            [h for h in choice.lookup_hooks if h.code.split(":")[0] in self.hook_kinds]
            if self.want_lookups
            else []
        )
        exact = choice.exact_sharing_program if shared_exact_wanted and hooks else None
        if exact and exact_refused:
            self.shared_exact_refused, exact = f"{exact} ({exact_refused})", None
        for hook in [*hooks, None]:
            programs = base + list(hook.programs if hook else ())
            if hook is not None and exact:
                try:
                    self._obj = self._load([*programs, exact], hz)
                    self.lookup_hook = hook.code
                    self.has_lookups = True
                    break
                except (LibbpfMissing, LibbpfError) as e:
                    self.shared_exact_refused = f"{exact} ({_short(e)})"
            try:
                self._obj = self._load(programs, hz)
            except (LibbpfMissing, LibbpfError) as e:
                if hook is None:
                    raise ProbeUnavailable(
                        _explain(e) if isinstance(e, LibbpfError) else str(e)
                    ) from e
                self.lookup_hooks_refused.append(f"{hook.code} ({_short(e)})")
                continue
            self.lookup_hook = hook.code if hook else "none"
            self.has_lookups = hook is not None
            break
        if self.has_lookups and self.want_sharing:
            exact_attached = exact is not None and exact in self._obj.attached
            self.shared_mode = "exact" if exact_attached else choice.sharing_mode
            if exact_attached:
                self.shared_exact_refused = ""
        attached = set(self._obj.attached)
        self.stall_kinds = [
            kind
            for kind, tracepoints in STALL_KINDS.items()
            if set(tracepoints) <= {PROGRAMS[p] for p in attached if p in PROGRAMS}
        ]
        if not self.want_lookups:
            _log.info("lookup path left unattached (no lookups, no hit ratio), as asked")
        elif not self.has_lookups:
            _log.warning(
                "no way to count lookups on this kernel (%s): running without lookups and "
                "hit ratio",
                "; ".join(self.lookup_hooks_refused)
                or (
                    f"only {', '.join(self.hook_kinds)} hooks allowed"
                    if choice.lookup_hooks
                    else "no mm_filemap_get_pages tracepoint, no read function in BTF"
                ),
            )
        elif self.lookup_hooks_refused:
            _log.info(
                "lookups served by %s (refused: %s)",
                self.lookup_hook,
                "; ".join(self.lookup_hooks_refused),
            )
        if self.missing_tracepoints:
            _log.warning("kernel lacks %s", ", ".join(self.missing_tracepoints))
        return self

    def _load(self, programs: list[str], hz: int | None) -> BpfObject:
        """Open, load and attach exactly ``programs``; closes what it opened on failure."""
        exact = any(p.startswith("fexit_shared_") for p in programs)
        kconfig = (
            f"CONFIG_HZ={hz or 0}\nCONFIG_PAGECACHE_SHARING={int(self.want_sharing)}\n"
            f"CONFIG_PAGECACHE_SHARED_EXACT={int(exact)}\n"
        )
        obj = BpfObject(self.object_path, kconfig=kconfig)
        try:
            for program in obj.programs:
                obj.set_autoload(program, program in programs)
            if self.max_memcgs:
                for name in PER_MEMCG_MAPS:
                    obj.set_max_entries(name, self.max_memcgs)
            if self.sharing_extents:
                obj.set_max_entries("sharing_extents", self.sharing_extents)
            obj.load()
            for program in programs:
                obj.attach(program)
        except BaseException:
            obj.close()
            raise
        return obj

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
            counters = {}

            def read_counter_map(name: str) -> dict[int, int]:
                bpf_map = obj.map(name)
                table = {}
                for key, value in bpf_map.items():
                    table[_U64.unpack(key)[0]] = _total(bpf_map, value)
                reading.map_entries[name] = (len(table), bpf_map.max_entries)
                return table

            for name in COUNTER_MAPS:
                if name != "pagecache_lookups":
                    counters[name] = read_counter_map(name)
            counters["pagecache_lookups"], reading.lookups_in_slots = read_lookups(
                lambda: read_counter_map("pagecache_lookups"), lambda: self._slots(obj)
            )
            removals = obj.map("pagecache_removals")
            for key, value in removals.items():
                k = RemovalKey.from_buffer_copy(key)
                reason = REMOVAL_REASONS.get(k.reason, "unknown")
                reading.removals[(k.memcg, reason)] = _total(removals, value)
            reading.map_entries["pagecache_removals"] = (
                len(reading.removals),
                removals.max_entries,
            )
            files = obj.map("pagecache_file_pages")
            for key, value in files.items():
                k = FileKey.from_buffer_copy(key)
                reading.files[(k.memcg, k.dev, k.ino)] = _S64.unpack(value)[0]
            reading.map_entries["pagecache_file_pages"] = (len(reading.files), files.max_entries)
            self._read_sharing(obj, reading)
            lost = obj.map("pagecache_lost")
            for index, reason in LOST_REASONS.items():
                value = lost.lookup(struct.pack("=I", index))
                reading.lost[reason] = _total(lost, value) if value else 0
            reading.lookups = counters["pagecache_lookups"]
            reading.misses = counters["pagecache_misses"]
            reading.insertions = counters["pagecache_insertions"]
            reading.dirtied = counters["pagecache_dirtied"]
            return reading

    def _read_sharing(self, obj: BpfObject, reading: ActivityReading) -> None:
        """Shared hits by (reader, owner), and the fill of the owner maps."""
        if self.shared_mode == "none":
            return
        shared = obj.map("pagecache_shared_hits")
        for key, value in shared.items():
            k = SharedKey.from_buffer_copy(key)
            reading.shared[(k.reader, k.owner)] = _total(shared, value)
        reading.map_entries["pagecache_shared_hits"] = (len(reading.shared), shared.max_entries)
        for name in ("sharing_extents", "sharing_files"):
            owners = obj.map(name)
            reading.map_entries[name] = (sum(1 for _ in owners.items()), owners.max_entries)

    @staticmethod
    def _slots(obj: BpfObject) -> list[LookupSlot]:
        """Each CPU's lookup slot: the lookups it holds belong to its memcg too.

        (Insertions whose fate, read miss or write, is not known yet are not
        counted; they are as soon as the next event on that CPU decides.)
        """
        slots = obj.map("cpu_slots")
        raw = slots.lookup(struct.pack("=I", 0))
        if not raw:
            return []
        return [
            CpuSlots.from_buffer_copy(cpu[: ctypes.sizeof(CpuSlots)]).lookup
            for cpu in slots.per_cpu(raw)
        ]

    def stall_ring(self, callback, on_announcement=None) -> RingBuffer:
        """The stall events' ring buffer, ``callback(bytes)`` per record, polled
        together with the span-slot announcements (``on_announcement(pid)``)."""
        with self._lock:
            if self._obj is None:
                raise ProbeUnavailable("probe is closed")
            rings = {"stall_events": callback}
            if on_announcement is not None:
                rings["slot_announcements"] = announcement_decoder(on_announcement)
            return self._obj.ring_buffer(rings)

    @property
    def has_whatif(self) -> bool:
        """Whether what-if samples can flow: they ride on the lookup hooks."""
        return self.has_lookups

    def set_whatif(self, shift: int, max_pages: int, enabled: bool = True) -> None:
        """Sample one page in 2**shift of each file, at most ``max_pages`` per
        lookup event (see bpf/pagecache_whatif.h); ``enabled=False`` stops it."""
        with self._lock:
            if self._obj is not None:
                config = WhatifConfig(int(enabled), shift, max_pages, 0)
                self._obj.map("whatif_config").update(struct.pack("=I", 0), bytes(config))

    def whatif_ring(self, callback) -> RingBuffer:
        """The what-if samples' ring buffer, ``callback(bytes)`` per record."""
        with self._lock:
            if self._obj is None:
                raise ProbeUnavailable("probe is closed")
            return self._obj.ring_buffer({"whatif_samples": callback})

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

    def forget(self, memcg_ids: Iterable[int], files: bool = True) -> ActivityReading:
        """Delete every entry of these memcgs (gone cgroups), keeping maps bounded;
        their counters and removals as they were deleted. ``files=False``
        leaves the (large) per-file map unscanned."""
        taken = ActivityReading()
        with self._lock:
            obj = self._obj
            doomed = set(memcg_ids)
            if obj is None or not doomed:
                return taken
            for name in COUNTER_MAPS:
                bpf_map = obj.map(name)
                counted = getattr(taken, name.removeprefix("pagecache_"))
                for memcg in doomed:
                    value = bpf_map.take(_U64.pack(memcg))
                    if value is not None:
                        counted[memcg] = _total(bpf_map, value)
            # Read after the take: what the slots still hold reaches a new
            # entry later (a flush before the take is in the taken value).
            held = held_lookups(self._slots(obj))
            taken.lookups_in_slots = {m: n for m, n in held.items() if m in doomed}
            removals = obj.map("pagecache_removals")
            for memcg in doomed:
                for reason, reason_name in REMOVAL_REASONS.items():
                    value = removals.take(bytes(RemovalKey(memcg, reason, 0)))
                    if value is not None:
                        taken.removals[(memcg, reason_name)] = _total(removals, value)
            if not files:
                return taken
            file_map = obj.map("pagecache_file_pages")
            for key, _ in list(file_map.items()):
                if FileKey.from_buffer_copy(key).memcg in doomed:
                    file_map.delete(key)
            return taken

    def forget_shared(self, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """Delete these (reader, owner) entries of pagecache_shared_hits; their
        totals as they were deleted."""
        with self._lock:
            if self._obj is None or self.shared_mode == "none":
                return {}
            shared = self._obj.map("pagecache_shared_hits")
            taken = {}
            for reader, owner in pairs:
                value = shared.take(bytes(SharedKey(reader, owner)))
                if value is not None:
                    taken[(reader, owner)] = _total(shared, value)
            return taken

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


def announcement_decoder(on_announcement):
    """A ring callback that hands the pid of each struct slots_announcement on."""

    def decode(record: bytes) -> None:
        if len(record) >= ctypes.sizeof(SlotsAnnouncement):
            on_announcement(SlotsAnnouncement.from_buffer_copy(record).pid)

    return decode


def _short(error: Exception) -> str:
    """The first line of a libbpf error, for one-line log messages."""
    return str(error).splitlines()[0][:160] if str(error) else type(error).__name__


def _explain(error: LibbpfError) -> str:
    if error.errno == errno.EPERM:
        return (
            f"{error.strerror}: loading BPF programs needs CAP_BPF and CAP_PERFMON (or "
            "CAP_SYS_ADMIN); run the agent as root or grant them. Activity metrics are off"
        )
    return f"{error}; activity metrics are off"
