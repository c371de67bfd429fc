"""The BCC engine: the same counters through BCC's Python module (Debian's
python3-bpfcc), for hosts that standardise on BCC.

BCC compiles at start-up with its own LLVM and needs *some* kernel headers
(probes/kheaders.py); their struct layouts are not trusted: every offset
comes from the running kernel's BTF (probes/btf_offsets.py). Without BTF it
falls back, each step named: headers that match ``uname -r`` exactly give
the layouts, else a program that reads only the classic tracepoints' own
fields (counts by the current task's cgroup, no stall spans). Stall spans and
their links run on this engine too when the layouts come from BTF or headers.
BCC's C library prints its own errors on stderr: they go to the debug log.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from importlib import resources

from . import ActivityReading, ProbeUnavailable, missing_bpf_capabilities
from .btf_offsets import KIND_TYPEDEF, KernelBtf, layout_from_btf
from .core import (
    FAULT_FUNCTIONS,
    PROGRAMS,
    STALL_KINDS,
    LookupHook,
    announcement_decoder,
    choose_programs,
    kernel_hz,
)
from .kheaders import find_headers
from .layout import COUNTER_MAPS, LOST_REASONS, REMOVAL_REASONS
from .lookup_slots import held_lookups, read_lookups

_log = logging.getLogger(__name__)


def bcc_available() -> bool:
    return importlib.util.find_spec("bcc") is not None


def _source(layout: str) -> str:
    """The program text for a layout mode: "btf" (offsets as -D constants),
    "headers" (offsets from matching kernel headers) or "tracepoints"."""
    base = resources.files("otel_pagecache._bpf")
    program = "pagecache_bcc_tp.c" if layout == "tracepoints" else "pagecache_bcc.c"
    text = _inline_includes(base, program)
    if layout == "headers":
        text = (base / "pagecache_bcc_layout.h").read_text() + "\n" + text
    return text


# #include "pagecache_bookkeeping.h"
_LOCAL_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_.]+)"$', re.MULTILINE)


def _inline_includes(base, name: str, seen: set[str] | None = None) -> str:
    """``name``'s text with each #include "..." of ours pasted in place, once:
    BCC's map calls only work in the text it was given, not in included files."""
    seen = set() if seen is None else seen
    seen.add(name)

    def paste(match: re.Match) -> str:
        included = match.group(1)
        if included in seen:
            return ""
        return _inline_includes(base, included, seen)

    return _LOCAL_INCLUDE.sub(paste, (base / name).read_text())


def _drift_flags(programs: list[str]) -> list[str]:
    """The -D flags telling pagecache_bcc.c which tracepoint arguments this
    kernel has, from the CO-RE engine's choice of program variants."""
    flags = []
    if "on_dirty_page" in programs:
        flags.append("-DDIRTY_PAGE_TRACEPOINT")
    if "on_memcg_reclaim_begin_gfp" in programs or "on_direct_reclaim_begin_gfp" in programs:
        flags.append("-DRECLAIM_BEGIN_GFP_FIRST")
    if "on_balance_dirty_pages_thresh" in programs:
        flags.append("-DTHROTTLE_THRESH_ARGS")
    return flags


# Lookups before 6.12 (KPROBE_LOOKUPS in pagecache_bcc.c): the CO-RE engine's
# kprobe program suffix -> (the kernel function, BCC's program for it).
KPROBE_PROGRAMS = {
    "get_pages_iter": ("filemap_get_pages", "lookup_read_iter"),
    "get_pages_count": ("filemap_get_pages", "lookup_read_count"),
    "buffered_read": ("generic_file_buffered_read", "lookup_read_iter"),
    "fault": ("filemap_fault", "lookup_fault_entry"),
    "map_pages": ("filemap_map_pages", "lookup_map_pages_entry"),
}


def _kprobe_hook(hooks: list[LookupHook]) -> list[tuple[str, str]]:
    """(function, BCC program) pairs of the kprobe hook among ``hooks`` (as
    choose_programs chose them from BTF); [] when there is none."""
    for hook in hooks:
        if hook.code.startswith("kprobe:"):
            return [KPROBE_PROGRAMS[p.removeprefix("kprobe_")] for p in hook.programs]
    return []


def _kprobe_hook_from_headers(
    version: str, kallsyms: str = "/proc/kallsyms"
) -> list[tuple[str, str]]:
    """Without BTF, with headers that match the kernel exactly: the functions
    from /proc/kallsyms, and the read function's signature from the headers'
    version (filemap_get_pages took the iov_iter until 6.5 made it the byte
    count): the only two facts the kprobes need that BTF would give."""
    wanted = {function for function, _ in KPROBE_PROGRAMS.values()}
    found: set[str] = set()
    try:
        with open(kallsyms) as f:
            for line in f:
                # ffffffff8123c0d0 t filemap_get_pages
                parts = line.split()
                if len(parts) >= 3 and parts[2] in wanted:
                    found.add(parts[2])
    except OSError:
        return []
    numbers = re.match(r"(\d+)\.(\d+)", version)
    major_minor = (int(numbers.group(1)), int(numbers.group(2))) if numbers else (0, 0)
    if "filemap_get_pages" in found:
        read = "get_pages_count" if major_minor >= (6, 5) else "get_pages_iter"
    elif "generic_file_buffered_read" in found:
        read = "buffered_read"
    else:
        return []
    faults = [s for f, s in FAULT_FUNCTIONS if f in found]
    return [KPROBE_PROGRAMS[s] for s in (read, *faults)]


class _Printed:
    text = ""


@contextlib.contextmanager
def _stderr_to_debug_log(printed: _Printed):
    """Whatever BCC's C code writes to fd 2 meanwhile goes to the debug log instead
    (and into ``printed.text``, to tell a permission error from a compile error)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield printed
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            printed.text = capture.read(1 << 20).decode(errors="replace")
            for line in printed.text.splitlines():
                _log.debug("bcc: %s", line)


def _tracefs_mounted() -> bool:
    return any(
        os.path.isdir(f"{root}/events/filemap")
        for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    )


class _BccRing:
    """BCC's ring-buffer API behind the poll()/close() the stall poller expects:
    one poll over the ring buffer maps named in ``rings``, each with its callback."""

    def __init__(
        self, bpf, rings: dict[str, Callable[[bytes], None]], lock: threading.Lock | None = None
    ) -> None:
        self._abandoned = False
        self._bpf = bpf
        # BCC polls every ring of its BPF object at once, whichever ring asked:
        # the stall and what-if pollers take turns through this lock.
        self._poll_lock = lock or threading.Lock()
        # BCC keeps its own references too; these are ours
        self._samples = [self._sampler(callback) for callback in rings.values()]
        for name, sample in zip(rings, self._samples, strict=True):
            bpf[name.encode()].open_ring_buffer(sample)

    def _sampler(self, callback: Callable[[bytes], None]):
        def sample(_ctx, data, size) -> int:
            if self._abandoned:
                return -1  # libbpf (under BCC) ends the poll at a negative return
            try:
                callback(ctypes.string_at(data, size))
            except Exception:  # noqa: BLE001 - an exception must not cross into C
                _log.debug("ring buffer callback failed", exc_info=True)
            return 0

        return sample

    def poll(self, timeout_ms: int) -> None:
        with self._poll_lock:
            self._bpf.ring_buffer_poll(timeout_ms)

    def consume(self) -> int:
        """Every ready record of every ring of the object, woken or not."""
        with self._poll_lock:
            return self._bpf.ring_buffer_consume() or 0

    def abandon(self) -> None:
        """Make a poll in progress return at its next record (see RingBuffer.abandon)."""
        self._abandoned = True

    def close(self) -> None:
        """The ring goes with the BPF object (BccProbe.close)."""


_TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def _tracefs_params(name: str, kind: int) -> list[tuple[str, str]] | None:
    """KernelBtf.params's answer for a tracepoint, from tracefs when the kernel
    has no BTF: present or not (its arguments are unknown: an empty list)."""
    if kind != KIND_TYPEDEF or not name.startswith("btf_trace_"):
        return None
    event = name.removeprefix("btf_trace_")
    for tracepoint in PROGRAMS.values():
        group, tp = tracepoint.split(":")
        if tp == event and any(os.path.isdir(f"{r}/events/{group}/{tp}") for r in _TRACEFS_ROOTS):
            return []
    return None


def _record_has_order() -> bool:
    """Whether mm_filemap_add_to_page_cache's record has an order field (5.17+)."""
    for root in _TRACEFS_ROOTS:
        try:
            with open(f"{root}/events/filemap/mm_filemap_add_to_page_cache/format") as f:
                # \tfield:unsigned char order;\toffset:32;\tsize:1;\tsigned:0;
                return any(" order;" in line for line in f)
        except OSError:
            continue
    return False


def _take(table, key) -> int | None:
    """Delete a per-CPU counter's entry and return its total (None if there
    was none): BpfMap.take for BCC's tables, which have no per-key
    lookup-and-delete, so the value is read right before the delete, a
    syscall apart."""
    try:
        value = sum(table[key])
    except KeyError:
        return None
    with contextlib.suppress(KeyError):  # deleted meanwhile: still counted
        del table[key]
    return value


class BccProbe:
    engine = "bcc"

    def __init__(
        self,
        lookups: bool = True,
        stalls: bool = True,
        layout: str = "auto",
        whatif: bool = True,
        sharing: bool = True,
        max_memcgs: int = 0,
    ) -> None:
        self.want_lookups = lookups
        # Entries of each per-memcg map (layout.PER_MEMCG_MAPS), compiled in;
        # 0 keeps pagecache.h's PAGECACHE_MAX_MEMCGS.
        self.max_memcgs = max_memcgs
        # Shared hits in extent mode (pagecache_sharing.h, the CO-RE engine's
        # code); exact mode needs fexit, which is the CO-RE engine's alone.
        self.want_sharing = sharing
        # The what-if samples (pagecache_whatif.h) are compiled in only when
        # wanted: off, the lookup path is the same text as before.
        self.want_whatif = whatif
        self.has_whatif = False
        self._ring_lock = threading.Lock()
        self.want_stalls = stalls
        # "auto": BTF when the kernel has it; else headers that match the
        # running kernel exactly; else tracepoint fields only (see
        # pagecache_bcc_tp.c). The other values force one, for tests.
        self.layout = layout
        # "owner": counts by the memcg that owns the page; "current_task":
        # by the cgroup of the task that caused the event (tracepoints mode).
        self.attribution = "owner"
        self.has_lookups = False
        # "tracepoint", "kprobe:<function>" or "none" (see CoreProbe.lookup_hook)
        self.lookup_hook = "none"
        self.lookup_hooks_refused: list[str] = []
        self.shared_mode = "none"
        self.shared_exact_refused = ""
        self.stall_kinds: list[str] = []
        self.missing_tracepoints: list[str] = []
        self.attached: list[str] = []
        self._lock = threading.Lock()
        self._bpf = None
        self._headers = None

    def start(self) -> BccProbe:
        missing = missing_bpf_capabilities()
        if missing:
            raise ProbeUnavailable("; ".join(missing))
        if not bcc_available():
            raise ProbeUnavailable(
                "BCC's Python module is not importable: apt-get install python3-bpfcc, and run "
                "from Debian's /usr/bin/python3 (a venv made with --system-site-packages)"
            )
        headers = find_headers()
        if headers is None:
            raise ProbeUnavailable(
                "no kernel headers for BCC: apt-get install linux-headers-$(uname -r) (any "
                "version works when the kernel has BTF), or set BCC_KERNEL_SOURCE"
            )
        has_btf = os.path.exists("/sys/kernel/btf/vmlinux")
        if self.layout == "auto":
            self.layout = "btf" if has_btf else "headers" if headers.matches else "tracepoints"
        cflags: list[str] = []
        if self.layout == "btf":
            try:
                cflags = [f"-D{k}={v}" for k, v in layout_from_btf().items()]
                with KernelBtf() as btf:
                    choice = choose_programs(btf.params)
            except (KeyError, OSError) as e:
                headers.cleanup()
                raise ProbeUnavailable(f"kernel BTF lacks {e}: activity metrics are off") from e
        else:
            choice = choose_programs(_tracefs_params)
        if self.layout == "headers":
            _log.info("no kernel BTF: BCC takes layouts from headers matching %s", headers.version)
        elif self.layout == "tracepoints":
            if not _tracefs_mounted():
                headers.cleanup()
                raise ProbeUnavailable(
                    "no kernel BTF and no headers for this kernel: BCC can only use tracepoint "
                    "fields, which need tracefs: mount -t tracefs tracefs /sys/kernel/tracing"
                )
            self.attribution = "current_task"
            self.want_stalls = False  # their programs read kernel structs
            if _record_has_order():
                cflags.append("-DTP_HAS_ORDER")
            _log.warning(
                "no kernel BTF and headers for %s only: BCC counts by the current task's cgroup, "
                "not the page's owner (pagecache.attribution=current_task)",
                headers.version,
            )
        cflags += _drift_flags(choice.tracepoint_programs)
        # BCC attaches every probe in the program: one on a tracepoint this
        # kernel lacks would fail the whole load, so those are compiled out.
        # Lookups come from the 6.12 tracepoints, else from kprobes on the
        # read and fault functions (as bcc's cachestat), which the loader
        # attaches itself below (a kernel without kprobes then runs without
        # lookups). The tracepoint-fields-only program reads no struct: no kprobes.
        self.missing_tracepoints = choice.missing_tracepoints
        tracepoint_lookups = bool(choice.lookup_hooks) and choice.lookup_hooks[0].code == (
            "tracepoint"
        )
        kprobes: list[tuple[str, str]] = []
        if self.want_lookups and tracepoint_lookups:
            cflags.append("-DWITH_LOOKUPS")
        elif self.want_lookups and self.layout != "tracepoints":
            kprobes = (
                _kprobe_hook(choice.lookup_hooks)
                if self.layout == "btf"
                else _kprobe_hook_from_headers(headers.version)
            )
            if kprobes:
                cflags.append("-DKPROBE_LOOKUPS")
        if not (tracepoint_lookups or kprobes):
            self.want_lookups = False
        stall_tps = {tp for tps in STALL_KINDS.values() for tp in tps}
        if stall_tps & set(self.missing_tracepoints):
            self.want_stalls = False
        if self.want_stalls:
            cflags += ["-DWITH_STALLS", f"-DKERNEL_HZ={kernel_hz() or 0}"]
        if self.want_whatif and self.want_lookups:
            cflags.append("-DWITH_WHATIF")
        # Owners are read from the folio: not in the tracepoint-fields program.
        sharing = self.want_sharing and self.want_lookups and self.layout != "tracepoints"
        if sharing:
            cflags.append("-DWITH_SHARING")
        if self.max_memcgs:
            cflags.append(f"-DPAGECACHE_MAX_MEMCGS={self.max_memcgs}")
        previous = os.environ.get("BCC_KERNEL_SOURCE")
        os.environ["BCC_KERNEL_SOURCE"] = headers.path
        printed = _Printed()
        try:
            from bcc import BPF

            with _stderr_to_debug_log(printed):
                self._bpf = BPF(text=_source(self.layout).encode(), cflags=cflags)
        except Exception as e:  # noqa: BLE001 - BCC raises plain Exception on compile errors
            headers.cleanup()
            if "Operation not permitted" in printed.text:
                # BCC reports a map it may not create as a failed compile.
                raise ProbeUnavailable(
                    "permission denied creating BPF maps: loading BPF programs needs CAP_BPF "
                    "and CAP_PERFMON (or CAP_SYS_ADMIN); run the agent as root or grant them"
                ) from e
            raise ProbeUnavailable(f"BCC could not compile or load the programs: {e}") from e
        finally:
            if previous is None:
                os.environ.pop("BCC_KERNEL_SOURCE", None)
            else:
                os.environ["BCC_KERNEL_SOURCE"] = previous
        self._headers = headers
        self.has_lookups = self.want_lookups
        self.lookup_hook = "tracepoint" if self.has_lookups else "none"
        if kprobes and self.want_lookups:
            self._attach_kprobes(kprobes)
        self.has_whatif = self.has_lookups and self.want_whatif
        self.shared_mode = "extent" if sharing and self.has_lookups else "none"
        if self.want_stalls:
            self.stall_kinds = ["memcg_reclaim", "direct_reclaim", "dirty_throttle"]
        self.attached = [
            "mm_filemap_add_to_page_cache",
            "mm_filemap_delete_from_page_cache",
            "writeback_dirty_page"
            if "on_dirty_page" in choice.tracepoint_programs
            else "writeback_dirty_folio",
        ]
        if self.has_lookups and not kprobes:
            self.attached += ["mm_filemap_get_pages", "mm_filemap_fault", "mm_filemap_map_pages"]
        elif self.has_lookups:
            self.attached += [function for function, _ in kprobes]
        if self.want_stalls:
            self.attached += [
                "mm_vmscan_memcg_reclaim_begin",
                "mm_vmscan_memcg_reclaim_end",
                "mm_vmscan_direct_reclaim_begin",
                "mm_vmscan_direct_reclaim_end",
                "balance_dirty_pages",
            ]
        if not headers.matches:
            _log.info(
                "BCC compiled against %s headers for kernel %s; layouts taken from BTF",
                headers.version,
                os.uname().release,
            )
        return self

    def _attach_kprobes(self, kprobes: list[tuple[str, str]]) -> None:
        """Attach the lookup kprobes, all or none: lookups counted through only
        some of the functions would be wrong, not just fewer."""
        code = f"kprobe:{kprobes[0][0]}"
        attached: list[tuple[str, str]] = []
        printed = _Printed()
        try:
            with _stderr_to_debug_log(printed):
                for function, program in kprobes:
                    self._bpf.attach_kprobe(event=function.encode(), fn_name=program.encode())
                    attached.append((function, program))
        except Exception as e:  # noqa: BLE001 - BCC raises plain Exception
            for function, program in attached:
                with contextlib.suppress(Exception):
                    self._bpf.detach_kprobe(event=function.encode(), fn_name=program.encode())
            reason = (printed.text.strip().splitlines() or [str(e)])[-1]
            self.lookup_hooks_refused.append(f"{code} ({reason})")
            self.has_lookups = False
            self.lookup_hook = "none"
            _log.warning("no way to count lookups with BCC on this kernel: %s", reason)
            return
        self.lookup_hook = code

    def read(self) -> ActivityReading:
        with self._lock:
            b = self._bpf
            reading = ActivityReading()
            if b is None:
                return reading

            def read_counter_map(name: str) -> dict[int, int]:
                table = b[name.encode()]
                values = {k.value: sum(v) for k, v in table.items()}
                reading.map_entries[name] = (len(values), table.max_entries)
                return values

            for name in COUNTER_MAPS:
                if name != "pagecache_lookups":
                    setattr(reading, name.removeprefix("pagecache_"), read_counter_map(name))
            reading.lookups, reading.lookups_in_slots = read_lookups(
                lambda: read_counter_map("pagecache_lookups"), lambda: self._slots(b)
            )
            removals = b[b"pagecache_removals"]
            for k, v in removals.items():
                reading.removals[(k.memcg, REMOVAL_REASONS.get(k.reason, "unknown"))] = sum(v)
            reading.map_entries["pagecache_removals"] = (
                len(reading.removals),
                removals.max_entries,
            )
            files = b[b"pagecache_file_pages"]
            for k, v in files.items():
                reading.files[(k.memcg, k.dev, k.ino)] = v.value
            reading.map_entries["pagecache_file_pages"] = (len(reading.files), files.max_entries)
            lost = b[b"pagecache_lost"]
            for index, reason in LOST_REASONS.items():
                if index < lost.max_entries:
                    reading.lost[reason] = sum(lost[index])
            if self.shared_mode != "none":
                self._read_sharing(b, reading)
            return reading

    @staticmethod
    def _read_sharing(b, reading: ActivityReading) -> None:
        """Shared hits by (reader, owner), and the fill of the owner maps (as
        CoreProbe._read_sharing)."""
        shared = b[b"pagecache_shared_hits"]
        for k, v in shared.items():
            reading.shared[(k.reader, k.owner)] = sum(v)
        reading.map_entries["pagecache_shared_hits"] = (len(reading.shared), shared.max_entries)
        for name in ("sharing_extents", "sharing_files"):
            owners = b[name.encode()]
            reading.map_entries[name] = (len(owners), owners.max_entries)

    def stall_ring(self, callback, on_announcement=None) -> _BccRing:
        """The stall ring buffer and the span-slot announcements, polled like the
        CO-RE engine's (see CoreProbe.stall_ring, stalls.StallPoller)."""
        with self._lock:
            if self._bpf is None:
                raise ProbeUnavailable("probe is closed")
            rings = {"stall_events": callback}
            if on_announcement is not None:
                rings["slot_announcements"] = announcement_decoder(on_announcement)
            return _BccRing(self._bpf, rings, self._ring_lock)

    def set_whatif(self, shift: int, max_pages: int, enabled: bool = True) -> None:
        """See CoreProbe.set_whatif; nothing to set where the samples are not compiled in."""
        with self._lock:
            if self._bpf is not None and self.has_whatif:
                table = self._bpf[b"whatif_config"]
                table[0] = table.Leaf(int(enabled), shift, max_pages, 0)

    def whatif_ring(self, callback) -> _BccRing:
        """The what-if samples' ring buffer (see CoreProbe.whatif_ring)."""
        with self._lock:
            if self._bpf is None or not self.has_whatif:
                raise ProbeUnavailable("what-if samples are not compiled in (no lookups)")
            return _BccRing(self._bpf, {"whatif_samples": callback}, self._ring_lock)

    def publish_span_slots(self, pid: int, address: int, count: int, size: int) -> None:
        with self._lock:
            if self._bpf is not None:
                table = self._bpf[b"span_slot_bases"]
                table[table.Key(pid)] = table.Leaf(address, count, size)

    def forget_span_slots(self, pids: Iterable[int]) -> None:
        with self._lock:
            if self._bpf is not None:
                table = self._bpf[b"span_slot_bases"]
                for pid in pids:
                    with contextlib.suppress(KeyError):
                        del table[table.Key(pid)]

    @staticmethod
    def _slots(b) -> list:
        """Each CPU's lookup slot (as CoreProbe._slots)."""
        return [cpu.lookup for cpu in b[b"cpu_slots"][0]]

    def forget(self, memcg_ids: Iterable[int], files: bool = True) -> ActivityReading:
        taken = ActivityReading()
        with self._lock:
            b = self._bpf
            if b is None:
                return taken
            doomed = set(memcg_ids)
            for name in COUNTER_MAPS:
                table = b[name.encode()]
                counted = getattr(taken, name.removeprefix("pagecache_"))
                for memcg in doomed:
                    value = _take(table, table.Key(memcg))
                    if value is not None:
                        counted[memcg] = value
            # Read after the take (as CoreProbe.forget).
            held = held_lookups(self._slots(b))
            taken.lookups_in_slots = {m: n for m, n in held.items() if m in doomed}
            removals = b[b"pagecache_removals"]
            for key in [k for k in removals if k.memcg in doomed]:
                value = _take(removals, key)
                if value is not None:
                    reason = REMOVAL_REASONS.get(key.reason, "unknown")
                    taken.removals[(key.memcg, reason)] = value
            if files:
                table = b[b"pagecache_file_pages"]
                for key in [k for k in table if k.memcg in doomed]:
                    del table[key]
        return taken

    def forget_shared(self, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """See CoreProbe.forget_shared."""
        taken: dict[tuple[int, int], int] = {}
        with self._lock:
            if self._bpf is None or self.shared_mode == "none":
                return taken
            table = self._bpf[b"pagecache_shared_hits"]
            for reader, owner in pairs:
                value = _take(table, table.Key(reader, owner))
                if value is not None:
                    taken[(reader, owner)] = value
        return taken

    def forget_files(self, keys: Iterable[tuple[int, int, int]]) -> None:
        with self._lock:
            if self._bpf is None:
                return
            table = self._bpf[b"pagecache_file_pages"]
            wanted = set(keys)
            for key in [k for k in table if (k.memcg, k.dev, k.ino) in wanted]:
                del table[key]

    def close(self) -> None:
        with self._lock:
            if self._bpf is not None:
                self._bpf.cleanup()
                self._bpf = None
            if self._headers is not None:
                self._headers.cleanup()
                self._headers = None
