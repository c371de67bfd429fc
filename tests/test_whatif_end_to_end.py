"""The agent process builds the what-if curve and exports it on the container's
Resource, over OTLP to a real receiver, on both engines. Host only (not marked
``kernel``): the guests' time goes to tests/test_whatif_kernel.py."""

from __future__ import annotations

import pytest

from otel_pagecache.probes.bcc import bcc_available
from otel_pagecache.whatif import SCALES, TARGETS
from tests.agent_process import AgentProcess
from tests.conftest import make_cold_file
from tests.kernel_features import skip_unless_lookups
from tests.peers.otlp_receiver import iter_points

MIB = 1 << 20
PAGE = 4096


@pytest.mark.parametrize("engine", ["core", "bcc"])
def test_the_agent_exports_the_curve_of_a_containers_reads(
    memcgs, data_dir, otlp_receiver, tmp_path, engine
):
    if engine == "bcc" and not bcc_available():
        pytest.skip("BCC's Python module (python3-bpfcc) is not installed")
    skip_unless_lookups()
    container_id, path, directory = memcgs.create_container()
    worker = memcgs.worker(directory)
    cold = make_cold_file(data_dir / "whatif-16m", 16 * MIB)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_PAGECACHE_WHATIF_SAMPLE_SHIFT": "4",
    }
    # 4,096 pages read once in 1 MiB reads, one page in 16 sampled: exactly 256.
    pages = 16 * MIB // PAGE

    def mine(requests):
        return [
            p
            for p in iter_points(requests)
            if p.resource.get("container.id") == container_id
            and p.metric.startswith("pagecache.whatif.")
        ]

    with AgentProcess(["run", "--engine", engine, "--include", path], env, tmp_path) as agent:
        otlp_receiver.wait_for_metrics(
            lambda r: any(p.resource.get("container.id") == container_id for p in iter_points(r)),
            timeout=60,
        )
        worker.do("read", cold)
        requests = otlp_receiver.wait_for_metrics(
            lambda r: any(
                p.metric == "pagecache.whatif.samples" and p.value == pages // 16 for p in mine(r)
            ),
            timeout=120,
        )
        assert agent.terminate() == 0, agent.log()
    latest: dict = {}
    for p in mine(requests):
        key = (p.metric, tuple(sorted(p.attributes.items())))
        if p.time_unix_nano >= latest.get(key, (0, None))[0]:
            latest[key] = (p.time_unix_nano, p)
    points = [p for _, p in latest.values()]
    # Every page was read once: all first accesses, no hit at any size.
    ratios = {
        p.attributes["pagecache.whatif.scale"]: p.value
        for p in points
        if p.metric == "pagecache.whatif.hit_ratio"
    }
    assert set(ratios) == set(SCALES) and set(ratios.values()) == {0.0}
    targets = {
        p.attributes["pagecache.whatif.target"]
        for p in points
        if p.metric == "pagecache.whatif.working_set"
    }
    assert targets == set(TARGETS)
    sizes = [p for p in points if p.metric == "pagecache.whatif.cache_size"]
    assert {p.attributes["pagecache.whatif.scale"] for p in sizes} == set(SCALES)
    assert all(p.unit == "By" for p in sizes)
