"""Exporter set-up from the standard ``OTEL_*`` variables, and per-container Resources.

Each container's series travel under a Resource of their own (base Resource +
identity), which is what an OpenTelemetry Collector's ``k8sattributes``
processor associates on. The per-container bulk is encoded so directly
(``otlp_bulk``); the agent's own metrics go through the SDK, and those that
name a memcg (the stall histogram's ``pagecache.cgroup.id``) are regrouped
onto the same Resources by ``ResourceSplitter``, with public SDK types only.
The Prometheus pull endpoint keeps the identity as labels instead
(``prometheus_bulk``): Prometheus has no per-series Resource.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    InMemoryMetricReader,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

from . import __version__
from .config import Settings
from .metrics import CGROUP_ID, RESOURCE_KEYS, SCOPE_NAME
from .otlp_bulk import CUMULATIVE, DELTA, BulkEncoder
from .otlp_transport import OtlpMetricSender, OtlpSettings
from .pipeline import ConsoleSender, MetricsPipeline
from .residency import SnapshotSource

_log = logging.getLogger(__name__)

SERVICE_NAME = "otel-pagecache"


def base_resource() -> Resource:
    """The agent's own Resource: ``OTEL_RESOURCE_ATTRIBUTES``/``OTEL_SERVICE_NAME``
    win; otherwise ``service.name=otel-pagecache`` and the host name."""
    detected = Resource.create()
    attrs = dict(detected.attributes)
    if str(attrs.get("service.name", "")).startswith("unknown_service"):
        attrs["service.name"] = SERVICE_NAME
    attrs.setdefault("service.version", __version__)
    attrs.setdefault("host.name", socket.gethostname())
    # Tells the agent's residency series from the in-process plugin's
    # (pagecache.reporter=process on its points) for the same memcg.
    attrs.setdefault("pagecache.reporter", "agent")
    return Resource(attrs, detected.schema_url)


IdentityLookup = Callable[[object], Mapping[str, object] | None]


class ResourceSplitter:
    """Regroups one MetricsData into a ResourceMetrics per identity.

    For the agent's own metrics that name a memcg (the stall histogram's
    points carry only ``pagecache.cgroup.id``: attribute sets of one key are
    far cheaper for the SDK to aggregate than sets of ten). A point's identity
    is the ``RESOURCE_KEYS`` attributes it carries, plus whatever ``lookup``
    returns for its cgroup id. Public SDK types only. Resources are cached per
    identity, so a steady host builds none per cycle.
    """

    def __init__(
        self,
        resource_keys: frozenset[str] = RESOURCE_KEYS,
        lookup: IdentityLookup | None = None,
        max_cached: int = 20_000,
    ) -> None:
        self._keys = resource_keys
        self._lookup = lookup
        self._max_cached = max_cached
        self._resources: dict[tuple, Resource] = {}

    def _resource(self, base: Resource, ident: tuple) -> Resource:
        key = (id(base), ident)
        resource = self._resources.get(key)
        if resource is None:
            if len(self._resources) >= self._max_cached:
                self._resources.clear()  # bounded; rebuilt on demand
            resource = base.merge(Resource(dict(ident))) if ident else base
            self._resources[key] = resource
        return resource

    @staticmethod
    def _identity(found: tuple, lookup: IdentityLookup | None) -> tuple:
        identity = dict(found)
        if lookup is not None and CGROUP_ID in identity:
            identity.update(lookup(identity[CGROUP_ID]) or {})
        return tuple(sorted(identity.items()))

    def split(self, data: MetricsData) -> MetricsData:
        keys, lookup = self._keys, self._lookup
        # Identity per distinct set of identity items on points, for this call.
        idents: dict[tuple, tuple] = {}
        # (resource, identity) -> {scope id -> (scope, resource, {metric name -> (metric, points)})}
        groups: dict[tuple, dict] = {}
        for rm in data.resource_metrics:
            rid = id(rm.resource)
            for sm in rm.scope_metrics:
                sid = id(sm)
                for metric in sm.metrics:
                    name = metric.name
                    for point in getattr(metric.data, "data_points", ()):
                        attrs = point.attributes
                        found = tuple(i for i in attrs.items() if i[0] in keys) if attrs else ()
                        if not found:
                            ident: tuple = ()
                            moved = point
                        else:
                            ident = idents.get(found)
                            if ident is None:
                                ident = idents[found] = self._identity(found, lookup)
                            rest = (
                                {k: v for k, v in attrs.items() if k not in keys}
                                if len(found) != len(attrs)
                                else {}
                            )
                            moved = _with_attributes(point, rest)
                        scopes = groups.get((rid, ident))
                        if scopes is None:
                            scopes = groups[(rid, ident)] = {}
                        entry = scopes.get(sid)
                        if entry is None:
                            entry = scopes[sid] = (sm, rm.resource, {})
                        bucket = entry[2].get(name)
                        if bucket is None:
                            bucket = entry[2][name] = (metric, [])
                        bucket[1].append(moved)
        resource_metrics = []
        for (_, ident), scopes in groups.items():
            base = next(iter(scopes.values()))[1]
            scope_metrics = [
                ScopeMetrics(
                    sm.scope,
                    [_with_points(m, pts) for m, pts in metrics.values()],
                    sm.schema_url,
                )
                for sm, _, metrics in scopes.values()
            ]
            resource_metrics.append(
                ResourceMetrics(self._resource(base, ident), scope_metrics, base.schema_url)
            )
        return MetricsData(resource_metrics)


def _with_points(metric: Metric, points: list) -> Metric:
    """A copy of a metric with other points; direct construction, as below."""
    data = metric.data
    if isinstance(data, Gauge):
        data = Gauge(points)
    elif isinstance(data, Sum):
        data = Sum(points, data.aggregation_temporality, data.is_monotonic)
    else:
        data = dataclasses.replace(data, data_points=points)
    return Metric(metric.name, metric.description, metric.unit, data)


def _with_attributes(point, attributes: dict):
    """A copy of a data point with other attributes; direct construction is
    several times cheaper than dataclasses.replace on the hot path."""
    if isinstance(point, NumberDataPoint):
        return NumberDataPoint(
            attributes,
            point.start_time_unix_nano,
            point.time_unix_nano,
            point.value,
            point.exemplars,
        )
    return dataclasses.replace(point, attributes=attributes)


class RateLimitFilter(logging.Filter):
    """Lets one record per (logger, message template) through every ``period_s``.

    The OTLP exporters log every failed attempt; with a collector down that is
    a warning per retry, forever. One per minute says the same.
    """

    def __init__(self, period_s: float = 60.0, prefixes: Iterable[str] = ("opentelemetry",)):
        super().__init__()
        self._period_s = period_s
        self._prefixes = tuple(prefixes)
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period_s:
                return False
            if len(self._last) > 1000:  # bounded: forget old templates
                self._last.clear()
            self._last[key] = now
        return True


def own_reader(otlp: OtlpSettings | None = None) -> InMemoryMetricReader:
    """The pull reader the push loop collects the agent's own metrics through,
    with the temporality ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` asks."""
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
    )

    preference = otlp.temporality if otlp is not None else "cumulative"
    delta = {
        "delta": (Counter, ObservableCounter, Histogram),
        "lowmemory": (Counter, Histogram),
    }.get(preference, ())
    return InMemoryMetricReader(
        preferred_temporality={kind: AggregationTemporality.DELTA for kind in delta}
    )


def _sender(settings: Settings, name: str) -> tuple[object, OtlpSettings | None, str]:
    if name == "console":
        return ConsoleSender(), None, "console"
    protocol = settings.otlp_metrics_protocol
    if protocol == "http":
        protocol = "http/protobuf"
    if protocol not in ("grpc", "http/protobuf"):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use 'grpc' or "
            "'http/protobuf'"
        )
    otlp = OtlpSettings.from_env(protocol=protocol)
    for warning in otlp.warnings:
        _log.warning("%s", warning)
    label = "OTLP/gRPC" if protocol == "grpc" else "OTLP/HTTP"
    return OtlpMetricSender(otlp), otlp, f"{label} to {otlp.endpoint}"


def build_pipelines(
    settings: Settings,
    source: SnapshotSource,
    resource: Resource,
    scope_version: str,
    lookup: IdentityLookup | None = None,
) -> tuple[list[MetricsPipeline], list[MetricReader]]:
    """One push pipeline per push name in ``OTEL_METRICS_EXPORTER`` (otlp,
    console), and the SDK readers the MeterProvider needs (their pull readers,
    and Prometheus's)."""
    pipelines: list[MetricsPipeline] = []
    readers: list[MetricReader] = []
    splitter = ResourceSplitter(RESOURCE_KEYS, lookup)
    for name in settings.metrics_exporters:
        if name == "none":
            continue
        if name == "prometheus":
            readers.append(_prometheus_reader(settings, source, scope_version))
            continue
        if name not in ("otlp", "console"):
            raise ValueError(
                f"OTEL_METRICS_EXPORTER={name!r} is not supported: use otlp, console, "
                "prometheus or none"
            )
        sender, otlp, destination = _sender(settings, name)
        reader = own_reader(otlp)
        encoder = BulkEncoder(
            resource.attributes,
            SCOPE_NAME,
            scope_version,
            schema_url=resource.schema_url or "",
            temporality=DELTA if otlp is not None and otlp.delta_counters else CUMULATIVE,
        )
        readers.append(reader)
        pipelines.append(
            MetricsPipeline(
                reader,
                splitter.split,
                encoder,
                source,
                sender,
                interval_s=settings.export_interval_ms / 1000,
                export_timeout_s=settings.export_timeout_ms / 1000,
                destination=destination,
            )
        )
    return pipelines, readers


def _prometheus_reader(
    settings: Settings, source: SnapshotSource, scope_version: str
) -> MetricReader:
    from .endpoint import serve_prometheus

    # Already serving when the command line bound it before the BPF load.
    serve_prometheus(settings.prometheus_host, settings.prometheus_port)
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY

    from .prometheus_bulk import BulkCollector

    # The SDK's reader serves target_info and the agent's own metrics; the
    # per-container bulk comes from our collector, on the same registry.
    reader = PrometheusMetricReader(registry=REGISTRY)
    REGISTRY.register(BulkCollector(source, SCOPE_NAME, scope_version))
    return reader


def copy_span(
    span: ReadableSpan, attributes: dict, resource: Resource | None = None
) -> ReadableSpan:
    """An ended span with other attributes (and Resource): ended spans are read-only."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=resource if resource is not None else span.resource,
        attributes=attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ResourceSwappingSpanExporter(SpanExporter):
    """Puts each span under its memcg's Resource, as ResourceSplittingExporter does
    for metrics: the span's ``pagecache.cgroup.id`` (and any identity attribute
    on it) becomes a Resource of base + identity; the rest stays on the span."""

    def __init__(
        self,
        inner: SpanExporter,
        lookup: IdentityLookup | None = None,
        resource_keys: frozenset[str] = RESOURCE_KEYS,
    ) -> None:
        self.inner = inner
        self._lookup = lookup
        self._keys = resource_keys
        self._resources: dict[tuple, Resource] = {}

    def _resource(self, base: Resource, ident: tuple) -> Resource:
        key = (id(base), ident)
        resource = self._resources.get(key)
        if resource is None:
            if len(self._resources) >= 20_000:
                self._resources.clear()
            resource = self._resources[key] = base.merge(Resource(dict(ident)))
        return resource

    def export(self, spans) -> SpanExportResult:
        try:
            moved = [self._move(span) for span in spans]
            return self.inner.export(moved)
        except Exception:  # noqa: BLE001 - a failed export must not stop the processor thread
            _log.debug("span export raised", exc_info=True)
            return SpanExportResult.FAILURE

    def _move(self, span: ReadableSpan) -> ReadableSpan:
        attrs = dict(span.attributes or {})
        found = {k: v for k, v in attrs.items() if k in self._keys}
        if not found:
            return span
        if self._lookup is not None and CGROUP_ID in found:
            found.update(self._lookup(found[CGROUP_ID]) or {})
        rest = {k: v for k, v in attrs.items() if k not in self._keys}
        resource = self._resource(span.resource, tuple(sorted(found.items())))
        return copy_span(span, attributes=rest, resource=resource)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def build_span_exporter(settings: Settings, lookup: IdentityLookup | None) -> SpanExporter | None:
    """The exporter ``OTEL_TRACES_EXPORTER`` names (otlp, console or none)."""
    name = settings.traces_exporter
    if name == "none":
        return None
    if name == "console":
        inner: SpanExporter = ConsoleSpanExporter()
    elif name == "otlp":
        protocol = settings.otlp_traces_protocol
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            inner = OTLPSpanExporter()
        elif protocol in ("http/protobuf", "http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpSpanExporter,
            )

            inner = HttpSpanExporter()
        else:
            raise ValueError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use 'grpc' or "
                "'http/protobuf'"
            )
    else:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none"
        )
    return ResourceSwappingSpanExporter(inner, lookup)
