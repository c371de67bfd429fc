"""An in-process OTLP receiver (gRPC + HTTP/protobuf) that records what it is sent.

Built from the official ``opentelemetry-proto`` service definitions, so anything the
real SDK exporters (or a collector such as rotel) send is decoded exactly as a
production collector would decode it. Tests assert on the stored requests, flattened
with :func:`iter_points` / :func:`iter_spans`.

Standalone use (prints one line per request)::

    python -m tests.peers.otlp_receiver --grpc-port 4317 --http-port 4318
"""

from __future__ import annotations

import argparse
import gzip
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.pace import scaled
from tests.peers import Managed

ExportMetricsServiceRequest = metrics_service_pb2.ExportMetricsServiceRequest
ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
ExportLogsServiceRequest = logs_service_pb2.ExportLogsServiceRequest

__all__ = [
    "ExportLogsServiceRequest",
    "ExportMetricsServiceRequest",
    "ExportTraceServiceRequest",
    "OtlpReceiver",
    "Point",
    "Received",
    "SpanRecord",
    "anyvalue_to_python",
    "attributes_to_dict",
    "iter_points",
    "iter_spans",
    "metric_names",
    "summarize_request",
]

# signal name -> (request type, response type) for the HTTP transport.
_HTTP_ROUTES: dict[str, tuple[str, type[Message], type[Message]]] = {
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


@dataclass(frozen=True)
class Received:
    """One export request as it arrived."""

    transport: str  # "grpc" or "http"
    signal: str  # "metrics", "traces" or "logs"
    headers: dict[str, str]
    request: Message
    received_at: float = field(default_factory=time.time)


# --------------------------------------------------------------------------- helpers


def anyvalue_to_python(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` to the matching Python value.

    Uses the ``oneof`` discriminator rather than truthiness so that ``0``, ``0.0``,
    ``False`` and ``""`` survive as real values.
    """
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return int(value.int_value)
    if kind == "double_value":
        return float(value.double_value)
    if kind == "bytes_value":
        return bytes(value.bytes_value)
    if kind == "array_value":
        return [anyvalue_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    raise ValueError(f"unsupported AnyValue kind {kind!r}")


def attributes_to_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """``repeated KeyValue`` -> plain dict."""
    return {kv.key: anyvalue_to_python(kv.value) for kv in attributes}


@dataclass(frozen=True)
class Point:
    """One metric data point, flattened with its metric/scope/resource context."""

    resource: dict[str, Any]
    scope: str
    scope_version: str
    metric: str
    unit: str
    description: str
    kind: str  # gauge | sum | histogram | exponential_histogram | summary
    is_monotonic: bool | None  # only meaningful for "sum"
    temporality: str | None  # "cumulative" / "delta" for sum & histograms
    attributes: dict[str, Any]
    value: int | float  # number value; histogram/summary: the sum
    time_unix_nano: int
    start_time_unix_nano: int
    count: int | None = None  # histogram/summary count
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()


_TEMPORALITY = {0: None, 1: "delta", 2: "cumulative"}


def _number_value(dp: Any) -> int | float:
    # NumberDataPoint.value is a oneof: keep ints as ints so equality checks against
    # counters are exact.
    if dp.WhichOneof("value") == "as_int":
        return int(dp.as_int)
    return float(dp.as_double)


def iter_points(
    requests: Iterable[ExportMetricsServiceRequest],
) -> Iterator[Point]:
    """Flatten metrics requests into one :class:`Point` per data point."""
    for req in requests:
        for rm in req.resource_metrics:
            resource = attributes_to_dict(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    common = {
                        "resource": resource,
                        "scope": sm.scope.name,
                        "scope_version": sm.scope.version,
                        "metric": m.name,
                        "unit": m.unit,
                        "description": m.description,
                        "kind": kind or "",
                    }
                    if kind in ("gauge", "sum"):
                        data = getattr(m, kind)
                        for dp in data.data_points:
                            yield Point(
                                **common,
                                is_monotonic=data.is_monotonic if kind == "sum" else None,
                                temporality=(
                                    _TEMPORALITY.get(data.aggregation_temporality)
                                    if kind == "sum"
                                    else None
                                ),
                                attributes=attributes_to_dict(dp.attributes),
                                value=_number_value(dp),
                                time_unix_nano=dp.time_unix_nano,
                                start_time_unix_nano=dp.start_time_unix_nano,
                            )
                    elif kind in ("histogram", "exponential_histogram"):
                        data = getattr(m, kind)
                        for dp in data.data_points:
                            yield Point(
                                **common,
                                is_monotonic=None,
                                temporality=_TEMPORALITY.get(data.aggregation_temporality),
                                attributes=attributes_to_dict(dp.attributes),
                                value=float(dp.sum),
                                time_unix_nano=dp.time_unix_nano,
                                start_time_unix_nano=dp.start_time_unix_nano,
                                count=int(dp.count),
                                bucket_counts=(
                                    tuple(dp.bucket_counts) if kind == "histogram" else ()
                                ),
                                explicit_bounds=(
                                    tuple(dp.explicit_bounds) if kind == "histogram" else ()
                                ),
                            )
                    elif kind == "summary":
                        for dp in m.summary.data_points:
                            yield Point(
                                **common,
                                is_monotonic=None,
                                temporality=None,
                                attributes=attributes_to_dict(dp.attributes),
                                value=float(dp.sum),
                                time_unix_nano=dp.time_unix_nano,
                                start_time_unix_nano=dp.start_time_unix_nano,
                                count=int(dp.count),
                            )


def metric_names(requests: Iterable[ExportMetricsServiceRequest]) -> set[str]:
    """All metric names present in ``requests`` (including metrics with no points)."""
    return {
        m.name
        for req in requests
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


@dataclass(frozen=True)
class SpanLink:
    trace_id: str  # hex
    span_id: str  # hex
    attributes: dict[str, Any]


@dataclass(frozen=True)
class SpanRecord:
    """One span, flattened with its scope/resource context."""

    resource: dict[str, Any]
    scope: str
    name: str
    kind: int
    trace_id: str  # hex
    span_id: str  # hex
    parent_span_id: str  # hex, "" for root spans
    attributes: dict[str, Any]
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    links: tuple[SpanLink, ...] = ()


def iter_spans(requests: Iterable[ExportTraceServiceRequest]) -> Iterator[SpanRecord]:
    """Flatten trace requests into one :class:`SpanRecord` per span."""
    for req in requests:
        for rs in req.resource_spans:
            resource = attributes_to_dict(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    yield SpanRecord(
                        resource=resource,
                        scope=ss.scope.name,
                        name=s.name,
                        kind=int(s.kind),
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        attributes=attributes_to_dict(s.attributes),
                        start_time_unix_nano=s.start_time_unix_nano,
                        end_time_unix_nano=s.end_time_unix_nano,
                        status_code=int(s.status.code),
                        links=tuple(
                            SpanLink(
                                link.trace_id.hex(),
                                link.span_id.hex(),
                                attributes_to_dict(link.attributes),
                            )
                            for link in s.links
                        ),
                    )


def summarize_request(rec: Received) -> str:
    """One human-readable line describing a received request."""
    req = rec.request
    if isinstance(req, ExportMetricsServiceRequest):
        names = sorted(metric_names([req]))
        npoints = sum(1 for _ in iter_points([req]))
        detail = f"{len(names)} metrics, {npoints} points: {', '.join(names)}"
    elif isinstance(req, ExportTraceServiceRequest):
        spans = [s.name for s in iter_spans([req])]
        detail = f"{len(spans)} spans: {', '.join(spans)}"
    else:
        nlogs = sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
        detail = f"{nlogs} log records"
    return f"[{rec.transport}] {rec.signal}: {detail}"


# --------------------------------------------------------------------------- gRPC


def _grpc_headers(context: grpc.ServicerContext) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        # Binary ("-bin") metadata arrives as bytes; keep it printable.
        headers[key.lower()] = value if isinstance(value, str) else value.decode("latin-1")
    return headers


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802 - name fixed by the generated service
        self, request: Message, context: grpc.ServicerContext
    ) -> Message:
        self._receiver._record("grpc", "metrics", _grpc_headers(context), request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802
        self, request: Message, context: grpc.ServicerContext
    ) -> Message:
        self._receiver._record("grpc", "traces", _grpc_headers(context), request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802
        self, request: Message, context: grpc.ServicerContext
    ) -> Message:
        self._receiver._record("grpc", "logs", _grpc_headers(context), request)
        return logs_service_pb2.ExportLogsServiceResponse()


# --------------------------------------------------------------------------- HTTP


class _HttpHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 so exporters that keep connections alive (requests.Session, hyper)
    # reuse them; every response therefore carries Content-Length.
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The default writes every request to stderr, which drowns pytest output.
        pass

    def _reply(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # Drain optional trailers up to the terminating blank line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0]
        body = self._read_body()  # always drain, or keep-alive desynchronises
        route = _HTTP_ROUTES.get(path)
        if route is None:
            self._reply(404, b"not found")
            return
        signal_name, request_type, response_type = route

        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-protobuf":
            # OTLP/JSON is not needed by the suite; say so explicitly rather than
            # mis-decoding it.
            self._reply(415, b"only application/x-protobuf is supported")
            return

        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                self._reply(415, f"unsupported Content-Encoding {encoding}".encode())
                return
            request = request_type.FromString(body)
        except (OSError, EOFError, zlib.error, DecodeError) as exc:
            self._reply(400, f"cannot decode body: {exc}".encode())
            return

        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.receiver._record("http", signal_name, headers, request)
        self._reply(200, response_type().SerializeToString(), "application/x-protobuf")

    def do_GET(self) -> None:  # noqa: N802
        self._reply(404, b"not found")


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver


# --------------------------------------------------------------------------- receiver


class OtlpReceiver(Managed):
    """OTLP gRPC + HTTP receiver storing every export request (thread-safe).

    Ports default to 0 (ephemeral, chosen by the kernel at bind time, so there is
    no pick-then-bind race). After ``stop()``, ``start()`` binds the same ports
    again: a collector that went down and came back on the same address.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        on_request: Callable[[Received], None] | None = None,
    ) -> None:
        self.host = host
        self._grpc_port_req = grpc_port
        self._http_port_req = http_port
        self._on_request = on_request
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._received: list[Received] = []
        self._grpc_server: grpc.Server | None = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0

    # -- lifecycle

    def start(self) -> OtlpReceiver:
        if self._grpc_server is not None:
            return self
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            # Default is 4 MiB; a node with many cgroups can legitimately send more,
            # and a size rejection here would look like an exporter bug.
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsServicer(self), server
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        wanted = self.grpc_port or self._grpc_port_req
        port = server.add_insecure_port(f"{self.host}:{wanted}")
        if port == 0:
            raise RuntimeError(f"cannot bind gRPC on {self.host}:{wanted}")
        server.start()
        self._grpc_server = server
        self.grpc_port = port

        try:
            http = _HttpServer((self.host, self.http_port or self._http_port_req), _HttpHandler)
        except OSError:
            self.stop()
            raise
        http.receiver = self
        self._http_server = http
        self.http_port = int(http.server_address[1])
        self._http_thread = threading.Thread(
            target=http.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"otlp-http-{self.http_port}",
            daemon=True,
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=0.5).wait(timeout=5)
            self._grpc_server = None

    # -- endpoints

    @property
    def grpc_endpoint(self) -> str:
        """``http://host:port`` – pass to the gRPC exporter with ``insecure=True``."""
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL; exporters append ``/v1/metrics`` / ``/v1/traces`` themselves."""
        return f"http://{self.host}:{self.http_port}"

    # -- recording / access

    def _record(self, transport: str, signal_name: str, headers: dict[str, str], req: Message):
        rec = Received(transport, signal_name, headers, req)
        with self._cond:
            self._received.append(rec)
            self._cond.notify_all()
        if self._on_request is not None:
            self._on_request(rec)

    def received(self, signal_name: str | None = None) -> list[Received]:
        """Every request (optionally of one signal) in arrival order, with transport."""
        with self._lock:
            return [r for r in self._received if signal_name in (None, r.signal)]

    def metrics_requests(self) -> list[ExportMetricsServiceRequest]:
        return [r.request for r in self.received("metrics")]  # type: ignore[misc]

    def trace_requests(self) -> list[ExportTraceServiceRequest]:
        return [r.request for r in self.received("traces")]  # type: ignore[misc]

    def logs_requests(self) -> list[ExportLogsServiceRequest]:
        return [r.request for r in self.received("logs")]  # type: ignore[misc]

    def headers(self) -> list[dict[str, str]]:
        """Per request (all signals, both transports): headers with lower-case keys."""
        return [dict(r.headers) for r in self.received()]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    def summary(self) -> str:
        recs = self.received()
        if not recs:
            return "nothing received"
        # Runs of identical lines as one: a long wait's periodic exports
        # would otherwise bury everything else in a failure message.
        lines: list[list] = []
        for line in (summarize_request(r) for r in recs):
            if lines and lines[-1][0] == line:
                lines[-1][1] += 1
            else:
                lines.append([line, 1])
        return "\n".join(line if n == 1 else f"{line} (x{n})" for line, n in lines)

    # -- waiting

    def _wait(self, signal_name: str, predicate: Callable[[list[Any]], Any], timeout: float):
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            reqs = [r.request for r in self.received(signal_name)]
            if predicate(reqs):
                return reqs
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout:.1f}s waiting for {signal_name} on "
                    f"grpc={self.grpc_endpoint} http={self.http_endpoint}; "
                    f"received so far:\n{self.summary()}"
                )
            # Woken early by _record; the cap guards against predicates that depend
            # on something other than new requests.
            with self._cond:
                self._cond.wait(timeout=min(remaining, 0.2))

    def wait_for_metrics(
        self,
        predicate: Callable[[list[ExportMetricsServiceRequest]], Any],
        timeout: float = 20.0,
    ) -> list[ExportMetricsServiceRequest]:
        """Poll until ``predicate(metrics_requests())`` is truthy; AssertionError otherwise."""
        return self._wait("metrics", predicate, timeout)

    def wait_for_traces(
        self,
        predicate: Callable[[list[ExportTraceServiceRequest]], Any],
        timeout: float = 20.0,
    ) -> list[ExportTraceServiceRequest]:
        """Poll until ``predicate(trace_requests())`` is truthy; AssertionError otherwise."""
        return self._wait("traces", predicate, timeout)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a line per received OTLP request.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0, help="0 = ephemeral")
    parser.add_argument("--http-port", type=int, default=0, help="0 = ephemeral")
    args = parser.parse_args(argv)

    def show(rec: Received) -> None:
        print(summarize_request(rec), flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with OtlpReceiver(args.host, args.grpc_port, args.http_port, on_request=show) as rx:
        print(f"OTLP gRPC on {rx.grpc_endpoint}, HTTP on {rx.http_endpoint}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
