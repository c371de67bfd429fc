"""The Prometheus pull endpoint, bound before any BPF program loads.

``otel-pagecache run`` binds it first so a port in use or a host that does
not resolve is one line at start-up, not a traceback after the probes have
loaded; the exporter set-up later finds it already serving. The server
serves prometheus_client's default registry, which the
PrometheusMetricReader registers itself into whenever it is made.
"""

from __future__ import annotations

import errno
import logging

from .config import SettingError

_log = logging.getLogger(__name__)

_serving: dict[tuple[str, int], object] = {}


class EndpointError(RuntimeError):
    """The endpoint cannot listen; the message is one line naming the address and variables."""


def serve_prometheus(host: str, port: int) -> None:
    """Start the pull endpoint on ``host:port`` once per process (later calls: no-op)."""
    if (host, port) in _serving:
        return
    try:
        from prometheus_client import start_http_server
    except ImportError:
        raise SettingError(
            "OTEL_METRICS_EXPORTER=prometheus needs the extra: "
            "pip install 'otel-pagecache[prometheus]'"
        ) from None
    try:
        server, _thread = start_http_server(port=port, addr=host)
    except OSError as e:
        names = f"OTEL_EXPORTER_PROMETHEUS_HOST={host}, OTEL_EXPORTER_PROMETHEUS_PORT={port}"
        if e.errno == errno.EADDRINUSE:
            why = f"port {port} is already in use"
            fix = "stop the other program or choose another OTEL_EXPORTER_PROMETHEUS_PORT"
        elif e.errno == errno.EACCES:
            why = f"no permission to bind port {port}"
            fix = "choose a port above 1023 or grant CAP_NET_BIND_SERVICE"
        else:
            why = e.strerror or str(e)
            fix = "check OTEL_EXPORTER_PROMETHEUS_HOST and OTEL_EXPORTER_PROMETHEUS_PORT"
        raise EndpointError(
            f"cannot serve Prometheus on {host}:{port} ({names}): {why}; {fix}"
        ) from None
    _serving[(host, port)] = server
    _log.info("Prometheus endpoint on http://%s:%d/metrics", host, port)
