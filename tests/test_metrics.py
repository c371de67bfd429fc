"""Every metric on fixture trees, through the agent's real collection path: the
SDK (InMemoryMetricReader) for its own metrics, the direct encoder for the
per-container bulk, decoded with opentelemetry-proto's generated classes."""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from otel_pagecache.cgroupfs import MemoryHierarchy
from otel_pagecache.config import Settings
from otel_pagecache.metric_export import own_reader
from otel_pagecache.metric_regrouping import ResourceSplitter
from otel_pagecache.metrics import (
    AGENT_METRICS,
    ALL_SPECS,
    MEMCG_METRICS,
    NODE_METRICS,
    RESOURCE_KEYS,
    AgentMetrics,
)
from otel_pagecache.otlp_bulk import BulkEncoder
from otel_pagecache.pipeline import MetricsPipeline
from otel_pagecache.residency import ResidencyReader, SnapshotSource
from tests.cgroup_trees import write_v2_cgroup
from tests.peers.otlp_receiver import iter_points

CID = "7be92808767a667f35c8505cbf40d14e931ef6db5b0210329cf193b15ba9d605"


def _points(requests):
    return [(p.resource, p.metric, p.unit, p.attributes, p.value) for p in iter_points(requests)]


def _tree(tmp_path):
    write_v2_cgroup(tmp_path, "/", {"file": 9000, "active_file": 5000, "inactive_file": 4000})
    write_v2_cgroup(
        tmp_path,
        f"/system.slice/docker-{CID}.scope",
        {
            "file": 8192,
            "active_file": 4096,
            "inactive_file": 4096,
            "file_dirty": 4096,
            "workingset_refault_file": 3,
            "workingset_activate_file": 1,
            "pgmajfault": 2,
        },
        current=65536,
        maximum=1 << 20,
        pressure_total=(1_500_000, 0),
    )
    write_v2_cgroup(
        tmp_path, "/system.slice", {"file": 8192, "active_file": 4096, "inactive_file": 4096}
    )
    (tmp_path / "meminfo").write_text(
        "Cached:             100 kB\nActive(file):        60 kB\nInactive(file):      40 kB\n"
        "Dirty:                4 kB\nWriteback:            0 kB\nShmem:               8 kB\n"
    )
    return MemoryHierarchy(2, str(tmp_path))


def _collect(tmp_path):
    """One collection's requests, decoded; and how many snapshots it read."""
    reader = own_reader()
    resource = Resource({"service.name": "otel-pagecache"})
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    reads = []
    residency = ResidencyReader(_tree(tmp_path), proc_root=str(tmp_path))

    def read():
        reads.append(1)
        return residency.read()

    source = SnapshotSource(read, max_age_s=60)  # however long the collection takes
    AgentMetrics(provider.get_meter("t"), source)
    pipeline = MetricsPipeline(
        reader,
        ResourceSplitter().split,
        BulkEncoder(resource.attributes, "t", ""),
        source,
        sender=None,
        interval_s=60,
        export_timeout_s=10,
        destination="test",
    )
    requests = [ExportMetricsServiceRequest.FromString(b) for b in pipeline.bodies()]
    return requests, reads


def test_every_documented_metric_is_exported_with_its_unit(tmp_path):
    data, reads = _collect(tmp_path)
    points = _points(data)
    exported = {(name, unit) for _, name, unit, _, _ in points}
    specs = [s for s, _ in MEMCG_METRICS] + [s for s, _ in NODE_METRICS] + list(AGENT_METRICS)
    # pagecache.memcg.limit has no point for the unlimited root but does for the container.
    assert {(s.name, s.unit) for s in specs} == exported
    assert len(reads) == 1, "one snapshot per collection, not one read per instrument"


def test_values_and_identity_attributes(tmp_path):
    points = _points(_collect(tmp_path)[0])
    container = [
        (name, {**resource, **attrs}, value)
        for resource, name, _, attrs, value in points
        if resource.get("container.id") == CID
    ]
    got = {
        (n, attrs.get("pagecache.state") or attrs.get("pagecache.pressure")): v
        for n, attrs, v in container
    }
    assert got[("pagecache.usage", "active")] == 4096
    assert got[("pagecache.usage", "inactive")] == 4096
    assert got[("pagecache.dirty", None)] == 4096
    assert got[("pagecache.refaults", None)] == 3
    assert got[("pagecache.activations", None)] == 1
    assert got[("pagecache.memcg.limit", None)] == 1 << 20
    assert got[("pagecache.memcg.working_set", None)] == 65536 - 4096
    assert got[("pagecache.memcg.pressure.stall_time", "some")] == 1.5
    attrs = container[0][1]
    assert attrs["container.runtime.name"] == "docker"
    assert attrs["pagecache.cgroup.path"] == f"/system.slice/docker-{CID}.scope"
    node = {
        (n, a.get("pagecache.state")): v
        for _, n, _, a, v in points
        if n.startswith("pagecache.node.")
    }
    assert node[("pagecache.node.cached", None)] == 100 * 1024
    assert node[("pagecache.node.usage", "active")] == 60 * 1024
    # The unlimited root has no limit point.
    assert not [
        1
        for r, n, _, _, _ in points
        if n == "pagecache.memcg.limit" and r.get("pagecache.cgroup.path") == "/"
    ]


def test_identity_is_on_each_memcgs_resource_not_on_points(tmp_path):
    requests, _ = _collect(tmp_path)
    by_path = {}
    for resource_attrs, name, _, attrs, _value in _points(requests):
        assert not (set(attrs) & RESOURCE_KEYS), f"{name} still has identity on the point"
        path = resource_attrs.get("pagecache.cgroup.path")
        by_path.setdefault(path, set()).add(name)
        if path == f"/system.slice/docker-{CID}.scope":
            assert resource_attrs["container.id"] == CID
            assert resource_attrs["pagecache.cgroup.kind"] == "container"
        assert resource_attrs["service.name"] == "otel-pagecache"
    # Node totals and agent health stay on the base resource (no cgroup path).
    assert "pagecache.node.cached" in by_path[None]
    assert "pagecache.agent.cgroups" in by_path[None]
    assert "pagecache.node.cached" not in by_path[f"/system.slice/docker-{CID}.scope"]
    resources = [rm.resource for r in requests for rm in r.resource_metrics]
    assert len(resources) == 4  # base, /, /system.slice, the container


def test_all_specs_names_every_metric_once():
    names = [s.name for s in ALL_SPECS]
    assert len(names) == len(set(names))
    assert all(s.kind in ("gauge", "counter", "histogram") for s in ALL_SPECS)
    assert {s.name for s, _ in MEMCG_METRICS} <= set(names)


def test_stall_instruments_match_their_specs():
    """stalls.py creates its instruments itself; they must match ALL_SPECS."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.trace import NoOpTracerProvider

    from otel_pagecache.metrics import STALL_METRICS
    from otel_pagecache.stalls import StallPipeline

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    pipeline = StallPipeline(NoOpTracerProvider().get_tracer("t"), provider.get_meter("t"))
    pipeline._histogram.record(0.5, {})  # noqa: SLF001 - one point, so it is exported
    seen = {
        m.name: (m.unit, m.description)
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    for spec in STALL_METRICS:
        assert seen[spec.name] == (spec.unit, spec.description)


def test_settings_from_standard_env():
    s = Settings.from_env(
        {
            "OTEL_METRICS_EXPORTER": "console, prometheus",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
            "OTEL_PAGECACHE_HOST_ROOT": "/host",
            "OTEL_PAGECACHE_INCLUDE": "/kubepods*,/docker/*",
            "OTEL_PAGECACHE_MAX_CGROUPS": "10",
        }
    )
    assert s.metrics_exporters == ("console", "prometheus")
    assert s.otlp_metrics_protocol == "http/protobuf"
    assert s.export_interval_ms == 5000
    assert s.cgroup_root == "/host/sys/fs/cgroup" and s.proc_root == "/host/proc"
    assert s.pod_log_root == "/host/var/log/pods"
    assert s.include == ("/kubepods*", "/docker/*") and s.max_cgroups == 10
    assert Settings.from_env({}).metrics_exporters == ("otlp",)


def test_every_identity_attribute_is_a_resource_key():
    from otel_pagecache.containers import Identity

    full = Identity(
        kind="container",
        container_id="c" * 64,
        runtime="docker",
        pod_uid="u",
        qos_class="q",
        namespace="n",
        pod_name="p",
        container_name="c",
        ecs_task_id="t",
    )
    assert set(full.resource_attributes()) <= RESOURCE_KEYS
