"""examples/: the manifests checked statically, the example app run for real."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from otel_pagecache import config
from otel_pagecache.cli import _parser
from tests.agent_process import run_instrumented_app
from tests.manifests import daemonset_manifest
from tests.peers.otlp_receiver import iter_spans

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NEEDED_CAPS = {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"}
DOCUMENTED = set(config.BY_ENV) | {name for v in config.OTHER_VARIABLES for name in v.names}


def test_daemonset_is_least_privilege_and_consistent():
    manifest = daemonset_manifest()
    assert manifest["kind"] == "DaemonSet"
    pod = manifest["spec"]["template"]["spec"]
    assert manifest["spec"]["selector"]["matchLabels"].items() <= (
        manifest["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pod["hostPID"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == NEEDED_CAPS
    volumes = {v["name"] for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["readOnly"] is True, mount
        assert mount["name"] in volumes
    assert {m["name"] for m in container["volumeMounts"]} == volumes
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/host/sys/fs/cgroup", "/sys/kernel/btf"} <= mounted
    for env in container["env"]:
        if env["name"].startswith(("OTEL_PAGECACHE_", "OTEL_EXPORTER_", "OTEL_METRIC")):
            assert env["name"] in DOCUMENTED, f"{env['name']} is not in config.SETTINGS"
    _parser().parse_args(container["args"])  # the agent accepts its arguments


def test_systemd_unit_runs_the_agent_with_the_same_capabilities():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(EXAMPLES / "systemd" / "otel-pagecache.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("/bin/otel-pagecache run")
    caps = {c.removeprefix("CAP_") for c in service["AmbientCapabilities"].split()}
    assert caps == NEEDED_CAPS
    assert set(service["CapabilityBoundingSet"].split()) == set(
        service["AmbientCapabilities"].split()
    )
    assert service["KillSignal"] == "SIGTERM"
    assert "WantedBy" in unit["Install"]


def test_container_image_definition():
    dockerfile = (EXAMPLES / "container" / "Dockerfile").read_text()
    # Both stages on one base, Debian 12 by default; scripts/agent-image names a local
    # one (tests/test_kubernetes.py builds and runs the image for real).
    assert re.search(r"^ARG BASE=debian:12-slim$", dockerfile, re.M)
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert stages == ["${BASE}", "${BASE}"]
    runtime = dockerfile.split("FROM ${BASE}", 2)[2]
    assert "libbpf1" in runtime and "clang" not in runtime  # no compiler at run time
    assert re.search(r'^ENTRYPOINT \["[^"]*otel-pagecache"\]', dockerfile, re.M)


def test_example_app_shows_the_cold_request_paid_for_misses(otlp_receiver, data_dir):
    size = 16 << 20
    run_instrumented_app(
        EXAMPLES / "app" / "report_service.py",
        size,
        endpoint=otlp_receiver.grpc_endpoint,
        service="report-service",
        OTEL_METRICS_EXPORTER="none",
        REPORT_DIR=str(data_dir),  # a disk file system, not tmpfs
    )
    cold, warm = sorted(
        (s for s in iter_spans(otlp_receiver.trace_requests()) if s.name == "GET /report"),
        key=lambda s: s.start_time_unix_nano,
    )
    assert cold.attributes["pagecache.thread.read_bytes"] >= size
    assert warm.attributes["pagecache.thread.read_bytes"] <= 64 << 10
