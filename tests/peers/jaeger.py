"""Run Jaeger v2 (built by scripts/build-peers) with in-memory storage, queried through API v3.

Jaeger v2 is an OpenTelemetry Collector distribution; its all-in-one defaults bind
4317, 4318, 13133, 8888, 5778, 5779, 9411, 14250, 14268 and 16686, which clash with
the collector in front of it (and with other test runs). This config has only what
the tests use: an OTLP/gRPC receiver, in-memory storage, the query service (HTTP API
v3 + its gRPC port) and a health check, each on its own free loopback port; its
own telemetry is off.

API v3 (``/api/v3/traces``) answers OTLP JSON, which keeps span links' attributes
(the older ``/api/traces`` drops them); :func:`spans_from_api_v3` parses it with the
OTLP protobuf definitions into the same :class:`SpanRecord` the OTLP receiver gives.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from tests.peers import GoPeer, free_port
from tests.peers.otlp_receiver import SpanRecord, iter_spans

__all__ = ["Jaeger", "spans_from_api_v3"]

_HEX_ID = re.compile(r"^[0-9a-fA-F]{16}$|^[0-9a-fA-F]{32}$")
_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _ids_to_base64(node: Any) -> Any:
    """OTLP JSON carries ids as hex; protobuf's JSON mapping wants base64 for bytes."""
    if isinstance(node, dict):
        return {
            k: (
                base64.b64encode(bytes.fromhex(v)).decode()
                if k in _ID_KEYS and isinstance(v, str) and _HEX_ID.match(v)
                else _ids_to_base64(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_ids_to_base64(v) for v in node]
    return node


def spans_from_api_v3(document: dict[str, Any]) -> list[SpanRecord]:
    """Flatten an API v3 answer (``{"result": {"resourceSpans": [...]}}``) into spans."""
    result = document.get("result", document)
    traces = json_format.ParseDict(_ids_to_base64(result), TracesData(), ignore_unknown_fields=True)
    return list(iter_spans([traces]))


def _rfc3339(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, timezone.utc).isoformat().replace("+00:00", "Z")


class Jaeger(GoPeer):
    """A ``jaeger`` subprocess; ``otlp_endpoint`` takes traces, ``api`` answers queries."""

    name = "jaeger"

    def __init__(self, binary: Path, workdir: Path, startup_timeout: float = 60.0) -> None:
        super().__init__(binary, workdir, startup_timeout)
        self.otlp_port = self.query_port = 0

    @property
    def otlp_endpoint(self) -> str:
        """host:port of the OTLP/gRPC receiver (plaintext)."""
        return f"127.0.0.1:{self.otlp_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def _prepare(self) -> tuple[list[str], str]:
        self.otlp_port, self.query_port = free_port(), free_port()
        config = {
            "service": {
                "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["batch"],
                        "exporters": ["jaeger_storage_exporter"],
                    }
                },
                # Its own metrics would bind :8888 by default.
                "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
            },
            "extensions": {
                "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 10000}}}},
                "jaeger_query": {
                    "storage": {"traces": "memstore"},
                    "http": {"endpoint": f"127.0.0.1:{self.query_port}"},
                    "grpc": {"endpoint": f"127.0.0.1:{free_port()}"},
                },
                "healthcheckv2": {
                    "use_v2": True,
                    "http": {"endpoint": f"127.0.0.1:{free_port()}"},
                },
            },
            "receivers": {
                "otlp": {"protocols": {"grpc": {"endpoint": self.otlp_endpoint}}},
            },
            "processors": {"batch": {"timeout": "200ms"}},
            "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
        }
        path = self.workdir / "jaeger.yaml"
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        return [str(self.binary), "--config", f"file:{path}"], f"{self.api}/api/v3/services"

    # -- API v3

    def _get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        url = f"{self.api}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # "trace not found": no match yet
                return {}
            raise AssertionError(f"GET {url} -> {exc.code}: {exc.read()[:500]!r}") from exc

    def services(self) -> list[str]:
        return list(self._get("/api/v3/services").get("services", []))

    def find_traces(self, service: str, since: float, **query: str) -> dict[str, Any]:
        """The raw OTLP JSON answer of ``GET /api/v3/traces`` for ``service`` since
        ``since`` (Unix seconds) until now; ``query`` adds ``query.<key>`` params."""
        params = {
            "query.service_name": service,
            "query.start_time_min": _rfc3339(since - 1),
            "query.start_time_max": _rfc3339(time.time() + 60),
            "query.num_traces": "1000",
            **{f"query.{k}": v for k, v in query.items()},
        }
        return self._get("/api/v3/traces", params)

    def trace(self, trace_id: str) -> dict[str, Any]:
        """The raw OTLP JSON answer of ``GET /api/v3/traces/<trace id>``."""
        return self._get(f"/api/v3/traces/{trace_id}")

    def wait_for_spans(
        self,
        service: str,
        since: float,
        predicate: Callable[[list[SpanRecord]], bool],
        timeout: float = 60.0,
    ) -> list[SpanRecord]:
        """Poll :meth:`find_traces` until ``predicate(spans)`` holds; returns the spans."""
        deadline = time.monotonic() + timeout
        spans: list[SpanRecord] = []
        while time.monotonic() < deadline:
            spans = spans_from_api_v3(self.find_traces(service, since))
            if predicate(spans):
                return spans
            time.sleep(0.5)
        raise AssertionError(
            f"Jaeger: no matching spans of service {service!r} in {timeout:.0f}s; "
            f"services={self.services()}, {len(spans)} spans: "
            f"{sorted({s.name for s in spans})}\n--- jaeger log ---\n{self.log_tail(20)}"
        )
