"""The plugin's span processor in-process, through the real SDK."""

from __future__ import annotations

import os
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_pagecache.correlation import SpanSlots
from otel_pagecache.instrumentor import PageCacheInstrumentor, ThreadFiguresProcessor
from otel_pagecache.sdk_internals import wrap_span_processors


@pytest.fixture
def instrumented(monkeypatch):
    monkeypatch.setenv("OTEL_PAGECACHE_PROCESS_RESIDENCY", "false")
    monkeypatch.setenv("OTEL_PAGECACHE_SPAN_SLOTS", "false")
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    early = provider.get_tracer("created-before-the-plugin")
    instrumentor = PageCacheInstrumentor()
    instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
    yield provider, exporter, early
    instrumentor.uninstrument()


def test_tracers_created_before_the_plugin_get_figures(instrumented):
    provider, exporter, early = instrumented
    early.start_span("early").end()
    provider.get_tracer("late").start_span("late").end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    for name in ("early", "late"):
        assert "pagecache.thread.read_bytes" in spans[name].attributes
        assert spans[name].attributes["thread.id"] == threading.get_native_id()
        assert spans[name].attributes["process.pid"] == os.getpid()


def test_processors_added_afterwards_still_work(instrumented):
    provider, exporter, _ = instrumented
    later = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(later))
    provider.get_tracer("t").start_span("s").end()
    assert [s.name for s in later.get_finished_spans()] == ["s"]
    assert [s.name for s in exporter.get_finished_spans()] == ["s"]


def test_uninstrument_restores_the_processors(monkeypatch):
    monkeypatch.setenv("OTEL_PAGECACHE_PROCESS_RESIDENCY", "false")
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = PageCacheInstrumentor()
    instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
    instrumentor.uninstrument()
    provider.get_tracer("t").start_span("s").end()
    assert "pagecache.thread.read_bytes" not in exporter.get_finished_spans()[0].attributes


class RecordingSlots(SpanSlots):
    """Real slots (registry file and all), whose current contents tests can read."""

    def current(self, tid: int) -> int:
        slot = self._slots[tid % self.count]
        return int.from_bytes(bytes(slot.span_id), "big") if slot.tid == tid else 0


def test_slot_follows_nesting_and_spans_ending_on_other_threads():
    provider = TracerProvider()
    slots = RecordingSlots()
    try:
        processor = wrap_span_processors(
            provider, lambda inner: ThreadFiguresProcessor(inner, slots)
        ).wrapper
        tracer = provider.get_tracer("t")
        tid = threading.get_native_id()
        outer = tracer.start_span("outer")
        assert slots.current(tid) == outer.context.span_id
        handed = tracer.start_span("handed")
        assert slots.current(tid) == handed.context.span_id
        worker = threading.Thread(target=handed.end)
        worker.start()
        worker.join()
        # Ended elsewhere: the starting thread's slot goes back to "outer".
        assert slots.current(tid) == outer.context.span_id
        outer.end()
        assert slots.current(tid) == 0
        assert processor._stacks == {}
    finally:
        slots.close()


def test_spans_that_never_end_do_not_block_new_ones():
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    processor = wrap_span_processors(provider, ThreadFiguresProcessor).wrapper
    processor.MAX_OPEN_SPANS = 100
    tracer = provider.get_tracer("t")
    for _ in range(150):
        tracer.start_span("leaked")
    tracer.start_span("fine").end()
    assert "pagecache.thread.read_bytes" in exporter.get_finished_spans()[0].attributes
    assert len(processor._starts) <= 100


def test_process_residency_reports_its_own_v2_pages_without_its_children(tmp_path):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_pagecache.containers import identify
    from otel_pagecache.instrumentor import ProcessResidency
    from tests.cgroup_trees import write_v2_cgroup

    own = write_v2_cgroup(
        tmp_path, "/app", {"active_file": 5000, "inactive_file": 3000}, current=20000
    )
    write_v2_cgroup(tmp_path, "/app/worker", {"active_file": 1000, "inactive_file": 500})
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    ProcessResidency(meter, identify("/app"), str(own), 2, "/app")
    points = {
        (m.name, p.attributes.get("pagecache.state")): (p.value, p.attributes)
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }
    assert points[("pagecache.usage", "active")][0] == 4000
    assert points[("pagecache.usage", "inactive")][0] == 2500
    # The memcg as a whole: usage minus its hierarchical inactive file pages.
    assert points[("pagecache.memcg.working_set", None)][0] == 20000 - 3000
    assert points[("pagecache.usage", "active")][1]["pagecache.reporter"] == "process"
