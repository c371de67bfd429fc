"""Run the OpenTelemetry Collector of collector-config/builder.yaml (built by scripts/build-peers).

A shipped config runs as it is, with a second ``--config`` file laid over it: the
collector merges maps key by key and replaces lists, so the overlay changes only
what it names. :class:`Collector` points the ``otlp`` receiver and the
``health_check`` extension at free loopback ports and turns the collector's own
telemetry off (it would bind :8888); the test's ``overlay`` adds the rest (exporter
endpoints, a processor list without what needs a Kubernetes API).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.peers import GoPeer, free_port

__all__ = ["Collector", "validate"]


def node_env() -> dict[str, str]:
    """Our environment plus what a DaemonSet's downward API gives the collector:
    agent.yaml's k8sattributes filter reads K8S_NODE_NAME (validate refuses it unset)."""
    return {**os.environ, "K8S_NODE_NAME": socket.gethostname()}


def validate(binary: Path, *configs: Path) -> subprocess.CompletedProcess[str]:
    """``otelcol validate`` of the configs (merged in order); the caller checks the result."""
    argv = [str(binary), "validate", *(f"--config=file:{c}" for c in configs)]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False, env=node_env()
    )


class Collector(GoPeer):
    """The collector running ``configs`` plus an overlay; ``grpc_endpoint`` takes OTLP."""

    name = "otelcol"

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        configs: Sequence[Path],
        overlay: dict[str, Any],
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(binary, workdir, startup_timeout)
        self.configs = list(configs)
        self.overlay = overlay
        self.env = node_env()
        self.grpc_port = 0

    @property
    def grpc_endpoint(self) -> str:
        """For the SDK's OTLP/gRPC exporter (plaintext)."""
        return f"http://127.0.0.1:{self.grpc_port}"

    def _prepare(self) -> tuple[list[str], str]:
        self.grpc_port, health_port = free_port(), free_port()
        ports = {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"},
                        "http": {"endpoint": f"127.0.0.1:{free_port()}"},
                    }
                }
            },
            "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health_port}"}},
            "service": {"telemetry": {"metrics": {"level": "none"}}},
        }
        overlay = self.workdir / "overlay.yaml"
        overlay.write_text(json.dumps(_merge(ports, self.overlay), indent=2) + "\n")  # JSON is YAML
        argv = [str(self.binary), *(f"--config=file:{c}" for c in [*self.configs, overlay])]
        return argv, f"http://127.0.0.1:{health_port}/"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, maps merged key by key as the collector does."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
