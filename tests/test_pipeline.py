"""The shipped pipeline end to end: agent and app -> OpenTelemetry Collector -> Jaeger, Prometheus.

The collector is the one of collector-config/builder.yaml, running
collector-config/agent.yaml with an overlay that changes only the endpoints and
drops k8sattributes from the processor lists: that processor needs a Kubernetes
API, and there is none here, so pod association is NOT exercised (the config is
only validated, by tests/test_collector_config.py). Jaeger v2 (in-memory) holds
the traces and is asked through its API v3; Debian's Prometheus takes the
collector's remote write and is asked through PromQL.

The container is a memcg the test makes, named as Docker's systemd driver names
a container's (tests/conftest.py); real Docker and podman containers are tested
elsewhere.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from otel_pagecache.correlation import parse_registry, registry_path
from tests.agent_process import (
    AgentProcess,
    agent_env,
    during_span,
    limit_memcg,
    run_instrumented_app,
    stall_agent_env,
    stalls_on_span,
    wait_for_log,
)
from tests.bpf_maps import span_slot_base
from tests.conftest import make_cold_file
from tests.pace import scaled
from tests.peers import go_peer_binary
from tests.peers.jaeger import Jaeger, spans_from_api_v3
from tests.peers.otelcol import Collector
from tests.peers.otlp_receiver import SpanRecord
from tests.peers.prometheus import PrometheusServer

CONFIG = Path(__file__).resolve().parent.parent / "collector-config"
STALL_APP = Path(__file__).with_name("apps") / "stall_app.py"
MIB = 1 << 20
AGENT_SERVICE = "otel-pagecache"
APP_SERVICE = "stalling-app"
STALL = "pagecache.stall.memcg_reclaim"
# Set by scripts/trace-example: where to write the traces as Jaeger returned them.
TRACE_EXAMPLE = os.environ.get("OTEL_PAGECACHE_TRACE_EXAMPLE")


@dataclass
class Pipeline:
    jaeger: Jaeger
    prometheus: PrometheusServer
    collector: Collector


def _overlay(jaeger: Jaeger, prometheus: PrometheusServer) -> dict:
    """agent.yaml's changes: its exporters' endpoints, and no k8sattributes."""
    with open(CONFIG / "agent.yaml") as f:
        pipelines = yaml.safe_load(f)["service"]["pipelines"]
    return {
        "exporters": {
            "otlp/traces": {"endpoint": jaeger.otlp_endpoint},
            "prometheusremotewrite": {"endpoint": f"{prometheus.url}/api/v1/write"},
        },
        "service": {
            "pipelines": {
                name: {"processors": [p for p in pipeline["processors"] if p != "k8sattributes"]}
                for name, pipeline in pipelines.items()
            }
        },
    }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("pipeline")
    remote_write = ["--web.enable-remote-write-receiver"]
    jaeger = Jaeger(go_peer_binary("jaeger"), workdir / "jaeger")
    prometheus = PrometheusServer([], workdir=workdir / "prometheus", extra_args=remote_write)
    with jaeger, prometheus:
        overlay = _overlay(jaeger, prometheus)
        agent_yaml = [CONFIG / "agent.yaml"]
        with Collector(go_peer_binary("otelcol"), workdir / "otelcol", agent_yaml, overlay) as c:
            yield Pipeline(jaeger, prometheus, c)


def _slots_published(pid: int) -> None:
    """Wait until the agent's span_slot_bases map holds the address the app's
    registry file names: the app announced its slots and the agent published
    them. Whether that is in time for a process's first stall is
    tests/test_correlation.py's to prove; here the app waits for it, so each
    link's path through the Collector into Jaeger is checked on every stall
    of the span."""
    deadline = time.monotonic() + scaled(30)
    published = None
    while time.monotonic() < deadline:
        try:
            registry = parse_registry(Path(registry_path(pid)).read_bytes())
        except OSError:
            registry = None
        base = span_slot_base(pid)
        published = base.get("address") if isinstance(base, dict) else None
        if registry is not None and published == registry[0]:
            return
        time.sleep(0.1)
    raise AssertionError(
        f"the agent never published the span slots of pid {pid}: "
        f"registry {registry}, published address {published}"
    )


def _diagnosis(jaeger: Jaeger, since: float, container_id: str, pids: list, log: str) -> str:
    """Every stall span Jaeger holds, against the app span (time, thread), and
    the agent's span-slot lines: what a failure of the test below needs."""
    spans = spans_from_api_v3(jaeger.find_traces(AGENT_SERVICE, since))
    apps = [s for s in spans_from_api_v3(jaeger.find_traces(APP_SERVICE, since))
            if s.name == "read-big"]  # fmt: skip
    origin = apps[0].start_time_unix_nano if apps else since * 1e9
    lines = [
        f"app pid {pids}; app span {'found' if apps else 'NOT in Jaeger'}; "
        f"{len(spans)} agent spans; times in ms from the app span's start",
        "start_ms  dur_ms  name  container  pid  thread  during_span  links",
    ]
    for s in sorted(spans, key=lambda s: s.start_time_unix_nano):
        lines.append(
            f"{(s.start_time_unix_nano - origin) / 1e6:9.1f} "
            f"{(s.end_time_unix_nano - s.start_time_unix_nano) / 1e6:7.2f} {s.name} "
            f"{s.resource.get('container.id') == container_id} "
            f"{s.attributes.get('pagecache.host.pid')} {s.attributes.get('thread.id')} "
            f"{bool(apps) and during_span(s, apps[0])} {len(s.links)}"
        )
    lines.append("--- agent's span-slot and warning lines ---")
    lines += [
        line for line in log.splitlines()
        if "span slots" in line or " WARNING " in line or " ERROR " in line
    ]  # fmt: skip
    return "\n".join(lines)


def _stalls_of(spans: list[SpanRecord], container_id: str) -> list[SpanRecord]:
    return [s for s in spans if s.name == STALL and s.resource.get("container.id") == container_id]


# Each stall span of the app's thread during its span carries the link. It
# failed in the full suite, only after tests/test_instrumentor_processor.py:
# the pytest process's closed span slots still published themselves in every
# child forked with a preexec_fn (the app's start, before its exec), the
# kernel then ignored the app's own announcement (pid already known), and the
# span's stalls read the stale address. Both fixed (correlation.SpanSlots,
# slots_announced); a failure writes diagnosis.txt beside the agent's log.
def test_stall_spans_reach_jaeger_linked_to_the_app_span(pipeline, memcgs, data_dir, tmp_path):
    jaeger, collector = pipeline.jaeger, pipeline.collector
    container_id, path, directory = memcgs.create_container()
    limit_memcg(directory, 48 * MIB)
    cold = make_cold_file(data_dir / "cold-128m", 128 * MIB)
    since = time.time()
    env = stall_agent_env(collector, OTEL_METRICS_EXPORTER="none")
    app_pids: list[int] = []

    def gate(pid: int) -> None:
        app_pids.append(pid)
        _slots_published(pid)

    # Debug: the agent logs each span-slot publication, for the diagnosis.
    with AgentProcess(["--log-level", "debug", "run", "--include", path], env, tmp_path) as agent:
        wait_for_log(agent, "stall spans:")
        # Reads the cold file inside span "read-big": in 48 MiB, it stalls in reclaim.
        run_instrumented_app(
            STALL_APP,
            cold,
            endpoint=collector.grpc_endpoint,
            service=APP_SERVICE,
            cgroup=directory,
            before_span=gate,
            OTEL_METRICS_EXPORTER="none",
        )
        # The collector's batch processor (agent.yaml: 5 s) holds spans a while.
        try:
            stall_spans = jaeger.wait_for_spans(
                AGENT_SERVICE,
                since,
                lambda spans: any(s.links for s in _stalls_of(spans, container_id)),
            )
        except AssertionError:
            diagnosis = _diagnosis(jaeger, since, container_id, app_pids, agent.log())
            (tmp_path / "diagnosis.txt").write_text(diagnosis)
            raise AssertionError(diagnosis) from None
        assert agent.terminate() == 0, agent.log()

    app_spans = jaeger.wait_for_spans(
        APP_SERVICE, since, lambda spans: any(s.name == "read-big" for s in spans)
    )
    (app_span,) = [s for s in app_spans if s.name == "read-big"]

    # The app's trace, fetched by its id.
    app_trace = jaeger.trace(app_span.trace_id)
    assert [s.span_id for s in spans_from_api_v3(app_trace)] == [app_span.span_id]
    assert app_span.resource["service.name"] == APP_SERVICE

    stalls = _stalls_of(stall_spans, container_id)
    linked = [s for s in stalls if s.links]
    assert linked
    for stall in stalls:
        # The container's identity on the span's Resource, the thread's pid on the span.
        assert stall.resource["container.runtime.name"] == "docker"
        assert stall.resource["pagecache.cgroup.path"] == path
        assert stall.resource["service.name"] == AGENT_SERVICE
        assert stall.attributes["process.pid"] == app_span.attributes["process.pid"]
        on_app_span = during_span(stall, app_span)
        # Stalls of other threads or outside the span (start-up imports in
        # 48 MiB, the exporter's thread) carry no link; the span's own, below.
        if not on_app_span:
            assert not stall.links, stall
        if stall.links:
            (link,) = stall.links
            assert (link.trace_id, link.span_id) == (app_span.trace_id, app_span.span_id)
            assert link.attributes == {"pagecache.link.reason": "running_on_thread"}
            assert stall.trace_id != app_span.trace_id  # linked, not a child
    # How many of them are linked from a process's first stall on is
    # tests/test_correlation.py's to prove (>= 90%, straight to a receiver);
    # here the app started its span once the agent had its slots: every stall
    # on the span is linked, and each link, through the Collector into
    # Jaeger, is the right one.
    on_span = stalls_on_span(stalls, app_span)
    linked_on_span = [s for s in on_span if s.links]
    assert on_span and linked_on_span == on_span, f"{len(linked_on_span)} of {len(on_span)} linked"
    if TRACE_EXAMPLE:
        example = {
            "app_trace": app_trace,
            "stall_trace": jaeger.trace(linked[0].trace_id),
        }
        Path(TRACE_EXAMPLE).write_text(json.dumps(example, indent=2) + "\n")


def _file_lru(directory: Path) -> int:
    """The memcg's own active_file + inactive_file from memory.stat (v1 or v2 names)."""
    stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
    return int(stat["active_file"]) + int(stat["inactive_file"])


def test_page_cache_series_reach_prometheus_by_remote_write(pipeline, memcgs, data_dir, tmp_path):
    prometheus, collector = pipeline.prometheus, pipeline.collector
    container_id, path, directory = memcgs.create_container()
    worker = memcgs.worker(directory)
    worker.do("read", make_cold_file(data_dir / "cold-64m", 64 * MIB))
    # The container's I/O is over: its file LRU stays put from here on.
    env = agent_env(collector.grpc_endpoint, OTEL_TRACES_EXPORTER="none")
    selector = f'pagecache_usage_bytes{{container_id="{container_id}"}}'
    with AgentProcess(["run", "--include", path], env, tmp_path) as agent:
        series = prometheus.wait_for_series(selector, timeout=60)
        # Both LRU states of the same sample (the batch carries them together).
        deadline = time.monotonic() + 30
        while len(series) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            series = prometheus.query(selector)
        exported = sum(float(s["value"][1]) for s in series)
        truth = _file_lru(directory)
        assert agent.terminate() == 0, agent.log()
    assert {s["metric"]["pagecache_state"] for s in series} == {"active", "inactive"}
    for s in series:
        labels = s["metric"]
        assert labels["container_runtime_name"] == "docker"
        assert labels["pagecache_cgroup_path"] == path
        assert labels["service_name"] == AGENT_SERVICE
    assert truth > 32 * MIB  # the read file is (mostly) still cached
    assert abs(exported - truth) <= 0.1 * truth, (exported, truth)


def test_api_v3_otlp_json_parses_with_hex_ids_and_link_attributes():
    # The shape Jaeger's /api/v3/traces answers (cmd/query/app/apiv3 snapshots):
    # OTLP JSON with hex ids and enum numbers; parsed by the OTLP protobuf schema.
    document = {
        "result": {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "container.id", "value": {"stringValue": "c1"}}]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "otel_pagecache"},
                            "spans": [
                                {
                                    "traceId": "00000000000000000000000000000001",
                                    "spanId": "0000000000000002",
                                    "name": STALL,
                                    "kind": 1,
                                    "startTimeUnixNano": "10",
                                    "endTimeUnixNano": "20",
                                    "attributes": [
                                        {"key": "process.pid", "value": {"intValue": "42"}}
                                    ],
                                    "links": [
                                        {
                                            "traceId": "0af7651916cd43dd8448eb211c80319c",
                                            "spanId": "b7ad6b7169203331",
                                            "attributes": [
                                                {
                                                    "key": "pagecache.link.reason",
                                                    "value": {"stringValue": "running_on_thread"},
                                                }
                                            ],
                                        }
                                    ],
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    }
    (span,) = spans_from_api_v3(document)
    assert span.resource == {"container.id": "c1"}
    assert (span.trace_id, span.span_id) == ("0" * 31 + "1", "0" * 15 + "2")
    assert span.attributes == {"process.pid": 42}
    assert span.end_time_unix_nano == 20
    (link,) = span.links
    assert (link.trace_id, link.span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert link.attributes == {"pagecache.link.reason": "running_on_thread"}
