"""The agent's metric exporters, from ``OTEL_METRICS_EXPORTER`` and the ``OTEL_*`` variables.

``build_pipelines`` makes one push ``pipeline.MetricsPipeline`` per push
exporter named (``otlp``: an ``otlp_transport`` sender; ``console``), each
with its own pull reader for the agent's own metrics (``own_reader``), the
``metric_regrouping`` splitter and an ``otlp_bulk`` encoder for the
per-container bulk; and, for ``prometheus``, the SDK's Prometheus reader
plus the ``prometheus_bulk`` collector on the same registry (Prometheus has
no per-series Resource: the identity travels as labels).
"""

from __future__ import annotations

import logging

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricReader,
)
from opentelemetry.sdk.resources import Resource

from .config import Settings
from .container_resources import IdentityLookup
from .metric_regrouping import ResourceSplitter
from .metrics import RESOURCE_KEYS, SCOPE_NAME
from .otlp_bulk import CUMULATIVE, DELTA, BulkEncoder
from .otlp_transport import OtlpMetricSender, OtlpSettings
from .pipeline import ConsoleSender, MetricsPipeline
from .residency import SnapshotSource

_log = logging.getLogger(__name__)


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
