"""Stall-span delivery with a bounded backlog whose losses are counted.

The SDK's BatchSpanProcessor drops spans silently (one log line) when its
queue is full, which is what happens while the collector is down. This
processor wraps it, keeps the number of spans handed over but not yet
exported at most the queue's size, and reports every span it had to give up
(``queue_full``) or whose export failed (``export_failed``) to ``on_drop``,
so the agent's own metrics count them. Public SDK interfaces only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

DropCounter = Callable[[str, int], None]


def default_queue_size(env: dict[str, str] | None = None) -> int:
    """``OTEL_BSP_MAX_QUEUE_SIZE`` as the specification defines it (default 2048)."""
    raw = (env if env is not None else os.environ).get("OTEL_BSP_MAX_QUEUE_SIZE", "")
    return int(raw) if raw.strip().isdigit() and int(raw) > 0 else 2048


class _ReportingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, done: Callable[[int, bool], None]) -> None:
        self._inner = inner
        self._done = done

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.FAILURE
        try:
            result = self._inner.export(spans)
        finally:
            self._done(len(spans), result == SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountedBatchSpanProcessor(SpanProcessor):
    """A BatchSpanProcessor whose dropped spans are counted by reason."""

    def __init__(
        self, exporter: SpanExporter, on_drop: DropCounter, queue_size: int | None = None
    ) -> None:
        self._capacity = queue_size or default_queue_size()
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._pending = 0
        self._inner = BatchSpanProcessor(
            _ReportingExporter(exporter, self._exported), max_queue_size=self._capacity
        )

    def _exported(self, count: int, ok: bool) -> None:
        with self._lock:
            self._pending = max(0, self._pending - count)
        if not ok:
            self._on_drop("export_failed", count)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return  # the batch processor ignores these too
        with self._lock:
            full = self._pending >= self._capacity
            if not full:
                self._pending += 1
        if full:
            self._on_drop("queue_full", 1)
            return
        self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
