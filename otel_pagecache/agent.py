"""The node agent: wires residency reading to the OpenTelemetry pipeline."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NoOpTracerProvider

from . import __version__
from .activity import ActivityTracker, FilePathResolver
from .cgroupfs import MemoryHierarchy, find_memory_hierarchy
from .config import Settings
from .containers import Enricher
from .correlation import SlotRegistry
from .export import (
    ResourceSplittingExporter,
    base_resource,
    build_readers,
    build_span_exporter,
)
from .metrics import (
    CGROUP_ID,
    FILE_USAGE,
    SCOPE_NAME,
    PageCacheMetrics,
    sample_resource_attributes,
)
from .residency import ResidencyReader, Selection, Snapshot, SnapshotSource
from .series import SeriesPruner
from .stalls import StallPipeline, StallPoller

_log = logging.getLogger(__name__)


def build_residency_reader(settings: Settings, hierarchy: MemoryHierarchy) -> ResidencyReader:
    enricher = Enricher(
        pod_log_root=settings.pod_log_root,
        containerd_state_root=settings.containerd_state_root,
        crio_state_root=settings.crio_state_root,
        docker_root=settings.docker_root,
    )
    selection = Selection(
        include=settings.include,
        exclude=settings.exclude,
        containers_only=settings.containers_only,
        max_cgroups=settings.max_cgroups,
    )
    return ResidencyReader(hierarchy, settings.proc_root, selection, enricher)


def build_activity(settings: Settings, residency: ResidencyReader) -> ActivityTracker | None:
    """The BPF activity tracker, or None (with one message naming why) when it cannot run."""
    if not settings.activity or settings.engine == "none":
        _log.info("activity engine: none (as asked): residency only")
        return None
    if settings.engine not in ("auto", "core", "bcc"):
        raise ValueError(
            f"OTEL_PAGECACHE_ENGINE={settings.engine!r} is not supported: use auto, core, bcc "
            "or none"
        )
    probe, reason = choose_engine(settings)
    if probe is None:
        return None
    _log.info(
        "activity engine: %s (%s); programs attached: %s",
        probe.engine,
        reason,
        ", ".join(probe.attached),
    )
    resolver = None
    if settings.file_paths:
        hierarchy, index = residency.hierarchy, residency.index

        def cgroup_dir(memcg: int) -> str | None:
            path = index.path(memcg)
            return hierarchy.directory(path) if path is not None else None

        resolver = FilePathResolver(cgroup_dir, settings.proc_root)
    tracker = ActivityTracker(probe, settings.top_files, resolver)
    tracker.engine_reason = reason
    return tracker


def choose_engine(settings: Settings):
    """(probe, reason), or (None, reason) after one warning naming each cause.

    ``auto``: CO-RE when BTF is present and the object loads, else BCC when its
    module imports and it compiles, else residency only."""
    from .probes import ProbeUnavailable
    from .probes.bcc import BccProbe, bcc_available
    from .probes.core import CoreProbe

    def core():
        return CoreProbe(lookups=settings.lookups, stalls=settings.stalls).start()

    def bcc():
        return BccProbe(lookups=settings.lookups, stalls=settings.stalls).start()

    if settings.engine in ("core", "bcc"):
        start = core if settings.engine == "core" else bcc
        try:
            return start(), "as asked"
        except ProbeUnavailable as e:
            raise ValueError(
                f"the {settings.engine} engine was asked for and cannot run: {e}"
            ) from e
    causes = []
    for name, start, available in (("core", core, True), ("bcc", bcc, bcc_available())):
        if not available:
            causes.append(f"{name}: not installed")
            continue
        try:
            probe = start()
        except ProbeUnavailable as e:
            causes.append(f"{name}: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - any other failure: try the next engine
            causes.append(f"{name}: {type(e).__name__}: {e}")
            continue
        why = "BTF present and the object loads" if name == "core" else "; ".join(causes)
        return probe, f"auto: {why}"
    _log.warning("page-cache activity unavailable (%s): residency only", " | ".join(causes))
    return None, "; ".join(causes)


def read_snapshot(residency: ResidencyReader, tracker: ActivityTracker | None) -> Snapshot:
    """Residency, then activity joined to it by memcg id (the walk just refreshed the index)."""
    snapshot = residency.read()
    if tracker is None:
        return snapshot
    try:
        activity = tracker.update(residency.index.ids())
    except Exception:  # noqa: BLE001 - a probe failure costs activity for one cycle only
        _log.debug("activity read failed", exc_info=True)
        return snapshot
    snapshot.activity = activity
    for sample in snapshot.memcgs:
        sample.activity = activity.memcgs.get(sample.id)
    return snapshot


def access_warnings(hierarchy: MemoryHierarchy) -> list[str]:
    """What will not work on this host or with our privileges, each with its fix."""
    warnings = []
    stat = hierarchy.directory("/") + "/memory.stat"
    if os.path.exists(stat) and not os.access(stat, os.R_OK):
        warnings.append(
            f"cannot read {stat}: run as root or grant read access to cgroupfs; "
            "only node totals from /proc/meminfo will be exported"
        )
    return warnings


def feature_notes(hierarchy: MemoryHierarchy) -> list[str]:
    """What this host's cgroup layout leaves out; informational, nothing to fix."""
    if hierarchy.version == 1:
        return [
            "memory controller is on cgroup v1: per-memcg memory pressure (PSI) is a cgroup v2 "
            "feature, so pagecache.memcg.pressure.stall_time is not exported"
        ]
    return []


class Agent:
    """Owns the MeterProvider; ``stop()`` flushes the last export within a bound."""

    def __init__(
        self,
        settings: Settings,
        readers: Sequence[MetricReader] | None = None,
        hierarchy: MemoryHierarchy | None = None,
    ) -> None:
        self.settings = settings
        self.hierarchy = hierarchy or find_memory_hierarchy(settings.cgroup_root)
        for warning in access_warnings(self.hierarchy):
            _log.warning("%s", warning)
        for note in feature_notes(self.hierarchy):
            _log.info("%s", note)
        self.residency = build_residency_reader(settings, self.hierarchy)
        self.activity = build_activity(settings, self.residency)
        # Every exported memcg yields up to two points per instrument (active/inactive,
        # some/full); leave room for those plus the root and the overflow series.
        limit = 2 * settings.max_cgroups + 16
        # Identity of every memcg in the last two snapshots, for the exporter
        # to put on Resources (two, so an export that races a newer snapshot
        # still finds a cgroup removed in between).
        self._identities: dict[int, dict] = {}
        self._previous_identities: dict[int, dict] = {}
        self._unknown_ids: set = set()
        if readers is None:
            readers = build_readers(settings, limit, self._identity)
        self.readers = list(readers)
        # Up to top_files points per memcg for the file metric, not two.
        file_view = View(
            instrument_name=FILE_USAGE.name,
            aggregation_cardinality_limit=settings.max_cgroups * max(1, settings.top_files) + 16,
        )
        # Observable callbacks run outside any trace: exemplars would be empty
        # and only cost time per point.
        self.meter_provider = MeterProvider(
            metric_readers=self.readers,
            resource=base_resource(),
            exemplar_filter=AlwaysOffExemplarFilter(),
            views=[file_view],
        )
        self._pruner = SeriesPruner(self.meter_provider, CGROUP_ID)
        self.source = SnapshotSource(
            lambda: read_snapshot(self.residency, self.activity), on_snapshot=self._after_snapshot
        )
        meter = self.meter_provider.get_meter(SCOPE_NAME, __version__)
        self.tracer_provider: TracerProvider | None = None
        self.stall_poller: StallPoller | None = None
        self._start_stalls(meter)
        # Prometheus has no per-series Resource: there the identity must be labels.
        labels = "prometheus" in settings.metrics_exporters or not self._pushes_only()
        engine = self.activity.probe.engine if self.activity is not None else "none"
        reason = (
            getattr(self.activity, "engine_reason", "") if self.activity else "off or unavailable"
        )
        attribution = getattr(self.activity.probe, "attribution", "owner") if self.activity else ""
        lookup_hook = getattr(self.activity.probe, "lookup_hook", "") if self.activity else ""
        self.metrics = PageCacheMetrics(
            meter,
            self.source,
            identity_on_points=labels,
            engine=engine,
            engine_reason=reason,
            attribution=attribution,
            lookup_hook=lookup_hook,
        )
        self._stopped = threading.Event()
        _log.info(
            "otel-pagecache %s: memory controller on cgroup v%d at %s; exporters: %s",
            __version__,
            self.hierarchy.version,
            self.hierarchy.mountpoint,
            ",".join(settings.metrics_exporters),
        )

    def _start_stalls(self, meter) -> None:
        """Stall spans, when the probe times stalls and spans are wanted."""
        probe = self.activity.probe if self.activity is not None else None
        if probe is None or not getattr(probe, "stall_kinds", None):
            return
        exporter = build_span_exporter(self.settings, self._identity)
        if exporter is not None:
            self.tracer_provider = TracerProvider(resource=base_resource())
            self.tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
            tracer = self.tracer_provider.get_tracer(SCOPE_NAME, __version__)
        else:
            tracer = NoOpTracerProvider().get_tracer(SCOPE_NAME)
        pipeline = StallPipeline(
            tracer,
            meter,
            threshold_s=self.settings.stall_threshold_ms / 1000,
            spans_per_second=self.settings.stall_spans_per_second,
            burst=max(1.0, self.settings.stall_spans_per_second),
        )
        self.stall_pipeline = pipeline
        registry = SlotRegistry(
            probe.publish_span_slots, probe.forget_span_slots, self.settings.proc_root
        )
        self.stall_poller = StallPoller(
            probe.stall_ring(pipeline.handle), pipeline, registry=registry
        ).start()
        _log.info("stall spans: %s", ", ".join(probe.stall_kinds))

    def _pushes_only(self) -> bool:
        """True when every reader exports through our ResourceSplittingExporter."""
        return all(
            isinstance(getattr(r, "_exporter", None), ResourceSplittingExporter)
            for r in self.readers
        )

    def _identity(self, cgroup_id: object) -> dict | None:
        found = self._identities.get(cgroup_id)  # type: ignore[call-overload]
        if found is None:
            found = self._previous_identities.get(cgroup_id)  # type: ignore[call-overload]
        if found is None and cgroup_id not in self._unknown_ids:
            # A stall span for a memcg no snapshot has seen yet (new, or no
            # metric exporter collecting): take one, at most every 0.5 s.
            self.source.current()
            found = self._identities.get(cgroup_id)  # type: ignore[call-overload]
            if found is None:
                if len(self._unknown_ids) > 10_000:
                    self._unknown_ids.clear()
                self._unknown_ids.add(cgroup_id)
        return found

    def _after_snapshot(self, snapshot: Snapshot) -> None:
        self._previous_identities = self._identities
        self._identities = {s.id: sample_resource_attributes(s) for s in snapshot.memcgs}
        live_files = None
        if snapshot.activity is not None:
            live_files = {
                (memcg, str(f.inode), f"{f.major}:{f.minor}")
                for memcg, files in snapshot.activity.files.items()
                for f in files
            }
        self._pruner.prune({s.id for s in snapshot.memcgs}, live_files)

    def wait(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set (the periodic readers run in their own threads)."""
        while not stop.wait(1.0):
            pass

    def stop(self) -> bool:
        """Flush and shut down; gives up after ``shutdown_timeout_s``. True if clean."""
        if self._stopped.is_set():
            return True
        self._stopped.set()
        timeout_s = self.settings.shutdown_timeout_s
        if self.stall_poller is not None:
            self.stall_poller.stop()

        # MeterProvider.shutdown does the last collect+export; an exporter
        # retrying against a dead collector could hold it far longer than the
        # bound, so it runs in a daemon thread we stop waiting for.
        def shutdown() -> None:
            if self.tracer_provider is not None:
                self.tracer_provider.shutdown()
            self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)

        worker = threading.Thread(
            target=shutdown,
            name="otel-pagecache-shutdown",
            daemon=True,
        )
        worker.start()
        worker.join(timeout_s)
        self.close_probes()
        if worker.is_alive():
            _log.warning("last export did not finish within %.1f s; exiting anyway", timeout_s)
            return False
        return True

    def close_probes(self) -> None:
        """Detach every BPF program (idempotent)."""
        if self.activity is not None:
            self.activity.probe.close()
