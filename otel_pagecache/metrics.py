"""The product's metric names, units and attributes, and the callbacks behind them.

Every name here is public interface; ``ALL_SPECS`` lists every metric the
project makes, for generated docs and tests. Per-memcg series belong to their
memcg's identity (``RESOURCE_KEYS``): over OTLP that identity is each
container's Resource (``otlp_bulk``), for Prometheus it becomes labels
(``prometheus_bulk``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .activity import PAGE_SIZE, ActivityCounters, FileUsage
from .residency import MemcgSample, Snapshot, SnapshotSource

if TYPE_CHECKING:
    from .containers import Identity

_log = logging.getLogger(__name__)

SCOPE_NAME = "otel_pagecache"

# Attributes that identify the memcg; they belong on the Resource, not the point.
CGROUP_PATH = "pagecache.cgroup.path"
CGROUP_ID = "pagecache.cgroup.id"
RESOURCE_KEYS = frozenset(
    {
        "container.id",
        "container.runtime.name",
        "container.name",
        "container.image.name",
        "container.image.id",
        "container.image.tags",
        "k8s.pod.uid",
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.container.name",
        "pagecache.k8s.qos_class",
        "aws.ecs.task.id",
        "pagecache.cgroup.kind",
        "pagecache.cgroup.state",
        CGROUP_PATH,
        CGROUP_ID,
    }
)

CGROUP_STATE = "pagecache.cgroup.state"
REMOVAL_REASON = "pagecache.removal.reason"
LOST_REASON = "pagecache.lost.reason"
BPF_MAP = "pagecache.bpf.map"
ENGINE = "pagecache.engine"
ENGINE_REASON = "pagecache.engine.reason"
ATTRIBUTION = "pagecache.attribution"
# Which hook serves lookups: "tracepoint" (6.12+), "fentry:<function>" or
# "kprobe:<function>" before 6.12, "none" (probes/core.py, CoreProbe.lookup_hook).
LOOKUP_HOOK = "pagecache.lookup_hook"
# How shared hits are told: "exact", "extent" or "none" (sharing.MODES).
SHARED_MODE = "pagecache.shared.mode"
FILE_INODE = "file.inode"
FILE_DEVICE = "pagecache.file.device"
FILE_PATH = "file.path"
STATE = "pagecache.state"
PRESSURE = "pagecache.pressure"
CGROUP_SET = "pagecache.cgroup.set"
# The what-if curve (whatif.py): at which multiple of the memcg's page cache,
# for which fraction of the best hit ratio, and whether it was calibrated.
WHATIF_SCALE = "pagecache.whatif.scale"
WHATIF_TARGET = "pagecache.whatif.target"
WHATIF_CALIBRATED = "pagecache.whatif.calibrated"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "gauge" | "counter" | "histogram"
    unit: str
    description: str


def _stat(key: str) -> Callable[[MemcgSample], Iterable[tuple[float, dict]]]:
    def extract(sample: MemcgSample) -> Iterable[tuple[float, dict]]:
        value = sample.stat.get(key)
        return () if value is None else ((value, {}),)

    return extract


def _usage_by_state(sample: MemcgSample) -> Iterable[tuple[float, dict]]:
    for key, state in (("active_file", "active"), ("inactive_file", "inactive")):
        value = sample.stat.get(key)
        if value is not None:
            yield value, {STATE: state}


def _attr(name: str) -> Callable[[MemcgSample], Iterable[tuple[float, dict]]]:
    def extract(sample: MemcgSample) -> Iterable[tuple[float, dict]]:
        value = getattr(sample, name)
        return () if value is None else ((value, {}),)

    return extract


def _pressure(sample: MemcgSample) -> Iterable[tuple[float, dict]]:
    for kind in ("some", "full"):
        value = sample.pressure_us.get(kind)
        if value is not None:
            yield value / 1e6, {PRESSURE: kind}


# Per-memcg metrics: spec and how to get its values from one sample.
MEMCG_METRICS: tuple[
    tuple[MetricSpec, Callable[[MemcgSample], Iterable[tuple[float, dict]]]], ...
] = (
    (
        MetricSpec(
            "pagecache.usage",
            "gauge",
            "By",
            "Page cache on the memcg's own file LRU lists (shmem excluded), by LRU state",
        ),
        _usage_by_state,
    ),
    (
        MetricSpec("pagecache.dirty", "gauge", "By", "Own file pages waiting to be written back"),
        _stat("dirty"),
    ),
    (
        MetricSpec("pagecache.writeback", "gauge", "By", "Own file pages under writeback"),
        _stat("writeback"),
    ),
    (
        MetricSpec("pagecache.mapped", "gauge", "By", "Own file pages mapped into page tables"),
        _stat("mapped"),
    ),
    (
        MetricSpec("pagecache.shmem", "gauge", "By", "Own shmem/tmpfs pages (swap-backed)"),
        _stat("shmem"),
    ),
    (
        MetricSpec(
            "pagecache.refaults",
            "counter",
            "{page}",
            "File pages faulted back in soon after being evicted (workingset_refault_file)",
        ),
        _stat("refault_file"),
    ),
    (
        MetricSpec(
            "pagecache.activations",
            "counter",
            "{page}",
            "Refaulted file pages activated immediately (workingset_activate_file)",
        ),
        _stat("activate_file"),
    ),
    (
        MetricSpec(
            "pagecache.memcg.usage", "gauge", "By", "Memory charged to the memcg and its children"
        ),
        _attr("usage"),
    ),
    (
        MetricSpec("pagecache.memcg.limit", "gauge", "By", "The memcg's hard limit (if any)"),
        _attr("limit"),
    ),
    (
        MetricSpec(
            "pagecache.memcg.working_set",
            "gauge",
            "By",
            "usage - inactive_file, the working set the kubelet and cAdvisor evict on",
        ),
        _attr("working_set"),
    ),
    (
        MetricSpec(
            "pagecache.memcg.major_faults",
            "counter",
            "{fault}",
            "Major page faults in the memcg and its children",
        ),
        _attr("major_faults"),
    ),
    (
        MetricSpec(
            "pagecache.memcg.limit_hits",
            "counter",
            "{event}",
            "Times the memcg's usage hit its own limit",
        ),
        _attr("limit_hits"),
    ),
    (
        MetricSpec(
            "pagecache.memcg.pressure.stall_time",
            "counter",
            "s",
            "Time tasks of the memcg stalled on memory (PSI), some or all of them",
        ),
        _pressure,
    ),
)


def _activity(name: str):
    def extract(counters: ActivityCounters) -> Iterable[tuple[float, dict]]:
        return ((getattr(counters, name), {}),)

    return extract


def _removals(counters: ActivityCounters) -> Iterable[tuple[float, dict]]:
    yield counters.evictions, {REMOVAL_REASON: "eviction"}
    yield counters.invalidations, {REMOVAL_REASON: "invalidation"}


def _hit_ratio(counters: ActivityCounters) -> Iterable[tuple[float, dict]]:
    return () if counters.hit_ratio is None else ((counters.hit_ratio, {}),)


def _whatif_hit_ratio(counters: ActivityCounters) -> Iterable[tuple[float, dict]]:
    point = counters.whatif
    if point is None:
        return
    extra = {WHATIF_CALIBRATED: True} if point.calibrated else {}
    for scale, ratio in point.hit_ratios.items():
        yield ratio, {WHATIF_SCALE: scale, **extra}


def _whatif_cache_size(counters: ActivityCounters) -> Iterable[tuple[float, dict]]:
    point = counters.whatif
    if point is not None:
        for scale in point.hit_ratios:
            yield int(scale * point.cache_pages) * PAGE_SIZE, {WHATIF_SCALE: scale}


def _whatif_working_set(counters: ActivityCounters) -> Iterable[tuple[float, dict]]:
    point = counters.whatif
    if point is not None:
        for target, pages in point.working_sets.items():
            yield int(pages) * PAGE_SIZE, {WHATIF_TARGET: target}


def _whatif_samples(counters: ActivityCounters) -> Iterable[tuple[float, dict]]:
    point = counters.whatif
    return () if point is None else ((point.samples, {}),)


# Per-memcg activity from the BPF probe (and the dying/unattributed buckets).
# Which memcg: lookups, misses and hit ratio by the task's (accessor's);
# insertions, dirtied and removals by the page's owner.
ACTIVITY_METRICS: tuple[
    tuple[MetricSpec, Callable[[ActivityCounters], Iterable[tuple[float, dict]]], bool], ...
] = (
    (
        MetricSpec(
            "pagecache.lookups",
            "counter",
            "{page}",
            "Pages requested from the page cache by reads and faults, by the reader's memcg",
        ),
        _activity("lookups"),
        True,
    ),
    (
        MetricSpec(
            "pagecache.misses",
            "counter",
            "{page}",
            "Pages inserted on the read and fault paths (readahead included), by reader memcg",
        ),
        _activity("misses"),
        False,
    ),
    (
        MetricSpec(
            "pagecache.hit_ratio",
            "gauge",
            "1",
            "max(0, 1 - misses/lookups) over the last interval",
        ),
        _hit_ratio,
        True,
    ),
    (
        MetricSpec(
            "pagecache.insertions",
            "counter",
            "{page}",
            "Pages added to the page cache (reads, readahead, writes), by the owner memcg",
        ),
        _activity("insertions"),
        False,
    ),
    (
        MetricSpec("pagecache.dirtied", "counter", "{page}", "Pages dirtied, by the owner memcg"),
        _activity("dirtied"),
        False,
    ),
    (
        MetricSpec(
            "pagecache.removals",
            "counter",
            "{page}",
            "Pages removed from the page cache, by the owner memcg and reason",
        ),
        _removals,
        False,
    ),
    # The what-if curve (docs/whatif.md), by the reader's memcg.
    (
        MetricSpec(
            "pagecache.whatif.hit_ratio",
            "gauge",
            "1",
            "Hit ratio an LRU page cache of pagecache.whatif.scale times the memcg's would "
            "have had on its accesses in the window",
        ),
        _whatif_hit_ratio,
        True,
    ),
    (
        MetricSpec(
            "pagecache.whatif.cache_size",
            "gauge",
            "By",
            "The page-cache size each pagecache.whatif.scale stood for",
        ),
        _whatif_cache_size,
        True,
    ),
    (
        MetricSpec(
            "pagecache.whatif.working_set",
            "gauge",
            "By",
            "Smallest page cache reaching pagecache.whatif.target of the best hit ratio",
        ),
        _whatif_working_set,
        True,
    ),
    (
        MetricSpec(
            "pagecache.whatif.samples",
            "counter",
            "{access}",
            "Sampled page accesses the memcg's what-if curve is built from",
        ),
        _whatif_samples,
        True,
    ),
)

FILE_USAGE = MetricSpec(
    "pagecache.file.usage",
    "gauge",
    "By",
    "Pages of a file inserted minus removed since the agent started, top files per memcg",
)


def file_points(files: Iterable[FileUsage]) -> Iterator[tuple[float, dict]]:
    """``FILE_USAGE`` points of one memcg's top files."""
    for f in files:
        attrs = {FILE_INODE: str(f.inode), FILE_DEVICE: f"{f.major}:{f.minor}"}
        if f.path is not None:
            attrs[FILE_PATH] = f.path
        yield f.bytes, attrs


BPF_AGENT_METRICS = (
    MetricSpec(
        "pagecache.agent.bpf.lost",
        "counter",
        "{event}",
        "Kernel events a full BPF map could not count",
    ),
    MetricSpec(
        "pagecache.agent.bpf.map.entries",
        "gauge",
        "{entry}",
        "Entries in each BPF map",
    ),
    MetricSpec(
        "pagecache.agent.bpf.map.fill",
        "gauge",
        "1",
        "Entries in each BPF map over its capacity",
    ),
    MetricSpec(
        "pagecache.agent.bpf.forgotten_cgroups",
        "counter",
        "{cgroup}",
        "Memcgs whose map entries were pruned after the cgroup disappeared",
    ),
)

# Shared hits (sharing.py): the reader's view and the owner's, top pairs per memcg.
SHARED_HITS = MetricSpec(
    "pagecache.shared.hits",
    "counter",
    "{page}",
    "Pages the memcg's reads and faults found that another memcg owns, by owner "
    "(pagecache.owner.cgroup.path; the first OTEL_PAGECACHE_TOP_SHARED_PAIRS named, the rest "
    '"other", gone owners "dying")',
)
SHARED_SERVED = MetricSpec(
    "pagecache.shared.served",
    "counter",
    "{page}",
    "Pages the memcg owns that another memcg's reads and faults found, by reader "
    "(pagecache.reader.cgroup.path)",
)
SHARED_METRICS: tuple[MetricSpec, ...] = (SHARED_HITS, SHARED_SERVED)


def shared_names(samples: Iterable[MemcgSample]) -> dict[int, tuple[str, str | None]]:
    """Each memcg's (cgroup path, container id), for the partners named in
    the shared-hit points."""
    names = {}
    for sample in samples:
        container_id = sample_resource_attributes(sample).get("container.id")
        names[sample.id] = (sample.path, container_id if isinstance(container_id, str) else None)
    return names


# Node totals from /proc/meminfo: the host-wide figures per-memcg numbers add up to.
NODE_METRICS: tuple[tuple[MetricSpec, tuple[tuple[str, dict], ...]], ...] = (
    (
        MetricSpec("pagecache.node.usage", "gauge", "By", "Host file LRU pages, by LRU state"),
        (("Active(file)", {STATE: "active"}), ("Inactive(file)", {STATE: "inactive"})),
    ),
    (
        MetricSpec("pagecache.node.cached", "gauge", "By", "Host page cache incl. shmem (Cached)"),
        (("Cached", {}),),
    ),
    (
        MetricSpec("pagecache.node.dirty", "gauge", "By", "Host dirty pages (Dirty)"),
        (("Dirty", {}),),
    ),
    (
        MetricSpec("pagecache.node.writeback", "gauge", "By", "Host pages under writeback"),
        (("Writeback", {}),),
    ),
    (
        MetricSpec("pagecache.node.shmem", "gauge", "By", "Host shmem/tmpfs pages (Shmem)"),
        (("Shmem", {}),),
    ),
)

AGENT_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "pagecache.agent.collection.duration",
        "gauge",
        "s",
        "Wall time of the last residency collection (walk, read, parse)",
    ),
    MetricSpec(
        "pagecache.agent.cgroups",
        "gauge",
        "{cgroup}",
        "Memory cgroups discovered and exported in the last collection",
    ),
    MetricSpec(
        "pagecache.agent.read_errors",
        "counter",
        "{error}",
        "cgroupfs/procfs reads that failed for a reason other than the cgroup vanishing, "
        "and runtime metadata files that could not be read or parsed",
    ),
    MetricSpec(
        "pagecache.agent.vanished",
        "counter",
        "{cgroup}",
        "cgroups that disappeared between listing and reading (normal under churn)",
    ),
)


# Made by stalls.StallPipeline (a histogram and a counter on the SDK).
STALL_DURATION = MetricSpec(
    "pagecache.stall.duration",
    "histogram",
    "s",
    "Every page-cache stall (memcg or direct reclaim, dirty throttling)",
)
STALL_SPANS_DROPPED = MetricSpec(
    "pagecache.stall.spans.dropped",
    "counter",
    "{span}",
    "Stalls over the threshold not turned into spans, by reason",
)
STALL_METRICS: tuple[MetricSpec, ...] = (STALL_DURATION, STALL_SPANS_DROPPED)

# Every metric of the project, once: the source of its name, kind, unit and
# description.
ALL_SPECS: tuple[MetricSpec, ...] = (
    *(spec for spec, _ in MEMCG_METRICS),
    *(spec for spec, _, _ in ACTIVITY_METRICS),
    FILE_USAGE,
    *SHARED_METRICS,
    *(spec for spec, _ in NODE_METRICS),
    *AGENT_METRICS,
    *BPF_AGENT_METRICS,
    *STALL_METRICS,
)


def sample_resource_attributes(sample: MemcgSample) -> dict[str, str | int]:
    attrs = sample.attrs
    if attrs is None:
        attrs = sample.attrs = memcg_resource_attributes(sample.identity, sample.path, sample.id)
    return attrs


def memcg_resource_attributes(
    identity: Identity, path: str, cgroup_id: int
) -> dict[str, str | int]:
    """A memcg's Resource attributes: its identity, cgroup path and id."""
    attrs: dict[str, str | int] = dict(identity.resource_attributes())  # type: ignore[arg-type]
    attrs[CGROUP_PATH] = path
    attrs[CGROUP_ID] = cgroup_id
    return attrs


# Why the activity engine that runs was chosen: a short stable code for the
# pagecache.engine.reason attribute (the sentence goes to logs and doctor).
REASON_REQUESTED = "requested"  # OTEL_PAGECACHE_ENGINE named it
REASON_AUTO_CORE = "auto_core"  # auto: BTF present and the CO-RE object loads
REASON_AUTO_FALLBACK = "auto_fallback"  # auto: CO-RE could not run, BCC did
REASON_DISABLED = "disabled"  # activity off or engine none, as asked
REASON_UNAVAILABLE = "unavailable"  # auto: no engine could run
ENGINE_REASONS = (
    REASON_REQUESTED,
    REASON_AUTO_CORE,
    REASON_AUTO_FALLBACK,
    REASON_DISABLED,
    REASON_UNAVAILABLE,
)


class AgentMetrics:
    """The node agent's own metrics (node totals, BPF health, collection health)
    as observable instruments on ``meter``; every callback reads the same snapshot.

    The per-container bulk (``MEMCG_METRICS``, ``ACTIVITY_METRICS``,
    ``FILE_USAGE``) does not go through the SDK: ``otlp_bulk`` and
    ``prometheus_bulk`` build it from the snapshot directly.
    """

    def __init__(
        self,
        meter: Meter,
        source: SnapshotSource,
        engine: str = "none",
        engine_reason: str = REASON_DISABLED,
        attribution: str = "owner",
        lookup_hook: str = "",
        shared_mode: str = "",
    ) -> None:
        self._source = source
        # Which activity engine runs (core, bcc, none) and why, as a code.
        self._engine_attrs = {ENGINE: engine, ENGINE_REASON: engine_reason}
        if engine != "none" and attribution:
            # "owner" (the page's memcg) or "current_task" (BCC without BTF or
            # matching headers: the cgroup of the task behind each event).
            self._engine_attrs[ATTRIBUTION] = attribution
            if lookup_hook:
                self._engine_attrs[LOOKUP_HOOK] = lookup_hook
            if shared_mode:
                self._engine_attrs[SHARED_MODE] = shared_mode
        self._read_errors_total = 0
        self._vanished_total = 0
        self._counted_snapshot: Snapshot | None = None
        for spec, keys in NODE_METRICS:
            self._register(meter, spec, self._node_callback(spec, keys))
        bpf_callbacks = {
            "pagecache.agent.bpf.lost": self._bpf_lost,
            "pagecache.agent.bpf.map.entries": self._bpf_map_entries,
            "pagecache.agent.bpf.map.fill": self._bpf_map_fill,
            "pagecache.agent.bpf.forgotten_cgroups": self._bpf_forgotten,
        }
        for spec in BPF_AGENT_METRICS:
            self._register(meter, spec, _guarded(spec.name, bpf_callbacks[spec.name]))
        callbacks = {
            "pagecache.agent.collection.duration": self._duration,
            "pagecache.agent.cgroups": self._cgroups,
            "pagecache.agent.read_errors": self._read_errors,
            "pagecache.agent.vanished": self._vanished,
        }
        for spec in AGENT_METRICS:
            self._register(meter, spec, _guarded(spec.name, callbacks[spec.name]))

    @staticmethod
    def _register(meter: Meter, spec: MetricSpec, callback) -> None:
        create = (
            meter.create_observable_gauge
            if spec.kind == "gauge"
            else meter.create_observable_counter
        )
        create(spec.name, callbacks=[callback], unit=spec.unit, description=spec.description)

    def _bpf_lost(self, _options: CallbackOptions) -> Iterator[Observation]:
        activity = self._source.current().activity
        if activity is not None:
            for reason, n in activity.lost.items():
                yield Observation(n, {LOST_REASON: reason, ENGINE: activity.engine})

    def _bpf_map_entries(self, _options: CallbackOptions) -> Iterator[Observation]:
        activity = self._source.current().activity
        if activity is not None:
            for name, (used, _capacity) in activity.map_entries.items():
                yield Observation(used, {BPF_MAP: name, ENGINE: activity.engine})

    def _bpf_map_fill(self, _options: CallbackOptions) -> Iterator[Observation]:
        activity = self._source.current().activity
        if activity is not None:
            for name, (used, capacity) in activity.map_entries.items():
                if capacity:
                    yield Observation(used / capacity, {BPF_MAP: name, ENGINE: activity.engine})

    def _bpf_forgotten(self, _options: CallbackOptions) -> Iterator[Observation]:
        activity = self._source.current().activity
        if activity is not None:
            yield Observation(activity.forgotten_memcgs, {ENGINE: activity.engine})

    def _node_callback(self, spec: MetricSpec, keys):
        def callback(_options: CallbackOptions) -> Iterator[Observation]:
            meminfo = self._source.current().meminfo
            for key, attrs in keys:
                value = meminfo.get(key)
                if value is not None:
                    yield Observation(value, attrs)

        return _guarded(spec.name, callback)

    def _account(self, snapshot: Snapshot) -> None:
        # Error counters are cumulative across snapshots; count each snapshot once.
        if snapshot is not self._counted_snapshot:
            self._counted_snapshot = snapshot
            self._read_errors_total += snapshot.read_errors
            self._vanished_total += snapshot.vanished

    def _duration(self, _options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(self._source.current().duration_s, self._engine_attrs)

    def _cgroups(self, _options: CallbackOptions) -> Iterator[Observation]:
        snapshot = self._source.current()
        yield Observation(
            snapshot.cgroups_discovered, {CGROUP_SET: "discovered", **self._engine_attrs}
        )
        yield Observation(len(snapshot.memcgs), {CGROUP_SET: "exported", **self._engine_attrs})

    def _read_errors(self, _options: CallbackOptions) -> Iterator[Observation]:
        self._account(self._source.current())
        yield Observation(self._read_errors_total, self._engine_attrs)

    def _vanished(self, _options: CallbackOptions) -> Iterator[Observation]:
        self._account(self._source.current())
        yield Observation(self._vanished_total, self._engine_attrs)


def _guarded(name: str, callback):
    """Callbacks never raise: a failure costs this metric's points for one cycle."""

    def guarded(options: CallbackOptions) -> Iterator[Observation]:
        try:
            yield from callback(options)
        except Exception:  # noqa: BLE001 - the SDK must never see our exceptions
            _log.debug("callback for %s failed", name, exc_info=True)

    return guarded
