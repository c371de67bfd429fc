"""Exporter settings from the standard variables, and real sends to real receivers."""

from __future__ import annotations

import copy
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

from otel_pagecache.otlp_bulk import MAX_REQUEST_BYTES, BulkEncoder, requests
from otel_pagecache.otlp_transport import (
    MAX_RECONNECT_BACKOFF_S,
    ExportError,
    OtlpMetricSender,
    OtlpSettings,
)
from tests.collection_snapshot import fixed_snapshot
from tests.peers import Blackhole, ClosingListener
from tests.peers.otlp_receiver import OtlpReceiver, iter_points


def test_signal_specific_variables_win_and_http_appends_the_path():
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=x%20y",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "Api-Key=s%3Dcret",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "Delta",
    }
    http = OtlpSettings.from_env(env, protocol="http/protobuf")
    assert http.endpoint == "http://collector:4318/v1/metrics"
    assert http.headers == (("api-key", "s=cret"),)
    assert http.compression == "gzip" and http.timeout_s == 2.5
    assert http.temporality == "delta" and http.delta_counters and not http.warnings
    grpc_settings = OtlpSettings.from_env(env, protocol="grpc")
    assert grpc_settings.endpoint == "http://collector:4318/"
    specific = OtlpSettings.from_env(
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://c:1/custom"}, protocol="http/protobuf"
    )
    assert specific.endpoint == "https://c:1/custom"
    assert OtlpSettings.from_env({}, protocol="http/protobuf").endpoint == (
        "http://localhost:4318/v1/metrics"
    )
    assert OtlpSettings.from_env({}).endpoint == "http://localhost:4317"


def test_invalid_values_warn_and_fall_back_as_the_specification_asks():
    s = OtlpSettings.from_env(
        {
            "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "soon",
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "sometimes",
            "OTEL_EXPORTER_OTLP_INSECURE": "yes",  # only "true" is true for OTEL_*
        }
    )
    assert (s.compression, s.timeout_s, s.temporality, s.insecure) == (
        "none",
        10.0,
        "cumulative",
        False,
    )
    assert len(s.warnings) == 3 and all("OTEL_EXPORTER_OTLP_" in w for w in s.warnings)
    lowmemory = OtlpSettings.from_env({"OTEL_EXPORTER_OTLP_TEMPORALITY_PREFERENCE": "lowmemory"})
    assert not lowmemory.delta_counters  # lowmemory keeps asynchronous counters cumulative


def _bodies(n_memcgs: int = 4) -> list[bytes]:
    snapshot = fixed_snapshot(1)
    template = snapshot.memcgs[3]
    memcgs = []
    for i in range(n_memcgs):
        sample = copy.copy(template)
        sample.id, sample.path, sample.attrs = 10_000 + i, f"{template.path}/{i}", None
        memcgs.append(sample)
    snapshot.memcgs = memcgs
    encoder = BulkEncoder({"service.name": "t"}, "otel_pagecache", "t")
    return list(requests(encoder.encode(snapshot, time.time_ns())))


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("grpc", "gzip"), ("grpc", "none"), ("http/protobuf", "gzip"), ("http/protobuf", "none")],
)
def test_sends_to_a_real_receiver_with_headers_and_compression(protocol, compression):
    with OtlpReceiver() as receiver:
        base = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": base,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-pagecache-test=t%201",
            "OTEL_EXPORTER_OTLP_COMPRESSION": compression,
        }
        sender = OtlpMetricSender(OtlpSettings.from_env(env, protocol=protocol))
        try:
            for body in _bodies():
                assert sender.send(body, time.monotonic() + 20) == 0
        finally:
            sender.close()
        points = list(iter_points(receiver.metrics_requests()))
        ids = {p.resource.get("pagecache.cgroup.id") for p in points}
        assert ids == {*range(10_000, 10_004), None}  # None: the dying/unattributed buckets
        assert any(h.get("x-pagecache-test") == "t 1" for h in receiver.headers())


class _Recorder(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []

    def Export(self, request, context):  # noqa: N802 - the generated service's name
        self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def test_10000_memcgs_fit_a_receiver_with_the_default_4_mib_limit():
    """A gRPC server with default options refuses messages over 4 MiB, as the
    Collector's OTLP receiver does by default."""
    bodies = _bodies(10_000)
    assert len(bodies) > 1 and all(len(b) <= MAX_REQUEST_BYTES for b in bodies)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    recorder = _Recorder()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sender = OtlpMetricSender(
        OtlpSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    )
    try:
        for body in bodies:
            sender.send(body, time.monotonic() + 30)
    finally:
        sender.close()
        server.stop(0)
    ids = [
        kv.value.int_value
        for r in recorder.requests
        for rm in r.resource_metrics
        for kv in rm.resource.attributes
        if kv.key == "pagecache.cgroup.id"
    ]
    assert sorted(ids) == list(range(10_000, 20_000))  # every memcg once


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_blackhole_costs_at_most_the_deadline(protocol):
    hole = Blackhole()
    try:
        sender = OtlpMetricSender(
            OtlpSettings.from_env(
                {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hole.port}"},
                protocol=protocol,
            )
        )
        started = time.monotonic()
        with pytest.raises(ExportError):
            sender.send(_bodies()[0], started + 1.5)
        assert time.monotonic() - started < 1.5 + 1.0
        sender.close()
    finally:
        hole.close()


def test_a_returning_collector_is_reconnected_to_within_the_backoff_cap():
    """gRPC's own reconnect backoff grows 1.6x per failed connect up to 2 min:
    uncapped, the gaps between connects in this 24 s window reach 7.6 s or
    more (1, 1.6, 2.6, 4.1, 6.6, 10.5 s, each +-20 %), and a collector back
    after a minute's outage waited up to the next one (CI's failure of
    test_faults). Capped, no gap exceeds the cap plus its 20 % jitter."""
    window_s = 24.0
    with ClosingListener() as collector_not_there:
        sender = OtlpMetricSender(
            OtlpSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": collector_not_there.endpoint})
        )
        try:
            started = time.monotonic()
            # A send every 0.2 s, as a busy export loop retries: each fails at
            # once while the channel waits out its backoff.
            while time.monotonic() - started < window_s:
                with pytest.raises(ExportError):
                    sender.send(b"", time.monotonic() + 0.5)
                time.sleep(0.2)
            ended = time.monotonic()
        finally:
            sender.close()
        connects = collector_not_there.connected_at()
    gaps = [b - a for a, b in zip([started, *connects], [*connects, ended], strict=True)]
    assert len(connects) >= 5, gaps
    assert max(gaps) <= MAX_RECONNECT_BACKOFF_S * 1.2 + 1.5, [f"{g:.1f}" for g in gaps]
