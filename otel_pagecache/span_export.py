"""The agent's stall-span exporter, from ``OTEL_TRACES_EXPORTER``, under per-container Resources.

``build_span_exporter`` makes the exporter the standard variables name (OTLP
over gRPC or HTTP, console, or none) and wraps it in
``ResourceSwappingSpanExporter``, which puts each span under its memcg's
container Resource (``container_resources``), as ``metric_regrouping`` does
for the agent's own metrics. ``span_delivery`` bounds and counts what reaches
it.
"""

from __future__ import annotations

import logging

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

from .config import Settings
from .container_resources import IdentityLookup, ResourceCache, identity_of
from .metrics import RESOURCE_KEYS
from .span_copy import copy_span

_log = logging.getLogger(__name__)


class ResourceSwappingSpanExporter(SpanExporter):
    """Puts each span under its memcg's Resource, as ``metric_regrouping.ResourceSplitter``
    does for metrics: the span's ``pagecache.cgroup.id`` (and any identity attribute
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
        self._resources = ResourceCache()
        self._shut_down = False

    def export(self, spans) -> SpanExportResult:
        try:
            moved = [self._move(span) for span in spans]
            return self.inner.export(moved)
        except Exception:  # noqa: BLE001 - a failed export must not stop the processor thread
            _log.debug("span export raised", exc_info=True)
            return SpanExportResult.FAILURE

    def _move(self, span: ReadableSpan) -> ReadableSpan:
        attrs = dict(span.attributes or {})
        found = [(k, v) for k, v in attrs.items() if k in self._keys]
        if not found:
            return span
        rest = {k: v for k, v in attrs.items() if k not in self._keys}
        resource = self._resources.get(span.resource, identity_of(found, self._lookup))
        return copy_span(span, attributes=rest, resource=resource)

    def shutdown(self) -> None:
        # Once: the agent closes it at its deadline to end an export in
        # flight, and the SDK's processor closes it again when its thread ends.
        if self._shut_down:
            return
        self._shut_down = True
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
