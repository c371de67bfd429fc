"""The what-if series on each memcg's own Resource (OTLP) and as Prometheus labels.

A fixture tree gives the memcg's page cache; the curve is a real tracker fed
records whose curve is known exactly: a loop over 1,024 pages, ten times
(first pass misses, then every access hits at a distance of 1,023), so an
LRU of fewer than 1,024 pages hits nothing, one of 1,024 or more hits 90%.
"""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from otel_pagecache.activity import PAGE_SIZE, ActivityCounters, ActivitySnapshot
from otel_pagecache.cgroupfs import MemoryHierarchy
from otel_pagecache.otlp_bulk import BulkEncoder, requests
from otel_pagecache.prometheus_bulk import BulkCollector
from otel_pagecache.residency import ResidencyReader, SnapshotSource
from otel_pagecache.top import render
from otel_pagecache.whatif import SCALES, WhatifRun, WhatifTracker
from tests.cgroup_trees import write_v2_cgroup
from tests.peers.otlp_receiver import iter_points

CID = "7be92808767a667f35c8505cbf40d14e931ef6db5b0210329cf193b15ba9d605"
LOOP = 1024
# The memcg holds 500 pages of page cache: the loop's 1,024 pages lie between
# scales 2 and 4 (the histogram's bins are 2.2% wide: a size within a bin of
# the loop's would read part of the step).
CACHE_PAGES = 500


def _snapshot(tmp_path, calibrate: bool = False, lookups: int = 0, misses: int = 0):
    half = CACHE_PAGES * PAGE_SIZE // 2
    write_v2_cgroup(tmp_path, "/", {"file": 0, "active_file": 0, "inactive_file": 0})
    write_v2_cgroup(
        tmp_path,
        f"/system.slice/docker-{CID}.scope",
        {"file": 2 * half, "active_file": half, "inactive_file": half},
        current=4 * half,
    )
    write_v2_cgroup(tmp_path, "/system.slice", {"file": 0, "active_file": 0, "inactive_file": 0})
    (tmp_path / "meminfo").write_text("Cached: 100 kB\n")
    residency = ResidencyReader(MemoryHierarchy(2, str(tmp_path)), proc_root=str(tmp_path))
    snapshot = residency.read()
    container = next(s for s in snapshot.memcgs if s.path.endswith(".scope"))
    clock = [0.0]
    tracker = WhatifTracker(window_s=600, shift=0, clock=lambda: clock[0])
    for i in range(10 * LOOP):
        tracker.add(container.id, 7, i % LOOP, 1, 0, -1, now=i * 1e-3)
    clock[0] = 11.0
    run = WhatifRun(tracker, calibrate=calibrate)
    counters = ActivityCounters(lookups=lookups, misses=misses)
    snapshot.activity = ActivitySnapshot("core", True, memcgs={container.id: counters})
    container.activity = counters
    if calibrate:  # a first collection, the counters' start in the window
        run.annotate(snapshot, PAGE_SIZE)
        counters.lookups, counters.misses = 2 * lookups, 2 * misses
    run.annotate(snapshot, PAGE_SIZE)
    return snapshot


def _container_points(snapshot):
    encoder = BulkEncoder({"service.name": "otel-pagecache"}, "t", "")
    bodies = requests(encoder.frames(snapshot, 1))
    points = iter_points(ExportMetricsServiceRequest.FromString(b) for b in bodies)
    return [
        (p.metric, p.unit, p.attributes, p.value)
        for p in points
        if p.resource.get("container.id") == CID and p.metric.startswith("pagecache.whatif.")
    ]


def test_the_curve_is_exported_on_the_containers_resource(tmp_path):
    points = _container_points(_snapshot(tmp_path))
    ratios = {a["pagecache.whatif.scale"]: v for m, _, a, v in points if m.endswith("hit_ratio")}
    assert set(ratios) == set(SCALES)
    for scale, ratio in ratios.items():
        # Below the loop's 1,024 pages nothing hits; above, 90%.
        assert ratio == pytest.approx(0.9 if scale * CACHE_PAGES > LOOP else 0.0), scale
    sizes = {a["pagecache.whatif.scale"]: v for m, u, a, v in points if m.endswith("cache_size")}
    assert sizes == {s: int(s * CACHE_PAGES) * PAGE_SIZE for s in SCALES}
    sets = {a["pagecache.whatif.target"]: v for m, _, a, v in points if m.endswith("working_set")}
    assert set(sets) == {0.9, 0.95, 0.99}
    for value in sets.values():  # the loop's size, within the histogram's 2.2% bins
        assert LOOP * PAGE_SIZE <= value <= LOOP * PAGE_SIZE * 1.022
    assert [v for m, _, _, v in points if m == "pagecache.whatif.samples"] == [10 * LOOP]
    assert {(m, u) for m, u, _, _ in points} == {
        ("pagecache.whatif.hit_ratio", "1"),
        ("pagecache.whatif.cache_size", "By"),
        ("pagecache.whatif.working_set", "By"),
        ("pagecache.whatif.samples", "{access}"),
    }
    assert not any("pagecache.whatif.calibrated" in a for _, _, a, _ in points)


def test_calibrated_curves_meet_the_measured_ratio_at_scale_1_and_say_so(tmp_path):
    # Measured over the window: 1,000 lookups, 300 misses: 0.7 at scale 1,
    # where the LRU curve says 0; the curve moves up by 0.7, capped at 0.9.
    points = _container_points(_snapshot(tmp_path, True, lookups=1000, misses=300))
    ratios = {a["pagecache.whatif.scale"]: v for m, _, a, v in points if m.endswith("hit_ratio")}
    assert ratios[1.0] == pytest.approx(0.7)
    assert ratios[4.0] == pytest.approx(0.9)
    assert all(
        a["pagecache.whatif.calibrated"] is True for m, _, a, _ in points if m.endswith("ratio")
    )


def test_prometheus_and_top_show_the_curve(tmp_path):
    snapshot = _snapshot(tmp_path)
    source = SnapshotSource(lambda: snapshot, max_age_s=60)
    families = {f.name: f for f in BulkCollector(source, "t", "").collect()}
    ratio = families["pagecache_whatif_hit_ratio"]
    scales = sorted(
        float(s.labels["pagecache_whatif_scale"])
        for s in ratio.samples
        if s.labels.get("container_id") == CID
    )
    assert scales == sorted(SCALES)
    assert "pagecache_whatif_working_set_bytes" in families
    table = render(snapshot).splitlines()
    header = table[3].split()
    assert header[header.index("CACHE") + 1] == "NEED95"
    row = next(line for line in table if CID[:12] in line).split()
    assert row[2] in ("4.0M", "4.1M")  # 1,024 pages of 4 KiB (up to 2.2% more: its bin)
