"""Instruments on fixture trees through the real SDK (InMemoryMetricReader)."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_pagecache.cgroupfs import MemoryHierarchy
from otel_pagecache.config import Settings
from otel_pagecache.export import split_by_resource
from otel_pagecache.metrics import (
    AGENT_METRICS,
    MEMCG_METRICS,
    NODE_METRICS,
    RESOURCE_KEYS,
    PageCacheMetrics,
)
from otel_pagecache.residency import ResidencyReader, SnapshotSource
from tests.cgroup_trees import write_v2_cgroup

CID = "7be92808767a667f35c8505cbf40d14e931ef6db5b0210329cf193b15ba9d605"


def _points(data):
    out = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    out.append(
                        (
                            dict(rm.resource.attributes),
                            metric.name,
                            metric.unit,
                            dict(p.attributes),
                            p.value,
                        )
                    )
    return out


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
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    reads = []
    residency = ResidencyReader(_tree(tmp_path), proc_root=str(tmp_path))

    def read():
        reads.append(1)
        return residency.read()

    PageCacheMetrics(provider.get_meter("t"), SnapshotSource(read, max_age_s=0.5))
    data = reader.get_metrics_data()
    return data, reads


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
        (name, attrs, value)
        for _, name, _, attrs, value in points
        if attrs.get("container.id") == CID
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
        for _, n, _, a, _ in points
        if n == "pagecache.memcg.limit" and a.get("pagecache.cgroup.path") == "/"
    ]


def test_split_by_resource_moves_identity_to_resource(tmp_path):
    data, _ = _collect(tmp_path)
    split = split_by_resource(data)
    by_path = {}
    for resource_attrs, name, _, attrs, _value in _points(split):
        assert not (set(attrs) & RESOURCE_KEYS), f"{name} still has identity on the point"
        path = resource_attrs.get("pagecache.cgroup.path")
        by_path.setdefault(path, set()).add(name)
        if path == f"/system.slice/docker-{CID}.scope":
            assert resource_attrs["container.id"] == CID
            assert resource_attrs["pagecache.cgroup.kind"] == "container"
    # Node totals and agent health stay on the base resource (no cgroup path).
    assert "pagecache.node.cached" in by_path[None]
    assert "pagecache.agent.cgroups" in by_path[None]
    assert "pagecache.node.cached" not in by_path[f"/system.slice/docker-{CID}.scope"]
    assert len(split.resource_metrics) == 4  # base, /, /system.slice, the container


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
