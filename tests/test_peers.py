"""Prove the real test peers work, using the real OpenTelemetry SDK exporters.

If these fail, every integration test built on the peers is suspect, so they check
the plumbing itself: transports, headers, compression, AnyValue decoding, rotel
forwarding and a Prometheus scrape read back through its query API.
"""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry, start_http_server

from tests.peers import prometheus as prometheus_peer
from tests.peers.otlp_receiver import OtlpReceiver, Point, iter_points, iter_spans, metric_names
from tests.peers.prometheus import PrometheusNotInstalled, PrometheusServer
from tests.peers.rotel import RotelAgent, RotelError

# Fixtures (otlp_receiver, rotel_agent_factory, rotel_agent, prometheus_server) come
# from tests/conftest.py, which star-imports tests.peers.fixtures.

RESOURCE = {
    "service.name": "peer-test",
    "host.name": "node-a",
    # One of each AnyValue kind the agent may emit, to check decoding.
    "test.int": 7,
    "test.double": 0.5,
    "test.bool": True,
}
GAUGE = "peer.test.cache_bytes"
COUNTER = "peer.test.requests"
HEADERS_ENV = "x-peer-token=s3cret,x-tenant=acme"
EXPECTED_HEADERS = {"x-peer-token": "s3cret", "x-tenant": "acme"}


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may export OTEL_* settings that would redirect or alter
    # the exporters under test.
    import os

    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)


def _export_metrics(exporter: MetricExporter) -> None:
    """Record a gauge and a counter through the SDK and push them once."""
    # A huge interval: only force_flush()/shutdown() export, so the test decides when.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create(RESOURCE))
    meter = provider.get_meter("peer.test.scope", "1.2.3")

    def observe(_options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(4096, {"container": "c1"})
        yield Observation(1.25, {"container": "c2"})

    meter.create_observable_gauge(GAUGE, callbacks=[observe], unit="By")
    counter = meter.create_counter(COUNTER, unit="{request}")
    counter.add(3, {"route": "/a", "ok": True})
    counter.add(2, {"route": "/a", "ok": True})
    try:
        assert provider.force_flush(timeout_millis=10_000)
    finally:
        provider.shutdown()


def _has_metrics(*names: str) -> Callable[[list[object]], bool]:
    return lambda reqs: set(names) <= metric_names(reqs)  # type: ignore[arg-type]


def _check_points(points: list[Point]) -> None:
    gauges = {p.attributes["container"]: p for p in points if p.metric == GAUGE}
    assert gauges["c1"].value == 4096 and isinstance(gauges["c1"].value, int)
    assert gauges["c2"].value == pytest.approx(1.25)
    assert gauges["c1"].kind == "gauge" and gauges["c1"].unit == "By"
    assert gauges["c1"].scope == "peer.test.scope" and gauges["c1"].scope_version == "1.2.3"

    sums = [p for p in points if p.metric == COUNTER]
    assert sums, points
    last = sums[-1]
    assert last.kind == "sum" and last.is_monotonic is True
    assert last.temporality == "cumulative"
    assert last.value == 5
    assert last.attributes == {"route": "/a", "ok": True}
    assert last.time_unix_nano > 0

    res = last.resource
    assert {k: res[k] for k in RESOURCE} == RESOURCE
    assert isinstance(res["test.bool"], bool) and isinstance(res["test.int"], int)


def test_metrics_over_grpc_with_headers(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", HEADERS_ENV)
    _export_metrics(GrpcMetricExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True))

    reqs = otlp_receiver.wait_for_metrics(_has_metrics(GAUGE, COUNTER), timeout=10)
    _check_points(list(iter_points(reqs)))
    rec = otlp_receiver.received("metrics")[0]
    assert rec.transport == "grpc"
    assert EXPECTED_HEADERS.items() <= rec.headers.items()


def test_metrics_over_http_gzip_with_headers(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Base endpoint via the env var: the exporter must append /v1/metrics itself.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", HEADERS_ENV)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    _export_metrics(HttpMetricExporter())

    reqs = otlp_receiver.wait_for_metrics(_has_metrics(GAUGE, COUNTER), timeout=10)
    _check_points(list(iter_points(reqs)))
    rec = otlp_receiver.received("metrics")[0]
    assert rec.transport == "http"
    assert rec.headers["content-encoding"] == "gzip"
    assert EXPECTED_HEADERS.items() <= rec.headers.items()
    assert otlp_receiver.headers()[0] == rec.headers


def test_http_endpoint_protocol_details(otlp_receiver: OtlpReceiver) -> None:
    """Unknown paths 404; a raw gzip protobuf POST gets a protobuf response."""
    base = otlp_receiver.http_endpoint
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(f"{base}/v1/nope", data=b"x"), timeout=5)
    assert err.value.code == 404

    body = gzip.compress(metrics_service_pb2.ExportMetricsServiceRequest().SerializeToString())
    req = urllib.request.Request(
        f"{base}/v1/metrics",
        data=body,
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-protobuf"
        metrics_service_pb2.ExportMetricsServiceResponse.FromString(resp.read())
    assert len(otlp_receiver.metrics_requests()) == 1

    otlp_receiver.clear()
    assert otlp_receiver.metrics_requests() == [] and otlp_receiver.headers() == []
    with pytest.raises(AssertionError, match="nothing received"):
        otlp_receiver.wait_for_metrics(bool, timeout=0.3)


def _export_spans(exporter: SpanExporter) -> None:
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    # Simple (synchronous) processor: the span is exported when it ends.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("peer.test.tracer")
    with (
        tracer.start_as_current_span("parent"),
        tracer.start_as_current_span("child", attributes={"n": 1}),
    ):
        pass
    provider.shutdown()


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_spans(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", HEADERS_ENV)
    if transport == "grpc":
        exporter: SpanExporter = GrpcSpanExporter(
            endpoint=otlp_receiver.grpc_endpoint, insecure=True
        )
    else:
        exporter = HttpSpanExporter(endpoint=f"{otlp_receiver.http_endpoint}/v1/traces")
    _export_spans(exporter)

    reqs = otlp_receiver.wait_for_traces(
        lambda r: {"parent", "child"} <= {s.name for s in iter_spans(r)}, timeout=10
    )
    spans = {s.name: s for s in iter_spans(reqs)}
    assert spans["child"].parent_span_id == spans["parent"].span_id
    assert spans["child"].trace_id == spans["parent"].trace_id
    assert spans["child"].attributes == {"n": 1}
    assert spans["child"].resource["service.name"] == "peer-test"
    assert all(r.transport == transport for r in otlp_receiver.received())
    assert all(EXPECTED_HEADERS.items() <= h.items() for h in otlp_receiver.headers())


def test_through_rotel_agent(
    otlp_receiver: OtlpReceiver, rotel_agent_factory: Callable[..., RotelAgent]
) -> None:
    """SDK -> rotel (gRPC and HTTP receivers) -> rotel OTLP/gRPC exporter -> receiver."""
    agent = rotel_agent_factory(exporter_headers={"x-via": "rotel"})
    assert agent.is_running()

    _export_metrics(GrpcMetricExporter(endpoint=agent.grpc_endpoint, insecure=True))
    reqs = otlp_receiver.wait_for_metrics(_has_metrics(GAUGE, COUNTER), timeout=15)
    _check_points(list(iter_points(reqs)))

    _export_spans(HttpSpanExporter(endpoint=f"{agent.http_endpoint}/v1/traces"))
    otlp_receiver.wait_for_traces(
        lambda r: {"parent", "child"} <= {s.name for s in iter_spans(r)}, timeout=15
    )

    # Everything arrived over gRPC from rotel, carrying its configured header.
    assert {r.transport for r in otlp_receiver.received()} == {"grpc"}
    assert all(h.get("x-via") == "rotel" for h in otlp_receiver.headers())


def test_rotel_fixture_forwards_to_receiver(
    otlp_receiver: OtlpReceiver, rotel_agent: RotelAgent
) -> None:
    assert rotel_agent.exporter_endpoint == otlp_receiver.grpc_endpoint
    assert rotel_agent.grpc_endpoint.startswith("http://127.0.0.1:")
    assert rotel_agent.http_endpoint.startswith("http://127.0.0.1:")
    assert rotel_agent.pid is not None and rotel_agent.is_running()


def test_prometheus_scrapes_otel_prometheus_reader(
    prometheus_server: Callable[..., PrometheusServer],
) -> None:
    # A private registry so nothing leaks into prometheus_client's global one.
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create(RESOURCE))
    counter = provider.get_meter("peer.test.scope").create_counter("peer.test.scrapes")
    counter.add(7, {"container": "c1"})
    # Port 0: the kernel picks a free port at bind time, no race.
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        target = f"127.0.0.1:{httpd.server_address[1]}"
        prom = prometheus_server(target)
        assert prom.pid is not None

        up = prom.wait_for_series('up{job="peer"} == 1', timeout=15)
        assert up[0]["metric"]["instance"] == target

        series = prom.wait_for_series('peer_test_scrapes_total{container="c1"}', timeout=15)
        assert len(series) == 1
        assert series[0]["metric"]["job"] == "peer"
        assert float(series[0]["value"][1]) == 7.0
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        provider.shutdown()


def test_rotel_start_failure_reports_log_tail(tmp_path: Path) -> None:
    # An unknown flag makes rotel exit at once: the error must carry its own words.
    agent = RotelAgent("http://127.0.0.1:9", extra_args=["--no-such-flag"], workdir=tmp_path)
    with pytest.raises(RotelError, match="no-such-flag"):
        agent.start()
    assert not agent.is_running()


def test_prometheus_missing_binary_names_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(prometheus_peer, "_DEFAULT_BINARY", str(tmp_path / "absent"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_BIN", raising=False)
    with pytest.raises(PrometheusNotInstalled, match="Debian package 'prometheus'"):
        prometheus_peer.prometheus_binary()
