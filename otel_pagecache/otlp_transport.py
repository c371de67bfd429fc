"""Sending serialized OTLP metric requests, configured as the specification says.

The bulk is encoded by ``otlp_bulk`` and the agent's own metrics by the SDK's
public encoder, so what goes on the wire is bytes, and the SDK's exporters
(which take SDK objects) cannot send it. This module reads the standard
exporter variables itself, per
https://opentelemetry.io/docs/specs/otel/protocol/exporter/ :

- ``OTEL_EXPORTER_OTLP_METRICS_<X>`` wins over ``OTEL_EXPORTER_OTLP_<X>``;
- ENDPOINT: gRPC takes it as is; HTTP appends ``v1/metrics`` to the generic
  one and takes the signal-specific one as is; defaults localhost:4317/4318;
- HEADERS: ``k=v,k2=v2``, values URL-decoded; COMPRESSION ``gzip`` or
  ``none``; TIMEOUT in **milliseconds** (default 10000), per export;
- INSECURE (gRPC): true means plain text; an ``http://`` endpoint is plain
  text, ``https://`` is TLS, whatever INSECURE says; CERTIFICATE,
  CLIENT_KEY, CLIENT_CERTIFICATE for TLS;
- TEMPORALITY_PREFERENCE: ``cumulative`` (default), ``delta``, ``lowmemory``.

Invalid values warn once and fall back to the default, as the specification
asks of ``OTEL_*`` variables. Retries (gRPC UNAVAILABLE and the other
retryable codes; HTTP 429, 502, 503, 504) back off exponentially from 1 s
but never past the export's deadline: an export never blocks longer than
its timeout, so a dead collector cannot stall the loop or the final flush.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
# gRPC's reconnect backoff grows to 2 min by default (1 s x 1.6 per failed
# connect): after a one-minute collector outage the channel's next connect
# came 45 s after the collector was back (measured, 75 s outage). Capped, a
# returning collector is reconnected to within this (+20 % jitter); a
# connect to a dead address every few seconds costs nothing.
MAX_RECONNECT_BACKOFF_S = 4.0
_RETRY_HTTP = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class OtlpSettings:
    protocol: str = "grpc"
    endpoint: str = "http://localhost:4317"
    headers: tuple[tuple[str, str], ...] = ()
    compression: str = "none"
    timeout_s: float = DEFAULT_TIMEOUT_S
    insecure: bool = False
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None
    temporality: str = "cumulative"
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, protocol: str = "grpc") -> OtlpSettings:
        env = os.environ if env is None else env
        warnings: list[str] = []

        def get(name: str) -> str | None:
            for key in (f"OTEL_EXPORTER_OTLP_METRICS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
                value = env.get(key)
                if value is not None and value.strip():
                    return value.strip()
            return None

        def choice(name: str, accepted: tuple[str, ...], default: str) -> str:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() in accepted:
                return raw.lower()
            warnings.append(
                f"OTEL_EXPORTER_OTLP_{name}={raw!r} is not one of {', '.join(accepted)}; "
                f"using {default}"
            )
            return default

        http = protocol != "grpc"
        specific = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip()
        generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if specific:
            endpoint = specific
        elif generic:
            endpoint = generic.rstrip("/") + "/v1/metrics" if http else generic
        else:
            endpoint = "http://localhost:4318/v1/metrics" if http else "http://localhost:4317"
        timeout_s = DEFAULT_TIMEOUT_S
        raw_timeout = get("TIMEOUT")
        if raw_timeout is not None:
            try:
                timeout_s = float(raw_timeout) / 1000
                if timeout_s <= 0:
                    raise ValueError
            except ValueError:
                warnings.append(
                    f"OTEL_EXPORTER_OTLP_TIMEOUT={raw_timeout!r} is not a positive number of "
                    f"milliseconds; using {DEFAULT_TIMEOUT_S * 1000:.0f}"
                )
                timeout_s = DEFAULT_TIMEOUT_S
        return cls(
            protocol=protocol,
            endpoint=endpoint,
            headers=_headers(get("HEADERS"), warnings),
            compression=choice("COMPRESSION", ("gzip", "none"), "none"),
            timeout_s=timeout_s,
            # Only a case-insensitive "true" is true for OTEL_* booleans.
            insecure=(get("INSECURE") or "").lower() == "true",
            certificate=get("CERTIFICATE"),
            client_key=get("CLIENT_KEY"),
            client_certificate=get("CLIENT_CERTIFICATE"),
            temporality=choice(
                "TEMPORALITY_PREFERENCE", ("cumulative", "delta", "lowmemory"), "cumulative"
            ),
            warnings=tuple(warnings),
        )

    @property
    def delta_counters(self) -> bool:
        """Asynchronous counters (all of the bulk's) are delta only under ``delta``;
        ``lowmemory`` keeps them cumulative (it makes synchronous ones delta)."""
        return self.temporality == "delta"


def _headers(raw: str | None, warnings: list[str]) -> tuple[tuple[str, str], ...]:
    if not raw:
        return ()
    out = []
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            warnings.append(
                f"OTEL_EXPORTER_OTLP_HEADERS: ignoring {item.strip()!r} (not key=value)"
            )
            continue
        out.append((urllib.parse.unquote(key.strip()).lower(), urllib.parse.unquote(value.strip())))
    return tuple(out)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


class ExportError(Exception):
    """An export that did not get through; the message says why."""


class GrpcSender:
    _METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

    def __init__(self, settings: OtlpSettings) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )

        self._grpc = grpc
        parsed = urllib.parse.urlparse(settings.endpoint)
        target = parsed.netloc or settings.endpoint
        secure = parsed.scheme == "https" or (parsed.scheme != "http" and not settings.insecure)
        compression = grpc.Compression.Gzip if settings.compression == "gzip" else None
        options = [("grpc.max_reconnect_backoff_ms", int(MAX_RECONNECT_BACKOFF_S * 1000))]
        if secure:
            credentials = grpc.ssl_channel_credentials(
                _read(settings.certificate),
                _read(settings.client_key),
                _read(settings.client_certificate),
            )
            self._channel = grpc.secure_channel(
                target, credentials, options=options, compression=compression
            )
        else:
            self._channel = grpc.insecure_channel(target, options=options, compression=compression)
        # Requests go as the bytes they already are: no serializer.
        self._export = self._channel.unary_unary(
            self._METHOD, response_deserializer=ExportMetricsServiceResponse.FromString
        )
        self._metadata = settings.headers
        self._retryable = {
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.OUT_OF_RANGE,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DATA_LOSS,
        }

    def attempt(self, body: bytes, timeout_s: float) -> tuple[bool, str, int]:
        """(retryable, error or "", rejected points)."""
        try:
            response = self._export(body, timeout=timeout_s, metadata=self._metadata)
        except self._grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            return code in self._retryable, f"gRPC {getattr(code, 'name', code)}", 0
        return False, "", response.partial_success.rejected_data_points

    def close(self) -> None:
        self._channel.close()


class HttpSender:
    def __init__(self, settings: OtlpSettings) -> None:
        import requests

        self._requests = requests
        self._session = requests.Session()
        self._url = settings.endpoint
        self._headers = {"Content-Type": "application/x-protobuf", **dict(settings.headers)}
        self._gzip = settings.compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._verify: bool | str = settings.certificate or True
        self._cert = (
            (settings.client_certificate, settings.client_key)
            if settings.client_certificate and settings.client_key
            else None
        )

    def attempt(self, body: bytes, timeout_s: float) -> tuple[bool, str, int]:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )

        data = gzip.compress(body) if self._gzip else body
        try:
            response = self._session.post(
                self._url,
                data=data,
                headers=self._headers,
                timeout=timeout_s,
                verify=self._verify,
                cert=self._cert,
            )
        except self._requests.RequestException as e:
            return True, f"HTTP {type(e).__name__}", 0
        if response.ok:
            rejected = 0
            try:
                parsed = ExportMetricsServiceResponse.FromString(response.content)
                rejected = parsed.partial_success.rejected_data_points
            except Exception:  # noqa: BLE001 - an empty or odd body is still success
                pass
            return False, "", rejected
        return response.status_code in _RETRY_HTTP, f"HTTP {response.status_code}", 0

    def close(self) -> None:
        self._session.close()


class OtlpMetricSender:
    """``send(body, deadline)``: one request, retried until delivered or the deadline."""

    def __init__(self, settings: OtlpSettings, sleep=time.sleep) -> None:
        self.settings = settings
        self._transport = (
            GrpcSender(settings) if settings.protocol == "grpc" else HttpSender(settings)
        )
        self._sleep = sleep

    def send(self, body: bytes, deadline: float) -> int:
        """Returns the points the receiver rejected; raises ExportError when the
        request did not get through by ``deadline`` (``time.monotonic()``)."""
        backoff = 1.0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExportError("deadline reached before the request could be sent")
            retryable, error, rejected = self._transport.attempt(
                body, min(remaining, self.settings.timeout_s)
            )
            if not error:
                return rejected
            remaining = deadline - time.monotonic()
            if not retryable or remaining <= backoff:
                raise ExportError(f"{error} from {self.settings.endpoint}")
            self._sleep(backoff)
            backoff = min(backoff * 2, 32.0)

    def close(self) -> None:
        self._transport.close()
