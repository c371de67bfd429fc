"""Page-cache stalls: BPF-timed memcg reclaim on the real kernel, and the pipeline's rules.

Memcg reclaim is forced for real: a worker in a memory cgroup with a 48 MiB
limit reads a 128 MiB cold file. Direct reclaim (global memory pressure) and
dirty throttling (global dirty limits) cannot be caused here without harming
the host, so those kinds are checked with synthetic ring-buffer records fed
to the same pipeline.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_pagecache.probes.bcc import bcc_available
from otel_pagecache.probes.layout import StallEvent
from otel_pagecache.stalls import StallPipeline, TokenBuckets
from tests.agent_process import AgentProcess, limit_memcg, stall_agent_env, wait_for_log
from tests.conftest import make_cold_file
from tests.kernel_features import skip_if_lacking
from tests.peers.otlp_receiver import iter_points, iter_spans

MIB = 1 << 20
MEMCG_RECLAIM = ("vmscan:mm_vmscan_memcg_reclaim_begin", "vmscan:mm_vmscan_memcg_reclaim_end")


@pytest.mark.kernel
@pytest.mark.parametrize("engine", ["core", "bcc"])
def test_memcg_reclaim_stalls_become_spans_on_the_containers_resource(
    memcgs, data_dir, otlp_receiver, tmp_path, engine
):
    if engine == "bcc" and not bcc_available():
        pytest.skip("BCC's Python module (python3-bpfcc) is not installed")
    skip_if_lacking(MEMCG_RECLAIM, "memcg reclaim stall spans")
    container_id, path, directory = memcgs.create_container()
    limit_memcg(directory, 48 * MIB)
    worker = memcgs.worker(directory)
    cold = make_cold_file(data_dir / "cold-128m", 128 * MIB)
    env = stall_agent_env(otlp_receiver)
    with AgentProcess(["run", "--engine", engine, "--include", path], env, tmp_path) as agent:
        wait_for_log(agent, "stall spans:")
        # An export names the container: a snapshot has seen the memcg, so its
        # identity is known before the first stall.
        otlp_receiver.wait_for_metrics(
            lambda r: any(p.resource.get("container.id") == container_id for p in iter_points(r)),
            timeout=30,
        )
        before_ns = time.time_ns()
        worker.do("read", cold)
        after_ns = time.time_ns()

        def has_spans(requests):
            return any(
                s.name == "pagecache.stall.memcg_reclaim"
                and s.resource.get("container.id") == container_id
                for s in iter_spans(requests)
            )

        otlp_receiver.wait_for_traces(has_spans, timeout=30)

        def histogram_covers_spans(requests):
            spans = sum(
                s.resource.get("container.id") == container_id
                for s in iter_spans(otlp_receiver.trace_requests())
            )
            return any(
                p.metric == "pagecache.stall.duration"
                and p.resource.get("container.id") == container_id
                and p.count >= spans
                for p in iter_points(requests)
            )

        otlp_receiver.wait_for_metrics(histogram_covers_spans, timeout=30)
        assert agent.terminate() == 0, agent.log()

    spans = [
        s
        for s in iter_spans(otlp_receiver.trace_requests())
        if s.resource.get("container.id") == container_id
    ]
    assert spans
    pid = worker.proc.pid
    comm = Path(f"/proc/{pid}/comm").read_text().strip() if Path(f"/proc/{pid}").exists() else None
    for span in spans:
        assert span.name == "pagecache.stall.memcg_reclaim"
        assert span.attributes["process.pid"] == pid
        assert span.attributes["thread.id"] == pid  # the worker is single-threaded
        if comm:
            assert span.attributes["process.executable.name"] == comm
        assert span.attributes["pagecache.stall.kind"] == "memcg_reclaim"
        assert span.attributes["pagecache.stall.pages_reclaimed"] >= 0
        assert "pagecache.cgroup.id" not in span.attributes  # moved to the Resource
        assert span.resource["pagecache.cgroup.path"] == path
        # Real wall-clock times, converted from the kernel's boot-time clock.
        assert before_ns - 10**9 <= span.start_time_unix_nano < span.end_time_unix_nano
        assert span.end_time_unix_nano <= after_ns + 10**9
    histogram = [
        p
        for p in iter_points(otlp_receiver.metrics_requests())
        if p.metric == "pagecache.stall.duration" and p.resource.get("container.id") == container_id
    ]
    assert histogram and histogram[-1].unit == "s" and histogram[-1].kind == "histogram"
    assert histogram[-1].attributes == {"pagecache.stall.kind": "memcg_reclaim"}
    assert histogram[-1].count >= len(spans)


def _record(kind: int, duration_ns: int, memcg: int = 7, planned: int = 0, pages: int = 3) -> bytes:
    event = StallEvent(
        start_ns=1_000_000_000,
        duration_ns=duration_ns,
        memcg=memcg,
        pages=pages,
        gfp=0xCC0,
        ratelimit=25,
        pid=42,
        tid=43,
        order=0,
        kind=kind,
        planned=planned,
        pad=0,
        comm=b"writer",
    )
    return bytes(event)


@pytest.fixture
def pipeline_parts():
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    return tracer_provider.get_tracer("t"), meter, spans, reader


def _histogram_count(reader) -> int:
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "pagecache.stall.duration":
                    return sum(p.count for p in m.data.data_points)
    return 0


def test_threshold_spans_and_histogram(pipeline_parts):
    tracer, meter, spans, reader = pipeline_parts
    pipeline = StallPipeline(tracer, meter, threshold_s=0.0015)
    pipeline.handle(_record(1, 1_000_000), offset_ns=5)  # 1 ms: below 1.5 ms
    pipeline.handle(_record(1, 2_000_000), offset_ns=5)  # 2 ms: a span
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == ["pagecache.stall.direct_reclaim"]
    span = finished[0]
    assert span.start_time == 1_000_000_005 and span.end_time == 1_000_000_005 + 2_000_000
    assert span.attributes["pagecache.stall.gfp_flags"] == "0xcc0"
    assert span.attributes["process.executable.name"] == "writer"
    assert _histogram_count(reader) == 2  # every stall, spanned or not


def test_dirty_throttle_span_is_the_planned_pause(pipeline_parts):
    tracer, meter, spans, _ = pipeline_parts
    StallPipeline(tracer, meter, threshold_s=0).handle(_record(2, 40_000_000, planned=1), 0)
    span = spans.get_finished_spans()[0]
    assert span.name == "pagecache.stall.dirty_throttle"
    assert span.attributes["pagecache.stall.planned"] is True
    assert span.attributes["pagecache.stall.pages_dirtied"] == 3


def test_rate_limit_per_container_counts_drops(pipeline_parts):
    tracer, meter, spans, _ = pipeline_parts
    now = [0.0]
    pipeline = StallPipeline(
        tracer, meter, threshold_s=0, spans_per_second=2, burst=3, clock=lambda: now[0]
    )
    for _ in range(10):
        pipeline.handle(_record(0, 5_000_000, memcg=1), 0)
    pipeline.handle(_record(0, 5_000_000, memcg=2), 0)  # another container: its own bucket
    assert len(spans.get_finished_spans()) == 3 + 1
    assert pipeline.dropped["rate_limited"] == 7
    now[0] = 1.0  # a second later: two more tokens
    for _ in range(5):
        pipeline.handle(_record(0, 5_000_000, memcg=1), 0)
    assert len(spans.get_finished_spans()) == 4 + 2


def test_garbage_records_are_counted_not_raised(pipeline_parts):
    tracer, meter, spans, _ = pipeline_parts
    pipeline = StallPipeline(tracer, meter, threshold_s=0)
    pipeline.handle(b"short", 0)
    pipeline.handle(bytes(ctypes.sizeof(StallEvent))[:-1], 0)
    pipeline.handle(_record(9, 5), 0)  # unknown kind
    assert spans.get_finished_spans() == ()
    assert pipeline.dropped["undecodable"] == 3


def test_token_buckets_stay_bounded():
    buckets = TokenBuckets(rate=1, burst=1, max_keys=10)
    for key in range(100):
        assert buckets.allow(key, 0.0)
    assert len(buckets._buckets) <= 10


@pytest.mark.kernel
def test_dirty_throttling_becomes_planned_spans(memcgs, throttled_fs, otlp_receiver, tmp_path):
    skip_if_lacking(("writeback:balance_dirty_pages",), "dirty-throttle spans")
    container_id, path, directory = memcgs.create_container()
    worker = memcgs.worker(directory)
    env = stall_agent_env(otlp_receiver, OTEL_METRICS_EXPORTER="none")
    with AgentProcess(["run", "--include", path], env, tmp_path) as agent:
        wait_for_log(agent, "stall spans:")
        worker.do("write", throttled_fs / "fast-writer", 48 * MIB)

        def throttled(requests):
            return any(s.name == "pagecache.stall.dirty_throttle" for s in iter_spans(requests))

        otlp_receiver.wait_for_traces(throttled, timeout=30)
        assert agent.terminate() == 0, agent.log()
    spans = [
        s
        for s in iter_spans(otlp_receiver.trace_requests())
        if s.name == "pagecache.stall.dirty_throttle"
    ]
    mine = [s for s in spans if s.resource.get("container.id") == container_id]
    assert mine, [s.resource for s in spans]
    for span in mine:
        assert span.attributes["pagecache.stall.planned"] is True
        assert span.attributes["process.pid"] == worker.proc.pid
        assert span.end_time_unix_nano > span.start_time_unix_nano  # the planned pause
        assert span.attributes["pagecache.stall.pages_dirtied"] > 0


def test_rate_limit_holds_on_a_real_flood(memcgs, data_dir, otlp_receiver, tmp_path):
    path, directory = memcgs.create()
    limit_memcg(directory, 48 * MIB)
    worker = memcgs.worker(directory)
    cold = make_cold_file(data_dir / "cold-128m", 128 * MIB)
    env = stall_agent_env(otlp_receiver, OTEL_PAGECACHE_STALL_SPANS_PER_SECOND="2")
    with AgentProcess(["run", "--include", path], env, tmp_path) as agent:
        wait_for_log(agent, "stall spans:")
        started = time.monotonic()
        worker.do("read", cold)
        elapsed = time.monotonic() - started

        def dropped(requests):
            return any(
                p.metric == "pagecache.stall.spans.dropped" and p.value > 0
                for p in iter_points(requests)
            )

        otlp_receiver.wait_for_metrics(dropped, timeout=30)

        def spans_and_more_stalls(requests):
            spans = sum(
                s.resource.get("pagecache.cgroup.path") == path
                for s in iter_spans(otlp_receiver.trace_requests())
            )
            return spans >= 1 and any(
                p.metric == "pagecache.stall.duration"
                and p.resource.get("pagecache.cgroup.path") == path
                and p.count > spans
                for p in iter_points(requests)
            )

        otlp_receiver.wait_for_metrics(spans_and_more_stalls, timeout=30)
        assert agent.terminate() == 0, agent.log()
    spans = [
        s
        for s in iter_spans(otlp_receiver.trace_requests())
        if s.resource.get("pagecache.cgroup.path") == path
    ]
    # Burst of 2, then 2 per second, over the read (plus a second of slack).
    assert 1 <= len(spans) <= 2 + 2 * (elapsed + 1), (len(spans), elapsed)
    histogram = [
        p
        for p in iter_points(otlp_receiver.metrics_requests())
        if p.metric == "pagecache.stall.duration"
        and p.resource.get("pagecache.cgroup.path") == path
    ]
    assert histogram[-1].count > len(spans)  # every stall counted, spanned or not
