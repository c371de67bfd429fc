"""Per-memcg page-cache activity counters from a probe's raw map readings.

The probe's maps hold cumulative counts per memcg id. This turns them into
monotonic per-memcg totals, keeps the maps bounded (entries of memcgs that no
longer exist are deleted once counted), and never drops counts silently:
page cache outlives its cgroup, so pages owned by a removed (dying) memcg go
on being evicted long after; those counts land in one ``dying`` bucket per
host. Pages charged to no memcg at all (id 0) land in ``unattributed``.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from .probes import ActivityProbe, ActivityReading
from .probes.layout import kernel_dev_to_user
from .sharing import SharedHitsTracker, SharedSnapshot

_log = logging.getLogger(__name__)

DYING = "dying"
UNATTRIBUTED = "unattributed"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Forgotten memcg ids remembered, the most recently seen kept. Cgroup ids
# are never reused, so remembering every one grows with churn without end
# (~70 bytes a memcg: 0.4 MiB a minute at 100 memcgs/s, bench/README.md).
# 8,192 is the last 80 s of memcgs at that rate: a dying memcg quiet for
# longer, then back, is counted once more, the one cost of the bound.
FORGOTTEN_IDS_KEPT = 8192


@dataclass(slots=True)
class ActivityCounters:
    lookups: int = 0  # by accessor memcg
    misses: int = 0  # by accessor memcg
    insertions: int = 0  # by owner memcg
    dirtied: int = 0  # by owner memcg
    evictions: int = 0  # by owner memcg
    invalidations: int = 0  # by owner memcg
    # 1 - misses/lookups over the last interval; None when nothing was looked up.
    hit_ratio: float | None = None
    interval_lookups: int = 0
    interval_misses: int = 0
    # The memcg's what-if curve read for export (whatif.WhatifPoint), when it runs.
    whatif: object | None = None


@dataclass(slots=True)
class FileUsage:
    major: int
    minor: int
    inode: int
    bytes: int
    path: str | None = None


@dataclass
class ActivitySnapshot:
    engine: str
    has_lookups: bool
    memcgs: dict[int, ActivityCounters] = field(default_factory=dict)
    buckets: dict[str, ActivityCounters] = field(default_factory=dict)
    files: dict[int, list[FileUsage]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    map_entries: dict[str, tuple[int, int]] = field(default_factory=dict)
    forgotten_memcgs: int = 0
    # Shared hits (sharing.py); None where the engine does not tell them.
    shared: SharedSnapshot | None = None


_FIELDS = ("lookups", "misses", "insertions", "dirtied")


class ActivityTracker:
    """Owns a probe; ``update(live_ids)`` once per collection."""

    def __init__(
        self,
        probe: ActivityProbe,
        top_files: int = 10,
        resolve_path: Callable[[int, list[tuple[int, int, int]]], dict] | None = None,
        top_shared_pairs: int = 10,
    ) -> None:
        self.probe = probe
        self.engine_reason = ""  # why this engine runs (agent.choose_engine)
        self.top_files = top_files
        self.resolve_path = resolve_path
        mode = probe.shared_mode
        self.sharing = (
            SharedHitsTracker(probe, top_shared_pairs, mode) if mode != "none" else None  # type: ignore[arg-type]
        )
        self._last: dict[str, dict] = {name: {} for name in (*_FIELDS, "removals")}
        self._totals: dict[int, ActivityCounters] = {}
        self._buckets: dict[str, ActivityCounters] = {
            DYING: ActivityCounters(),
            UNATTRIBUTED: ActivityCounters(),
        }
        self._forgotten = 0
        # Ids already forgotten: events of a dying memcg keep arriving; its
        # entries are deleted once per reappearance, not counted again.
        # Least recently seen first; bounded by FORGOTTEN_IDS_KEPT.
        self._forgotten_ids: OrderedDict[int, None] = OrderedDict()

    def update(self, live_ids: Collection[int]) -> ActivitySnapshot:
        reading = self.probe.read()
        interval: dict[object, list[int]] = {}  # target -> [lookups, misses] this interval
        gone = {
            memcg
            for memcg in (
                *(m for name in _FIELDS for m in getattr(reading, name)),
                *(m for m, _ in reading.removals),
            )
            if memcg and memcg not in live_ids
        }
        # Entries of gone memcgs are deleted before they are counted, and
        # counted as they were deleted: a dying memcg's pages go on being
        # evicted between this reading and the delete.
        forgotten = self._forget(gone, reading) if gone else None

        def target(memcg: int):
            if memcg in live_ids:
                counters = self._totals.get(memcg)
                if counters is None:
                    counters = self._totals[memcg] = ActivityCounters()
                return memcg, counters
            if memcg == 0:
                return UNATTRIBUTED, self._buckets[UNATTRIBUTED]
            return DYING, self._buckets[DYING]

        for name in _FIELDS:
            last = self._last[name]
            for memcg, raw in getattr(reading, name).items():
                previous = last.get(memcg, 0)
                delta = _delta(raw, previous)
                last[memcg] = max(raw, previous)
                key, counters = target(memcg)
                setattr(counters, name, getattr(counters, name) + delta)
                if name in ("lookups", "misses"):
                    interval.setdefault(key, [0, 0])[name == "misses"] += delta
        last = self._last["removals"]
        for (memcg, reason), raw in reading.removals.items():
            previous = last.get((memcg, reason), 0)
            delta = _delta(raw, previous)
            last[(memcg, reason)] = max(raw, previous)
            _, counters = target(memcg)
            if reason == "eviction":
                counters.evictions += delta
            else:
                counters.invalidations += delta

        for key, counters in (*self._totals.items(), *self._buckets.items()):
            lookups, misses = interval.get(key, (0, 0))
            counters.interval_lookups, counters.interval_misses = lookups, misses
            counters.hit_ratio = max(0.0, 1.0 - misses / lookups) if lookups > 0 else None

        if forgotten is not None:
            self._restart_baselines(gone, forgotten)
        # Totals of memcgs that are gone are dropped: their series end, and
        # what their pages do from now on counts as "dying".
        for memcg in [m for m in self._totals if m not in live_ids]:
            del self._totals[memcg]

        return ActivitySnapshot(
            engine=self.probe.engine,
            has_lookups=self.probe.has_lookups,
            # Copies: the previous snapshot must keep its own figures (rates).
            memcgs={k: copy.copy(v) for k, v in self._totals.items()},
            buckets={k: copy.copy(v) for k, v in self._buckets.items()},
            files=self._top_files(reading, live_ids),
            lost=dict(reading.lost),
            map_entries=dict(reading.map_entries),
            forgotten_memcgs=self._forgotten,
            shared=self.sharing.update(reading, live_ids) if self.sharing else None,
        )

    def _forget(self, gone: set[int], reading: ActivityReading) -> ActivityReading | None:
        """Delete the gone memcgs' entries, and set ``reading`` to what they
        held when deleted; what was taken, or None if the probe could not
        (the entries stay)."""
        new = gone - self._forgotten_ids.keys()
        try:
            # A dying memcg's pages keep being removed, re-creating its counter
            # entries: those are deleted each time. Its file entries cannot
            # come back (nothing is charged to a dead memcg), so the file map
            # is scanned once per memcg.
            taken = self.probe.forget(gone, files=bool(new))
        except Exception:  # noqa: BLE001 - pruning failing must not stop the collection
            _log.debug("forgetting %d memcgs failed", len(gone), exc_info=True)
            return None
        self._forgotten += len(new)
        self._remember_forgotten(gone)
        for name in ("misses", "insertions", "dirtied"):
            counted = getattr(reading, name)
            for memcg, value in getattr(taken, name).items():
                counted[memcg] = max(counted.get(memcg, 0), value)
        for key, value in taken.removals.items():
            reading.removals[key] = max(reading.removals.get(key, 0), value)
        # Lookups: the map's part as taken, and what per-CPU slots held just
        # after, not the reading's slots: a slot that flushed in between is
        # in the taken part already, and would count twice.
        seen = reading.lookups.keys() | taken.lookups.keys() | taken.lookups_in_slots.keys()
        for memcg in gone & seen:
            in_map, held = taken.lookups.get(memcg, 0), taken.lookups_in_slots.get(memcg, 0)
            reading.lookups[memcg] = in_map + held
        return taken

    def _restart_baselines(self, gone: set[int], taken: ActivityReading) -> None:
        """Entries of forgotten memcgs start again from 0 if they come back."""
        for name in _FIELDS:
            last = self._last[name]
            for memcg in gone:
                last.pop(memcg, None)
        # Lookups still in a per-CPU slot will reach the map later: they are
        # counted already, so start that memcg's baseline from them.
        for memcg in gone:
            if taken.lookups_in_slots.get(memcg):
                self._last["lookups"][memcg] = taken.lookups_in_slots[memcg]
        for key in [k for k in self._last["removals"] if k[0] in gone]:
            del self._last["removals"][key]

    def _remember_forgotten(self, gone: set[int]) -> None:
        """Mark ``gone`` as the most recently seen forgotten ids; drop the
        least recent past the bound (one that comes back after that is
        counted again: an over-count, never a leak)."""
        kept = self._forgotten_ids
        for memcg in gone:
            kept[memcg] = None
            kept.move_to_end(memcg)
        while len(kept) > FORGOTTEN_IDS_KEPT:
            kept.popitem(last=False)

    def _top_files(
        self, reading: ActivityReading, live_ids: Collection[int]
    ) -> dict[int, list[FileUsage]]:
        per_memcg: dict[int, list[tuple[int, int, int]]] = {}
        empty = []
        for (memcg, dev, ino), pages in reading.files.items():
            if pages <= 0:
                empty.append((memcg, dev, ino))
            elif memcg in live_ids:
                per_memcg.setdefault(memcg, []).append((pages, dev, ino))
        if empty:
            try:
                self.probe.forget_files(empty)  # keeps the bounded map for live files
            except Exception:  # noqa: BLE001
                _log.debug("pruning empty file entries failed", exc_info=True)
        out: dict[int, list[FileUsage]] = {}
        for memcg, files in per_memcg.items():
            files.sort(reverse=True)
            top = []
            for pages, dev, ino in files[: self.top_files]:
                major, minor = kernel_dev_to_user(dev)
                top.append(FileUsage(major, minor, ino, pages * PAGE_SIZE))
            if self.resolve_path is not None:
                paths = self.resolve_path(memcg, [(f.major, f.minor, f.inode) for f in top])
                for f in top:
                    f.path = paths.get((f.major, f.minor, f.inode))
            out[memcg] = top
        return out


def _delta(raw: int, previous: int) -> int:
    # Never negative, and a dip is not a reset: a reading can miss a per-CPU
    # slot flushed between reading the map and the slots (it is seen next
    # time). The only real reset, deleting a gone memcg's entries, also drops
    # its baseline (see _restart_baselines).
    return max(0, raw - previous)


class FilePathResolver:
    """Finds a file's path from the owning container's own processes (opt-in).

    Only the processes of the memcg that owns the pages are looked at
    (``cgroup.procs``): their memory maps (which name device and inode
    directly) and their open files. Never a walk of a filesystem or of inode
    lists; bounded in processes and descriptors; results cached for ``ttl_s``.
    """

    def __init__(
        self,
        cgroup_dir: Callable[[int], str | None],
        proc_root: str = "/proc",
        max_pids: int = 64,
        max_fds: int = 1024,
        ttl_s: float = 30.0,
    ) -> None:
        self._cgroup_dir = cgroup_dir
        self._proc = proc_root
        self._max_pids = max_pids
        self._max_fds = max_fds
        self._ttl_s = ttl_s
        self._cache: dict[int, tuple[float, dict[tuple[int, int, int], str], set]] = {}

    def __call__(self, memcg: int, keys: list[tuple[int, int, int]]) -> dict:
        """Paths of the files ``keys`` ((major, minor, inode)) of one memcg."""
        now = time.monotonic()
        cached = self._cache.get(memcg)
        wanted = set(keys)
        if cached is None or now - cached[0] > self._ttl_s or not wanted <= cached[2]:
            found = self._scan(memcg)
            # Keep only what was asked for: a container's other file names
            # are neither exported nor held.
            cached = (now, {k: v for k, v in found.items() if k in wanted}, wanted)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[memcg] = cached
        return cached[1]

    def _scan(self, memcg: int) -> dict[tuple[int, int, int], str]:
        found: dict[tuple[int, int, int], str] = {}
        directory = self._cgroup_dir(memcg)
        if directory is None:
            return found
        try:
            with open(os.path.join(directory, "cgroup.procs")) as f:
                pids = [line.strip() for line in f if line.strip().isdigit()][: self._max_pids]
        except OSError:
            return found
        for pid in pids:
            try:
                self._scan_maps(pid, found)
                self._scan_fds(pid, found)
            except Exception:  # noqa: BLE001 - one odd process must not cost the others
                _log.debug("scanning process %s failed", pid, exc_info=True)
        # File names are bytes on Linux; exported attributes must be valid UTF-8.
        return {k: os.fsencode(v).decode("utf-8", "replace") for k, v in found.items()}

    def _scan_maps(self, pid: str, found: dict) -> None:
        # 7f2c4b1e1000-7f2c4b1e3000 r--p 00000000 fe:01 1835056    /usr/lib/libc.so.6
        try:
            with open(os.path.join(self._proc, pid, "maps"), errors="surrogateescape") as f:
                for line in f:
                    fields = line.split(None, 5)
                    if len(fields) < 6 or fields[4] == "0":
                        continue
                    major, _, minor = fields[3].partition(":")
                    try:
                        key = (int(major, 16), int(minor, 16), int(fields[4]))
                    except ValueError:
                        continue
                    found.setdefault(key, fields[5].strip())
        except OSError:
            pass

    def _scan_fds(self, pid: str, found: dict) -> None:
        fd_dir = os.path.join(self._proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)[: self._max_fds]
        except OSError:
            return
        for fd in fds:
            link = os.path.join(fd_dir, fd)
            try:
                st = os.stat(link)
                target = os.readlink(link)
            except OSError:
                continue
            if target.startswith("/"):
                found.setdefault((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino), target)
