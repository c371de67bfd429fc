"""One collection cycle: every memcg's own page-cache residency, named.

A ``Snapshot`` is taken once per collection and shared by every instrument
callback (see ``SnapshotSource``), so a cycle reads each file once, and reads
``memory.stat`` only of the memcgs it exports (``selection``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .activity import ActivityCounters, ActivitySnapshot
from .cgroupfs import CgroupEntry, CgroupIndex, CgroupTree, MemoryHierarchy
from .containers import Enricher, Identity, identify
from .memstat import OWN_FIELDS, MemcgReading, ReadStats, read_memcg, read_meminfo, read_size
from .selection import CapWarnings, Selection, largest

# Own figures that are counters (cumulative), not gauges.
COUNTER_FIELDS = ("refault_file", "activate_file")

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class MemcgSample:
    """One memcg in one snapshot.

    ``stat`` holds the memcg's *own* pages (children excluded), so sums across
    memcgs never double count. ``usage``/``limit``/``working_set``/
    ``major_faults``/``pressure_us`` describe the memcg as a whole, the unit
    its limit applies to (children included).
    """

    id: int
    path: str
    identity: Identity
    stat: dict[str, int]
    usage: int | None
    limit: int | None
    working_set: int | None
    major_faults: int | None
    limit_hits: int | None
    pressure_us: dict[str, int]
    # Identity attributes for export, built once per snapshot by metrics.py.
    attrs: dict | None = None
    id_attrs: dict | None = None
    # Page-cache activity from the BPF probe, when it runs (activity.py).
    activity: ActivityCounters | None = None

    @property
    def file_lru_bytes(self) -> int:
        return self.stat.get("active_file", 0) + self.stat.get("inactive_file", 0)


@dataclass(slots=True)
class Snapshot:
    taken_at: float
    hierarchy_version: int
    memcgs: list[MemcgSample] = field(default_factory=list)
    meminfo: dict[str, int] = field(default_factory=dict)
    cgroups_discovered: int = 0
    read_errors: int = 0
    vanished: int = 0
    duration_s: float = 0.0
    activity: ActivitySnapshot | None = None


def own_stats(readings: dict[int, MemcgReading], entries: Sequence[CgroupEntry]) -> None:
    """Turn v2's hierarchical ``memory.stat`` into each memcg's own figures, in place.

    v2 has no local ``memory.stat``: a parent's numbers include every
    descendant. Subtracting the live children's hierarchical values leaves the
    parent's own pages. Clamped at 0 because the files are read at slightly
    different moments and a child can grow between the two reads. Pages of
    children already removed stay in the parent (they are reparented by the
    kernel), which is where they belong.
    """
    children_sum: dict[int, dict[str, int]] = {}
    for entry in entries:
        if entry.parent_id is None:
            continue
        child = readings.get(entry.id)
        if child is None or not child.present:
            continue
        acc = children_sum.setdefault(entry.parent_id, {})
        for name in OWN_FIELDS:
            value = child.stat.get(name)
            if value is not None:
                acc[name] = acc.get(name, 0) + value
    # Compute every subtraction from the original hierarchical values first,
    # then write, so a parent never subtracts an already-reduced child.
    updates: dict[int, dict[str, int]] = {}
    for parent_id, sums in children_sum.items():
        parent = readings.get(parent_id)
        if parent is None or not parent.present:
            continue
        updates[parent_id] = {
            name: max(0, parent.stat[name] - sums.get(name, 0))
            for name in OWN_FIELDS
            if name in parent.stat
        }
    for parent_id, own in updates.items():
        readings[parent_id].stat.update(own)


def is_pause_cgroup(directory: str, proc_root: str = "/proc") -> bool:
    """True when every process of the cgroup is the pod sandbox's ``pause``."""
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            pids = [line.strip() for line in f if line.strip().isdigit()][:8]
    except OSError:
        return False
    if not pids:
        return False
    for pid in pids:
        try:
            with open(os.path.join(proc_root, pid, "comm")) as f:
                if f.read().strip() != "pause":
                    return False
        except OSError:
            return False
    return True


def make_sample(
    entry: CgroupEntry,
    identity: Identity,
    reading: MemcgReading,
    tree_stats: dict[int, dict[str, int]] | None,
) -> MemcgSample:
    """One memcg's sample from its reading, after ``own_stats`` on v2.

    ``tree_stats`` holds v2's hierarchical figures as read (before the
    subtraction); None on v1, whose hierarchical figures carry a "tree_" key.
    """
    stat = reading.stat
    if tree_stats is None:
        tree_inactive = stat.pop("tree_inactive_file", None)
    else:
        tree_inactive = tree_stats.get(entry.id, {}).get("inactive_file")
    major_faults = stat.pop("tree_pgmajfault", None)
    working_set = None
    if reading.usage is not None and tree_inactive is not None:
        # cAdvisor's and the kubelet's working set: usage minus inactive
        # file pages, the figure memory-pressure eviction is decided on.
        working_set = max(0, reading.usage - tree_inactive)
    return MemcgSample(
        id=entry.id,
        path=entry.path,
        identity=identity,
        stat=stat,
        usage=reading.usage,
        limit=reading.limit,
        working_set=working_set,
        major_faults=major_faults,
        limit_hits=reading.limit_hits,
        pressure_us=reading.pressure_us,
    )


class ResidencyReader:
    """Reads every memcg of one hierarchy into a ``Snapshot``."""

    def __init__(
        self,
        hierarchy: MemoryHierarchy,
        proc_root: str = "/proc",
        selection: Selection | None = None,
        enricher: Enricher | None = None,
        index: CgroupIndex | None = None,
        full_walk_s: float = 30.0,
    ) -> None:
        self.hierarchy = hierarchy
        self.tree = CgroupTree(hierarchy, full_walk_s)
        # v2 own counters are differences of counters read a moment apart: a
        # child counting between the two reads would make its parent's own
        # counter dip. Counters never go down here: a high-water mark per memcg.
        self._counter_marks: dict[int, dict[str, int]] = {}
        self._pause_cache: dict[str, tuple[bool, float]] = {}
        self._path_identities: dict[int, tuple[str, Identity]] = {}
        self.proc_root = proc_root
        self.selection = selection or Selection()
        self.cap_warnings = CapWarnings(self.selection.max_cgroups)
        self.enricher = enricher
        self.index = index or CgroupIndex()

    def read(self) -> Snapshot:
        started = time.perf_counter()
        snapshot = Snapshot(taken_at=time.time(), hierarchy_version=self.hierarchy.version)
        try:
            self._fill(snapshot)
        except Exception:  # noqa: BLE001 - a collection must never take the agent down
            _log.exception("residency collection failed; exporting what was read")
            snapshot.read_errors += 1
        snapshot.duration_s = time.perf_counter() - started
        return snapshot

    def _fill(self, snapshot: Snapshot) -> None:
        stats = ReadStats()
        version = self.hierarchy.version
        directory = self.hierarchy.directory
        admits = self.selection.admits
        entries = self.tree.entries(time.monotonic())
        identities = {e.id: self._identity(e) for e in entries}
        # Select before reading: the globs and the container test need only
        # the path; every directory is still opened, for its link count.
        admitted = {e.id for e in entries if admits(e.path, identities[e.id])}
        # Under the cap, everything admitted is read in one pass (one open of
        # each directory); above it, a size pass first, then the kept.
        one_pass = len(admitted) <= self.selection.max_cgroups

        def first_read(e: CgroupEntry) -> MemcgReading:
            if e.id not in admitted:
                return read_size(directory(e.path), version, stats, usage=False)
            if one_pass:
                return read_memcg(directory(e.path), version, stats)
            return read_size(directory(e.path), version, stats)

        readings = {e.id: first_read(e) for e in entries}
        # Directories whose link count moved gained or lost children: list
        # them again and size what is new, in this same cycle. So are the
        # parents of children whose directory is gone: under churn a creation
        # and a removal between two cycles leave the link count as it was.
        vanished_parents = {e.parent_id for e in entries if readings[e.id].nlink is None}
        changed = []
        for e in entries:
            reading = readings[e.id]
            moved = reading.nlink is not None and self.tree.link_count_changed(e, reading.nlink)
            if moved or (reading.present and e.id in vanished_parents):
                changed.append(e)
        for entry in changed:
            for new in self.tree.rescan(entry):
                identities[new.id] = self._identity(new)
                if admits(new.path, identities[new.id]):
                    admitted.add(new.id)
                reading = readings[new.id] = first_read(new)
                if reading.nlink is not None:
                    self.tree.link_count_changed(new, reading.nlink)
        # One pass over the tree for all that vanished (forget walks every entry).
        self.tree.forget(*(e.id for e in entries if not readings[e.id].present))
        if changed or len(readings) != len(entries):
            entries = [e for e in self.tree.current() if e.id in readings]
        self.index.update(entries)
        snapshot.cgroups_discovered = len(entries)
        # The cap, by usage, still before any memory.stat is read.
        candidates = [e for e in entries if e.id in admitted and readings[e.id].present]
        self.cap_warnings.cap = self.selection.max_cgroups
        self.cap_warnings.update(len(candidates))
        kept = largest(candidates, lambda e: readings[e.id].usage, self.selection.max_cgroups)
        for e in kept:
            if not readings[e.id].read:
                read_memcg(directory(e.path), version, stats, readings[e.id])
        if version == 2:
            # v2 own figures are the hierarchical ones minus the children's:
            # children not exported still need their memory.stat read.
            kept_ids = {e.id for e in kept}
            for e in entries:
                reading = readings[e.id]
                if e.parent_id in kept_ids and not reading.read and reading.present:
                    read_memcg(directory(e.path), version, stats, reading)
            tree_stats = {cid: dict(r.stat) for cid, r in readings.items() if r.read}
            own_stats(readings, entries)
        else:
            tree_stats = None
        samples = []
        for entry in kept:
            reading = readings[entry.id]
            if reading.present:
                samples.append(make_sample(entry, identities[entry.id], reading, tree_stats))
        # memory.stat gone: the cgroup went away between the two reads.
        self.tree.forget(*(e.id for e in kept if not readings[e.id].present))
        if len(self._path_identities) > len(entries):
            live = {e.id for e in entries}
            self._path_identities = {
                cid: known for cid, known in self._path_identities.items() if cid in live
            }
        if version == 2:
            self._keep_counters_monotonic(samples)
        snapshot.memcgs = samples
        snapshot.meminfo = read_meminfo(self.proc_root)
        snapshot.read_errors += stats.errors
        if self.enricher is not None:
            snapshot.read_errors += self.enricher.take_read_errors()
        snapshot.vanished = stats.vanished

    def _keep_counters_monotonic(self, samples: list[MemcgSample]) -> None:
        marks = {}
        for sample in samples:
            previous = self._counter_marks.get(sample.id, {})
            current = {}
            for name in COUNTER_FIELDS:
                value = sample.stat.get(name)
                if value is not None:
                    current[name] = sample.stat[name] = max(value, previous.get(name, 0))
            marks[sample.id] = current
        self._counter_marks = marks  # only memcgs still exported: bounded

    def _identity(self, entry: CgroupEntry) -> Identity:
        # identify() is a pure function of the path: kept per cgroup id for as
        # long as the cgroup lives (its own cache is smaller than a big host).
        # The enricher keeps its own time-bounded caches of the node's files.
        known = self._path_identities.get(entry.id)
        if known is None or known[0] != entry.path:
            known = self._path_identities[entry.id] = (entry.path, identify(entry.path))
        identity = known[1]
        if self.enricher is not None:
            identity = self.enricher.enrich(identity)
        if identity.kind == "container" and identity.pod_uid and identity.container_name is None:
            identity = self._unless_pause(entry.path, identity)
        return identity

    def _unless_pause(self, path: str, identity: Identity) -> Identity:
        """A pod's sandbox has an app container's path shape; without the
        runtime's metadata (kind or Docker-in-Docker nodes, state directories
        not mounted) its only process tells: the pause binary. Never report
        its id as a container's."""
        now = time.monotonic()
        cached = self._pause_cache.get(path)
        if cached is None or now - cached[1] > 60:
            cached = (is_pause_cgroup(self.hierarchy.directory(path), self.proc_root), now)
            if len(self._pause_cache) > 20_000:
                self._pause_cache.clear()
            self._pause_cache[path] = cached
        if cached[0]:
            return replace(identity, kind="sandbox", container_id=None)
        return identity


class SnapshotSource:
    """Hands every callback of one collection the same snapshot.

    The SDK calls each observable instrument's callback in turn; the first one
    of a collection reads, the rest reuse that snapshot. A snapshot younger
    than ``max_age_s`` is considered part of the current collection; no
    exporter collects more often than that.
    """

    def __init__(
        self,
        read: Callable[[], Snapshot],
        max_age_s: float = 0.5,
        on_snapshot: Callable[[Snapshot], object] | None = None,
    ) -> None:
        self._read = read
        self._on_snapshot = on_snapshot
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._taken_mono = 0.0
        self.reads = 0

    def current(self) -> Snapshot:
        with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._taken_mono > self._max_age_s:
                # Let the old snapshot go before reading the new one: at
                # 10,000 memcgs two at once are tens of MiB of peak RSS.
                self._snapshot = None
                self._snapshot = self._read()
                self._taken_mono = time.monotonic()
                self.reads += 1
                if self._on_snapshot is not None:
                    try:
                        self._on_snapshot(self._snapshot)
                    except Exception:  # noqa: BLE001 - a hook must not cost the snapshot
                        _log.debug("snapshot hook failed", exc_info=True)
            return self._snapshot
