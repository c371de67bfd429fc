"""The node agent: residency, BPF activity and stalls, wired to the metric pipelines and spans.

``Agent`` builds, from the settings, the residency reader and the snapshot
source every exporter shares, the metric pipelines (``metric_export``, before
any BPF program loads), the activity engine (``choose_engine``: CO-RE, BCC or
none), the agent's own metrics and the stall spans; ``Agent.stop`` makes the
last exports within one bound and detaches the programs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider

from . import __version__
from .activity import PAGE_SIZE, ActivityTracker, FilePathResolver
from .cgroupfs import MemoryHierarchy, find_memory_hierarchy
from .config import Settings
from .container_resources import base_resource
from .containers import Enricher
from .correlation import SlotRegistry
from .metric_export import build_pipelines
from .metrics import (
    REASON_AUTO_CORE,
    REASON_AUTO_FALLBACK,
    REASON_DISABLED,
    REASON_REQUESTED,
    REASON_UNAVAILABLE,
    SCOPE_NAME,
    STALL_DURATION,
    AgentMetrics,
    memcg_resource_attributes,
)
from .pipeline import MetricsPipeline
from .residency import ResidencyReader, Selection, Snapshot, SnapshotSource
from .span_delivery import CountedBatchSpanProcessor
from .span_export import build_span_exporter
from .stalls import StallPipeline, StallPoller
from .stopping import DETACH_S
from .whatif import WhatifRun, start_whatif

_log = logging.getLogger(__name__)


def build_residency_reader(settings: Settings, hierarchy: MemoryHierarchy) -> ResidencyReader:
    enricher = Enricher(
        pod_log_root=settings.pod_log_root,
        containerd_state_root=settings.containerd_state_root,
        crio_state_root=settings.crio_state_root,
        docker_root=settings.docker_root,
        storage_root=settings.storage_root,
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
    tracker = ActivityTracker(
        probe, settings.top_files, resolver, top_shared_pairs=settings.top_shared_pairs
    )
    tracker.engine_reason = reason
    return tracker


def choose_engine(settings: Settings):
    """(probe, reason), or (None, reason) after one warning naming each cause.

    ``auto``: CO-RE when BTF is present and the object loads, else BCC when its
    module imports and it compiles, else residency only."""
    from .probes import ProbeUnavailable, missing_bpf_capabilities
    from .probes.bcc import BccProbe, bcc_available
    from .probes.core import CoreProbe

    def core():
        return CoreProbe(
            lookups=settings.lookups, stalls=settings.stalls, max_memcgs=settings.bpf_max_memcgs
        ).start()

    def bcc():
        return BccProbe(
            lookups=settings.lookups, stalls=settings.stalls, max_memcgs=settings.bpf_max_memcgs
        ).start()

    if settings.engine in ("core", "bcc"):
        start = core if settings.engine == "core" else bcc
        try:
            return start(), "as asked"
        except ProbeUnavailable as e:
            raise ValueError(
                f"the {settings.engine} engine was asked for and cannot run: {e}"
            ) from e
    missing = missing_bpf_capabilities()
    if missing:
        # No engine can load: one line per missing capability, with its fix.
        for line in missing:
            _log.warning("%s", line)
        _log.warning("page-cache activity unavailable without them: residency only")
        return None, "missing capabilities: " + ", ".join(m.split()[2] for m in missing)
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


def engine_reason_code(settings: Settings, engine: str | None) -> str:
    """The short, stable ``pagecache.engine.reason`` for the engine that runs
    (``engine``, or None when activity is off); the sentence is for logs."""
    if engine is None:
        off = not settings.activity or settings.engine == "none"
        return REASON_DISABLED if off else REASON_UNAVAILABLE
    if settings.engine in ("core", "bcc"):
        return REASON_REQUESTED
    return REASON_AUTO_CORE if engine == "core" else REASON_AUTO_FALLBACK


def read_snapshot(
    residency: ResidencyReader, tracker: ActivityTracker | None, whatif: WhatifRun | None = None
) -> Snapshot:
    """Residency, then activity joined to it by memcg id (the walk just refreshed the index),
    then each memcg's what-if curve."""
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
    if whatif is not None:
        try:
            whatif.annotate(snapshot, PAGE_SIZE)
        except Exception:  # noqa: BLE001 - costs the curve for one cycle only
            _log.debug("what-if curve read failed", exc_info=True)
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


# How long a memcg no snapshot knew stays unknown to the stall spans' Resources.
UNKNOWN_RETRY_S = 10.0


class Agent:
    """Owns the pipelines; ``stop()`` makes the last export within one bound.

    The bound is ``OTEL_PAGECACHE_SHUTDOWN_TIMEOUT`` (default 5 s): it covers
    the last metric exports and the last span export together, whatever the
    collector does; the BPF programs are detached after it, within
    ``stopping.DETACH_S``.
    """

    def __init__(
        self,
        settings: Settings,
        readers: Sequence[MetricReader] = (),
        hierarchy: MemoryHierarchy | None = None,
        resource: Resource | None = None,
    ) -> None:
        self.settings = settings
        self.hierarchy = hierarchy or find_memory_hierarchy(settings.cgroup_root)
        for warning in access_warnings(self.hierarchy):
            _log.warning("%s", warning)
        for note in feature_notes(self.hierarchy):
            _log.info("%s", note)
        self.residency = build_residency_reader(settings, self.hierarchy)
        self.activity: ActivityTracker | None = None
        self.whatif: WhatifRun | None = None
        # Identity of every memcg in the last two snapshots, for the stall
        # histogram's and spans' Resources (two, so an export that races a
        # newer snapshot still finds a cgroup removed in between).
        self._identities: dict[int, tuple] = {}
        self._previous_identities: dict[int, tuple] = {}
        # Memcgs a stall named that no snapshot had: not read again for each
        # of their stalls, but forgotten every UNKNOWN_RETRY_S, so a container
        # started after the last snapshot gets its identity on later spans
        # even with no metric exporter taking snapshots.
        self._unknown_ids: set = set()
        self._unknown_since = time.monotonic()
        self.source = SnapshotSource(
            lambda: read_snapshot(self.residency, self.activity, self.whatif),
            on_snapshot=self._after_snapshot,
        )
        resource = resource or base_resource()
        self.pipelines: list[MetricsPipeline]
        self.pipelines, built = build_pipelines(
            settings, self.source, resource, __version__, self._identity
        )
        self.readers = [*built, *readers]
        # Exporter settings are checked (and the Prometheus port bound) above,
        # before any BPF program loads.
        self.activity = build_activity(settings, self.residency)
        self.whatif = start_whatif(settings, self.activity.probe if self.activity else None)
        # The stall histogram is the one SDK instrument with a series per memcg.
        stall_view = View(
            instrument_name=STALL_DURATION.name,
            aggregation_cardinality_limit=settings.max_cgroups + 16,
        )
        # Observable callbacks run outside any trace: exemplars would be empty
        # and only cost time per point. stop() shuts the providers down once,
        # within its bound: no second shutdown at interpreter exit.
        self.meter_provider = MeterProvider(
            metric_readers=self.readers,
            resource=resource,
            exemplar_filter=AlwaysOffExemplarFilter(),
            views=[stall_view],
            shutdown_on_exit=False,
        )
        meter = self.meter_provider.get_meter(SCOPE_NAME, __version__)
        self.tracer_provider: TracerProvider | None = None
        self._span_exporter = None
        self.stall_poller: StallPoller | None = None
        self._start_stalls(meter, resource)
        engine = self.activity.probe.engine if self.activity is not None else None
        attribution = self.activity.probe.attribution if self.activity else ""
        lookup_hook = self.activity.probe.lookup_hook if self.activity else ""
        self.metrics = AgentMetrics(
            meter,
            self.source,
            engine=engine or "none",
            engine_reason=engine_reason_code(settings, engine),
            attribution=attribution,
            lookup_hook=lookup_hook,
            shared_mode=self.activity.probe.shared_mode if self.activity else "",
        )
        self._stopped = threading.Event()
        self.last_export_delivered: bool | None = None
        for pipeline in self.pipelines:
            pipeline.start()
        _log.info(
            "otel-pagecache %s: memory controller on cgroup v%d at %s; exporters: %s",
            __version__,
            self.hierarchy.version,
            self.hierarchy.mountpoint,
            ",".join(settings.metrics_exporters),
        )

    def _start_stalls(self, meter, resource: Resource) -> None:
        """Stall spans, when the probe times stalls and spans are wanted."""
        probe = self.activity.probe if self.activity is not None else None
        if probe is None or not probe.stall_kinds:
            return
        exporter = build_span_exporter(self.settings, self._identity)
        self._span_exporter = exporter
        if exporter is not None:
            self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            tracer = self.tracer_provider.get_tracer(SCOPE_NAME, __version__)
        else:
            tracer = NoOpTracerProvider().get_tracer(SCOPE_NAME)
        registry = SlotRegistry(
            probe.publish_span_slots, probe.forget_span_slots, self.settings.proc_root
        )
        pipeline = StallPipeline(
            tracer,
            meter,
            threshold_s=self.settings.stall_threshold_ms / 1000,
            spans_per_second=self.settings.stall_spans_per_second,
            burst=max(1.0, self.settings.stall_spans_per_second),
            on_unlinked=lambda pid: registry.request(pid, announced=False),
        )
        if self.tracer_provider is not None:
            self.tracer_provider.add_span_processor(
                CountedBatchSpanProcessor(exporter, pipeline.count_dropped)
            )
        self.stall_pipeline = pipeline
        self.stall_poller = StallPoller(
            probe.stall_ring(pipeline.handle, on_announcement=registry.request),
            pipeline,
            registry=registry,
        ).start()
        _log.info("stall spans: %s", ", ".join(probe.stall_kinds))

    def _identity(self, cgroup_id: object) -> dict | None:
        found = self._identities.get(cgroup_id)  # type: ignore[call-overload]
        if found is None:
            found = self._previous_identities.get(cgroup_id)  # type: ignore[call-overload]
        if found is None and time.monotonic() - self._unknown_since > UNKNOWN_RETRY_S:
            self._unknown_ids.clear()
            self._unknown_since = time.monotonic()
        if found is None and cgroup_id not in self._unknown_ids:
            # A stall span for a memcg no snapshot has seen yet (new, or no
            # metric exporter collecting): take one, at most every 0.5 s.
            self.source.current()
            found = self._identities.get(cgroup_id)  # type: ignore[call-overload]
            if found is None:
                if len(self._unknown_ids) > 10_000:
                    self._unknown_ids.clear()
                self._unknown_ids.add(cgroup_id)
        if found is None:
            return None
        path, identity = found
        return memcg_resource_attributes(identity, path, cgroup_id)  # type: ignore[arg-type]

    def _after_snapshot(self, snapshot: Snapshot) -> None:
        # What names each memcg, not its attributes: those are built when a
        # stall asks (a few per cycle); 10,000 dicts a cycle, kept for two
        # cycles, were ~5 MiB.
        self._previous_identities = self._identities
        self._identities = {s.id: (s.path, s.identity) for s in snapshot.memcgs}

    def wait(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set (the pipelines run in their own threads)."""
        while not stop.wait(1.0):
            pass

    def stop(self, deadline: float | None = None) -> bool:
        """Last export, then detach; returns True: a stop is not a failure.

        Everything shares one ``deadline`` (``time.monotonic()``; by default
        ``shutdown_timeout_s`` from now, the command line passes the signal's
        time plus that): the stall poller, the last metric exports (all
        pipelines at once) and the span flush end by it; the BPF detach gets
        ``DETACH_S`` more, and what is still running then is left to the
        process's exit (``stopping.ExitGuard`` bounds that too).

        Exports that fail or do not finish in time are warnings
        (``last_export_delivered`` tells tests which); the process still
        exits 0, as systemd expects of a requested stop."""
        if self._stopped.is_set():
            return True
        self._stopped.set()
        bound_s = self.settings.shutdown_timeout_s
        if deadline is None:
            deadline = time.monotonic() + bound_s
        flush_started = time.monotonic()

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        # A poller stuck in poll() keeps the BPF object it reads: the kernel
        # detaches its programs when the process exits.
        poller_stopped = self.stall_poller is None or self.stall_poller.stop(min(2.0, remaining()))
        if self.whatif is not None:
            poller_stopped = self.whatif.stop(min(2.0, remaining())) and poller_stopped
        # Each flush runs in a daemon thread that is abandoned at the
        # deadline: the exporters' own retries and the SDK's joins are not
        # ours to bound, and one slow exporter must not eat another's time.
        spans = None
        if self.tracer_provider is not None:
            spans = _in_thread(self._shutdown_quietly, "span-flush", self.tracer_provider.shutdown)
        outcomes: list[bool] = []
        flushes = [
            _in_thread(lambda p=pipeline: outcomes.append(p.shutdown(remaining())), "last-export")
            for pipeline in self.pipelines
        ]
        for thread in flushes:
            thread.join(remaining())
        delivered = len(outcomes) == len(flushes) and all(outcomes)
        self._shutdown_quietly(self.meter_provider.shutdown, timeout_millis=remaining() * 1000)
        if spans is not None:
            spans.join(remaining())
            if spans.is_alive():
                # Close its channel: an export in flight ends now, not at its
                # own timeout, and the SDK's thread with it.
                self._shutdown_quietly(self._span_exporter.shutdown)
                _log.warning("the last stall spans were not sent within %.1f s", bound_s)
        if not delivered:
            _log.warning(
                "the last metric export did not get through within %.1f s "
                "(OTEL_PAGECACHE_SHUTDOWN_TIMEOUT); stopping anyway",
                bound_s,
            )
        _log.info(
            "last export %s; flush took %.2f s (bound %.1f s)",
            "delivered" if delivered else "not delivered",
            time.monotonic() - flush_started,
            bound_s,
        )
        self.last_export_delivered = delivered
        detached = False
        if poller_stopped:
            detach = _in_thread(self.close_probes, "detach")
            detach.join(remaining() + DETACH_S)
            detached = not detach.is_alive()
        if self.activity is None:
            _log.info("stopped")
        elif detached:
            _log.info("stopped: BPF programs detached")
        else:
            _log.info("stopped: the BPF programs go with the process")
        return True

    @staticmethod
    def _shutdown_quietly(shutdown, **kwargs) -> None:
        try:
            shutdown(**kwargs)
        except Exception:  # noqa: BLE001 - a failed flush at exit is a warning at most
            _log.debug("shutdown raised", exc_info=True)

    def close_probes(self) -> None:
        """Detach every BPF program (idempotent)."""
        if self.activity is not None:
            self.activity.probe.close()


def _in_thread(target, name: str, *args) -> threading.Thread:
    """``target(*args)`` started in a daemon thread (one the exit need not wait for)."""
    thread = threading.Thread(target=target, args=args, name=f"otel-pagecache-{name}", daemon=True)
    thread.start()
    return thread
