"""Every environment variable the agent reads, in one place.

Standard OpenTelemetry variables (read here or by the SDK's exporters):

==========================================  =========================================
``OTEL_METRICS_EXPORTER``                   ``otlp`` (default), ``console``,
                                            ``prometheus``, ``none``; comma-separated
``OTEL_TRACES_EXPORTER``                    stall spans: ``otlp`` (default),
                                            ``console``, ``none``
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``      overrides the protocol for spans
``OTEL_EXPORTER_OTLP_ENDPOINT``             read by the OTLP exporters
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``     read by the OTLP exporters
``OTEL_EXPORTER_OTLP_PROTOCOL``             ``grpc`` (default, as the Python SDK's
                                            auto-configuration) or ``http/protobuf``
``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL``     overrides the above for metrics
``OTEL_EXPORTER_OTLP_HEADERS``              read by the OTLP exporters
``OTEL_EXPORTER_OTLP_INSECURE``             ``true``: plain-text gRPC to an http:// endpoint
``OTEL_EXPORTER_OTLP_TIMEOUT``              read by the OTLP exporters
``OTEL_BSP_SCHEDULE_DELAY``                 stall span batching (ms), read by the SDK
``OTEL_METRIC_EXPORT_INTERVAL``             milliseconds, default 60000
``OTEL_METRIC_EXPORT_TIMEOUT``              milliseconds, default 30000
``OTEL_RESOURCE_ATTRIBUTES``                merged into the agent's base Resource
``OTEL_SERVICE_NAME``                       default ``otel-pagecache``
``OTEL_EXPORTER_PROMETHEUS_HOST``/``_PORT``  pull endpoint, default localhost:9464
==========================================  =========================================

The agent's own (each also a ``run`` flag):

==========================================  =========================================
``OTEL_PAGECACHE_HOST_ROOT``                prefix for every host path below, for an
                                            agent in a container with the host's ``/``
                                            mounted elsewhere (default ``/``)
``OTEL_PAGECACHE_CGROUP_ROOT``              default ``<host root>/sys/fs/cgroup``
``OTEL_PAGECACHE_PROC_ROOT``                default ``<host root>/proc``
``OTEL_PAGECACHE_DOCKER_DATA_ROOT``         dockerd ``--data-root``, read for container
                                            names and images (default
                                            ``<host root>/var/lib/docker``)
``OTEL_PAGECACHE_CONTAINERS_STORAGE_ROOT``  containers/storage ``graphroot`` of podman,
                                            buildah, CRI-O (default ``<host
                                            root>/var/lib/containers/storage``)
``OTEL_PAGECACHE_CONTAINERS_RUN_ROOT``      containers/storage ``runroot``, where CRI-O
                                            keeps each container's OCI config (default
                                            ``<host root>/run/containers/storage``)
``OTEL_PAGECACHE_CONTAINERD_STATE_ROOT``    containerd ``--state`` (default ``<host
                                            root>/run/containerd``)
``OTEL_PAGECACHE_INCLUDE``                  comma-separated globs on cgroup paths;
                                            only matching cgroups are exported
``OTEL_PAGECACHE_EXCLUDE``                  comma-separated globs; never exported
``OTEL_PAGECACHE_MAX_CGROUPS``              cap on exported cgroups, largest page
                                            cache first (default 1000)
``OTEL_PAGECACHE_CONTAINERS_ONLY``          ``true``: skip cgroups that are not
                                            containers (default ``false``)
``OTEL_PAGECACHE_SHUTDOWN_TIMEOUT``         seconds allowed for the last export on
                                            exit (default 5)
``OTEL_PAGECACHE_ACTIVITY``                 ``false``: no BPF, residency only
                                            (default ``true``; same as engine ``none``)
``OTEL_PAGECACHE_ENGINE``                   ``auto`` (default), ``core``, ``bcc``,
                                            ``none``: the activity engine (``auto``:
                                            CO-RE when it loads, else BCC when it
                                            imports and compiles, else residency only)
``OTEL_PAGECACHE_LOOKUPS``                  ``false``: leave the lookup path (every
                                            read and fault) unattached; no lookups,
                                            no hit ratio (default ``true``)
``OTEL_PAGECACHE_TOP_FILES``                files per container in
                                            ``pagecache.file.usage`` (default 10)
``OTEL_PAGECACHE_FILE_PATHS``               ``true``: export ``file.path`` of those
                                            files (default ``false``: a container's
                                            file names stay private)
``OTEL_PAGECACHE_STALL_THRESHOLD_MS``       stalls at least this long become spans
                                            (default 1, fractions allowed, 0 = all)
``OTEL_PAGECACHE_STALL_SPANS_PER_SECOND``   span rate limit per container (default
                                            10, burst 10)
``OTEL_PAGECACHE_STALLS``                   ``false``: no stall programs or spans
``OTEL_PAGECACHE_SPAN_FIGURES``             (in-process plugin) ``false``: no thread
                                            figures on spans
``OTEL_PAGECACHE_SPAN_SLOTS``               (in-process plugin) ``false``: no span
                                            slots, so stall spans get no links
``OTEL_PAGECACHE_PROCESS_RESIDENCY``        (in-process plugin) ``false``: no
                                            residency of the process's memcg
==========================================  =========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _number(env: Mapping[str, str], name: str, default: float, kind=float):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError as e:
        raise ValueError(f"{name}={raw!r} is not a number") from e
    if value < 0:
        raise ValueError(f"{name}={raw!r} must not be negative")
    return value


def _under(host_root: str, path: str) -> str:
    return os.path.join(host_root, path.lstrip("/")) if host_root not in ("", "/") else path


@dataclass
class Settings:
    metrics_exporters: tuple[str, ...] = ("otlp",)
    otlp_metrics_protocol: str = "grpc"
    export_interval_ms: float = 60_000
    export_timeout_ms: float = 30_000
    prometheus_host: str = "localhost"
    prometheus_port: int = 9464
    host_root: str = "/"
    cgroup_root: str = "/sys/fs/cgroup"
    proc_root: str = "/proc"
    pod_log_root: str = "/var/log/pods"
    # Runtime data roots, as the runtimes' own flags name them (docs/containers.md).
    containerd_state_root: str = "/run/containerd"
    crio_state_root: str = "/run/containers/storage"
    docker_root: str = "/var/lib/docker"
    storage_root: str = "/var/lib/containers/storage"
    include: tuple[str, ...] = field(default_factory=tuple)
    exclude: tuple[str, ...] = field(default_factory=tuple)
    max_cgroups: int = 1000
    containers_only: bool = False
    shutdown_timeout_s: float = 5.0
    activity: bool = True
    engine: str = "auto"
    stalls: bool = True
    traces_exporter: str = "otlp"
    otlp_traces_protocol: str = "grpc"
    stall_threshold_ms: float = 1.0
    stall_spans_per_second: float = 10.0
    lookups: bool = True
    top_files: int = 10
    file_paths: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        host_root = env.get("OTEL_PAGECACHE_HOST_ROOT", "/") or "/"
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        ).strip()
        return cls(
            metrics_exporters=_split(env.get("OTEL_METRICS_EXPORTER")) or ("otlp",),
            otlp_metrics_protocol=protocol,
            export_interval_ms=_number(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000),
            export_timeout_ms=_number(env, "OTEL_METRIC_EXPORT_TIMEOUT", 30_000),
            prometheus_host=env.get("OTEL_EXPORTER_PROMETHEUS_HOST") or "localhost",
            prometheus_port=_number(env, "OTEL_EXPORTER_PROMETHEUS_PORT", 9464, int),
            host_root=host_root,
            cgroup_root=env.get("OTEL_PAGECACHE_CGROUP_ROOT")
            or _under(host_root, "/sys/fs/cgroup"),
            proc_root=env.get("OTEL_PAGECACHE_PROC_ROOT") or _under(host_root, "/proc"),
            pod_log_root=_under(host_root, "/var/log/pods"),
            containerd_state_root=env.get("OTEL_PAGECACHE_CONTAINERD_STATE_ROOT")
            or _under(host_root, "/run/containerd"),
            crio_state_root=env.get("OTEL_PAGECACHE_CONTAINERS_RUN_ROOT")
            or _under(host_root, "/run/containers/storage"),
            docker_root=env.get("OTEL_PAGECACHE_DOCKER_DATA_ROOT")
            or _under(host_root, "/var/lib/docker"),
            storage_root=env.get("OTEL_PAGECACHE_CONTAINERS_STORAGE_ROOT")
            or _under(host_root, "/var/lib/containers/storage"),
            include=_split(env.get("OTEL_PAGECACHE_INCLUDE")),
            exclude=_split(env.get("OTEL_PAGECACHE_EXCLUDE")),
            max_cgroups=_number(env, "OTEL_PAGECACHE_MAX_CGROUPS", 1000, int),
            containers_only=_bool(env.get("OTEL_PAGECACHE_CONTAINERS_ONLY")),
            shutdown_timeout_s=_number(env, "OTEL_PAGECACHE_SHUTDOWN_TIMEOUT", 5.0),
            activity=_bool(env.get("OTEL_PAGECACHE_ACTIVITY"), True),
            engine=(env.get("OTEL_PAGECACHE_ENGINE") or "auto").strip().lower(),
            stalls=_bool(env.get("OTEL_PAGECACHE_STALLS"), True),
            traces_exporter=(env.get("OTEL_TRACES_EXPORTER") or "otlp").strip(),
            otlp_traces_protocol=(
                env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc"
            ).strip(),
            stall_threshold_ms=_number(env, "OTEL_PAGECACHE_STALL_THRESHOLD_MS", 1.0),
            stall_spans_per_second=_number(env, "OTEL_PAGECACHE_STALL_SPANS_PER_SECOND", 10.0),
            lookups=_bool(env.get("OTEL_PAGECACHE_LOOKUPS"), True),
            top_files=_number(env, "OTEL_PAGECACHE_TOP_FILES", 10, int),
            file_paths=_bool(env.get("OTEL_PAGECACHE_FILE_PATHS")),
        )
