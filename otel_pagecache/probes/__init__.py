"""Kernel probes for page-cache activity, behind one small interface.

An engine (CO-RE via libbpf in ``core.py``, or BCC in ``bcc.py``) loads
programs on tracepoints and hands out ``ActivityReading``s: the raw
cumulative counts its maps hold, keyed by memcg id.
``activity.ActivityTracker`` turns those into per-memcg counters.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class ActivityReading:
    lookups: dict[int, int] = field(default_factory=dict)  # accessor memcg -> pages
    # The part of ``lookups`` still held in per-CPU slots, not yet in the map.
    lookups_in_slots: dict[int, int] = field(default_factory=dict)
    misses: dict[int, int] = field(default_factory=dict)  # accessor memcg -> pages
    insertions: dict[int, int] = field(default_factory=dict)  # owner memcg -> pages
    dirtied: dict[int, int] = field(default_factory=dict)  # owner memcg -> pages
    removals: dict[tuple[int, str], int] = field(default_factory=dict)  # (owner, reason)
    files: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (owner, dev, ino)
    lost: dict[str, int] = field(default_factory=dict)
    # (reader memcg, owner memcg) -> pages the reader found that the owner owns
    # (shared hits, bpf/pagecache_sharing.h); empty where sharing is off.
    shared: dict[tuple[int, int], int] = field(default_factory=dict)
    map_entries: dict[str, tuple[int, int]] = field(default_factory=dict)  # (used, capacity)


class StallRing(Protocol):
    """A stall ring buffer as StallPoller drives it (libbpf.RingBuffer, bcc._BccRing)."""

    def poll(self, timeout_ms: int) -> object:
        """Hand pending records to their callbacks, waiting at most ``timeout_ms``."""
        ...

    def consume(self) -> int:
        """Hand every ready record to its callback without waiting."""
        ...

    def abandon(self) -> None:
        """Make a poll in progress return at its next record, leaving the rest."""
        ...

    def close(self) -> None:
        """Free the ring buffer."""
        ...


class ProbeUnavailable(RuntimeError):
    """The engine cannot run here; the message names the cause and the fix."""


class ActivityProbe(Protocol):
    """What the agent, doctor and activity tracker use of an engine (CoreProbe, BccProbe)."""

    engine: str
    """The engine's name: "core" or "bcc"."""
    has_lookups: bool
    """Whether lookups (and so misses and the hit ratio) are counted."""
    attribution: str
    """Whose memcg counts a page: "owner" (the page's) or "current_task" (the caller's)."""
    layout: str
    """Where kernel struct layouts come from: "btf", "headers" or "tracepoints"."""
    lookup_hook: str
    """The hook serving lookups: "tracepoint", "fentry:<fn>", "kprobe:<fn>" or "none"."""
    lookup_hooks_refused: list[str]
    """The lookup hooks tried and refused, each with its cause; [] when none was."""
    shared_mode: str
    """How shared hits are told: "exact", "extent" or "none" (see sharing.MODES)."""
    shared_exact_refused: str
    """Why exact mode does not serve where the kernel has its function; "" otherwise."""
    stall_kinds: list[str]
    """The stall kinds timed (see layout.STALL_KINDS); [] when stalls are off."""
    missing_tracepoints: list[str]
    """The tracepoints this kernel lacks, whose programs were left out."""

    @property
    def attached(self) -> list[str]:
        """The programs attached, by name."""
        ...

    def start(self) -> ActivityProbe:
        """Load and attach the programs; raises ProbeUnavailable naming the cause."""
        ...

    def read(self) -> ActivityReading:
        """The maps' raw cumulative counts, keyed by memcg id."""
        ...

    def stall_ring(
        self,
        callback: Callable[[bytes], None],
        on_announcement: Callable[[int], None] | None = None,
    ) -> StallRing:
        """The stall ring buffer, ``callback`` per record, with span-slot announcements."""
        ...

    has_whatif: bool
    """Whether the what-if curve's page samples can flow (they ride on lookups)."""

    def set_whatif(self, shift: int, max_pages: int, enabled: bool = True) -> None:
        """Sample one page in 2**shift of each file, at most ``max_pages`` per event."""
        ...

    def whatif_ring(self, callback: Callable[[bytes], None]) -> StallRing:
        """The what-if samples' ring buffer, ``callback`` per struct whatif_sample."""
        ...

    def publish_span_slots(self, pid: int, address: int, count: int, size: int) -> None:
        """Tell the stall programs where process ``pid`` keeps its span slots."""
        ...

    def forget_span_slots(self, pids: Iterable[int]) -> None:
        """Drop the span-slot addresses of these (exited) processes."""
        ...

    def forget(self, memcg_ids: Iterable[int], files: bool = True) -> ActivityReading:
        """Delete every entry of these (gone) memcgs; ``files=False`` skips the
        file map. Returns their counters and removals as they were deleted,
        and in ``lookups_in_slots`` the lookups per-CPU slots held just after
        (those reach a new map entry later)."""
        ...

    def forget_files(self, keys: Iterable[tuple[int, int, int]]) -> None:
        """Delete these (memcg, dev, ino) entries of the per-file map."""
        ...

    def close(self) -> None:
        """Detach the programs and free the maps; idempotent."""
        ...


# Capability bits (include/uapi/linux/capability.h).
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
# What loading the programs needs, each with what it is for (CAP_SYS_ADMIN
# covers both, and is all there was before Linux 5.8).
BPF_CAPABILITIES = (
    ("CAP_BPF", CAP_BPF, "create BPF maps and load programs"),
    ("CAP_PERFMON", CAP_PERFMON, "attach them to tracepoints and read kernel memory"),
)


def effective_capabilities(proc_root: str = "/proc") -> int:
    """This process's effective capability set (``CapEff:`` of /proc/self/status)."""
    try:
        with open(os.path.join(proc_root, "self", "status"), errors="replace") as f:
            status = f.read()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split()[1], 16)
            except (IndexError, ValueError):
                return 0
    return 0


def missing_bpf_capabilities(proc_root: str = "/proc") -> list[str]:
    """One line per capability the BPF engines lack, each with its fix; [] when none."""
    held = effective_capabilities(proc_root)
    if held & (1 << CAP_SYS_ADMIN):
        return []
    return [
        f"missing capability {name} (to {why}): no activity metrics, no stall spans; fix: run "
        f"as root, or grant {name} (systemd: AmbientCapabilities={name}; Kubernetes: "
        f"securityContext.capabilities.add: [{name.removeprefix('CAP_')}])"
        for name, bit, why in BPF_CAPABILITIES
        if not held & (1 << bit)
    ]
