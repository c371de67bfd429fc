"""Container churn must not grow the SDK's per-series state (see series.py)."""

from __future__ import annotations

import shutil
import time

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_pagecache.agent import Agent
from otel_pagecache.cgroupfs import MemoryHierarchy
from otel_pagecache.config import Settings
from tests.cgroup_trees import write_v2_cgroup


def _series_state(agent: Agent) -> int:
    consumer = agent.meter_provider._measurement_consumer
    total = 0
    for storage in consumer._reader_storages.values():
        for matches in storage._instrument_view_instrument_matches.values():
            for match in matches:
                total += len(match._attributes_aggregation)
    return total


def _paths(data) -> set[str]:
    return {
        p.attributes.get("pagecache.cgroup.path")
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }


def test_removed_cgroups_leave_no_series_behind(tmp_path):
    write_v2_cgroup(tmp_path, "/", {"file": 1})
    for i in range(20):
        write_v2_cgroup(tmp_path, f"/docker/{str(i % 10) * 63}{i % 10}", {"file": i})
    reader = InMemoryMetricReader()
    settings = Settings(
        cgroup_root=str(tmp_path), proc_root=str(tmp_path), metrics_exporters=(), activity=False
    )
    agent = Agent(settings, readers=[reader], hierarchy=MemoryHierarchy(2, str(tmp_path)))
    try:
        first = reader.get_metrics_data()
        # The root and ten containers ("/docker" itself has no memory files here).
        assert len(_paths(first) - {None}) == 11
        state_before = _series_state(agent)
        shutil.rmtree(tmp_path / "docker")
        time.sleep(0.6)  # past the snapshot's max age: the next collection reads afresh
        second = reader.get_metrics_data()
        assert _paths(second) - {None} == {"/"}
        # Pruned during that collection; the SDK state shrinks with the hierarchy.
        assert _series_state(agent) < state_before / 5, (state_before, _series_state(agent))
    finally:
        agent.stop()


def test_engine_none_is_named_on_the_agents_own_metrics(tmp_path):
    write_v2_cgroup(tmp_path, "/", {"file": 1})
    reader = InMemoryMetricReader()
    settings = Settings(
        cgroup_root=str(tmp_path), proc_root=str(tmp_path), metrics_exporters=(), engine="none"
    )
    agent = Agent(settings, readers=[reader], hierarchy=MemoryHierarchy(2, str(tmp_path)))
    try:
        data = reader.get_metrics_data()
        points = {
            m.name: p.attributes
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            for p in m.data.data_points
        }
        assert points["pagecache.agent.collection.duration"]["pagecache.engine"] == "none"
        assert "pagecache.lookups" not in points
    finally:
        agent.stop()
