"""Real Docker and Podman containers, named from the runtimes' files on disk.

Each test starts its runtime with private directories (dockerd with its own
data/exec root and socket; podman with its own --root/--runroot), imports a
busybox image, runs a container whose memcg sits beneath the test's own
cgroup, and removes the container by id afterwards. The agent runs as a real
process with its BPF probes and exports over OTLP to a real receiver; the
workload reads a cold file of known size inside the container, so the misses
and insertions of that container's memcg are known exactly.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_pagecache.cgroupfs import MemoryHierarchy, own_cgroup_path
from otel_pagecache.containers import Enricher, identify
from tests.agent_process import AgentProcess, agent_env
from tests.conftest import make_cold_file
from tests.peers.docker import DockerDaemon
from tests.peers.otlp_receiver import iter_points
from tests.peers.podman import Podman
from tests.peers.runtimes import CgroupParent, RuntimeCli, busybox_rootfs

MIB = 1 << 20
PAGES = 16 * MIB // 4096
IMAGE = "otel-pagecache-busybox"
TAG = "1.0"


class Runtime:
    """One started runtime, with what the test expects the agent to report."""

    def __init__(self, name: str, cli: RuntimeCli, parent: CgroupParent, env: dict[str, str]):
        self.name = name
        self.cli = cli
        self.parent = parent
        self.agent_env = env
        self.image_name = ""
        self.image_id = ""

    def import_busybox(self, tmp_path: Path) -> None:
        tarball = busybox_rootfs(tmp_path / "busybox-rootfs.tar")
        image_id = self.cli.import_image(tarball, f"{IMAGE}:{TAG}")
        self.image_id = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
        # podman qualifies a short name with "localhost/"; docker keeps it as given.
        self.image_name = f"localhost/{IMAGE}" if self.name == "podman" else IMAGE


@pytest.fixture(params=["docker", "podman"])
def runtime(
    request: pytest.FixtureRequest, real_hierarchy: MemoryHierarchy, tmp_path: Path
) -> Iterator[Runtime]:
    if real_hierarchy.version != 1:
        # The cgroup parent below is built for v1's per-controller layout.
        pytest.skip("the real-runtime tests are written for the cgroup v1 memory controller")
    own = own_cgroup_path(real_hierarchy.version)
    name = f"otel-pagecache-test-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path / request.param
    if request.param == "docker":
        parent = CgroupParent(own, name, "docker")  # memcg /…/docker/<id>, as dockerd names it
        cli: RuntimeCli = DockerDaemon(workdir, parent.path)
        env = {"OTEL_PAGECACHE_DOCKER_DATA_ROOT": str(workdir / "data-root")}
    else:
        parent = CgroupParent(own, name, "libpod_parent")  # memcg /…/libpod_parent/libpod-<id>
        cli = Podman(workdir, parent.path)
        env = {"OTEL_PAGECACHE_CONTAINERS_STORAGE_ROOT": str(workdir / "root")}
    try:
        with cli:
            started = Runtime(request.param, cli, parent, env)
            started.import_busybox(tmp_path)
            yield started
    finally:
        left = parent.remove()
    assert not left, f"cgroups left behind: {left}"


def _cpu_mask() -> str:
    # The probes' per-CPU slots give exact figures for a reader that stays on
    # one CPU (as tests/worker.py is pinned); busybox taskset takes a hex mask.
    return format(1 << min(os.sched_getaffinity(0)), "x")


def _value(requests: list, container_id: str, metric: str) -> int:
    """The latest value of a counter of the container (0 before its first point)."""
    points = [
        p
        for p in iter_points(requests)
        if p.resource.get("container.id") == container_id and p.metric == metric
    ]
    return max(points, key=lambda p: p.time_unix_nano).value if points else 0


def _counters_after(receiver, container_id: str, mark_ns: int) -> dict[str, int]:
    """The container's activity counters as of the first collection after ``mark_ns``."""

    def collected(requests: list) -> bool:
        return any(
            p.resource.get("container.id") == container_id and p.time_unix_nano > mark_ns
            for p in iter_points(requests)
        )

    requests = receiver.wait_for_metrics(collected, timeout=60)
    return {
        name: _value(requests, container_id, f"pagecache.{name}")
        for name in ("lookups", "misses", "insertions")
    }


def test_real_container_is_named_and_counted_exactly(
    runtime: Runtime, otlp_receiver, data_dir: Path, tmp_path: Path
) -> None:
    make_cold_file(data_dir / "cold-16m", 16 * MIB)
    (data_dir / "warm").write_bytes(b"w" * 65536)
    container_name = f"web-{uuid.uuid4().hex[:6]}"
    cid = runtime.cli.run(
        f"{IMAGE}:{TAG}", "sleep", "100000", name=container_name, volume=f"{data_dir}:/data:ro"
    )
    env = agent_env(otlp_receiver.grpc_endpoint, OTEL_PAGECACHE_STALLS="false", **runtime.agent_env)
    include = f"{runtime.parent.top}/*"
    with AgentProcess(["run", "--engine", "core", "--include", include], env, tmp_path) as agent:

        def named(requests: list) -> bool:
            return any(
                p.resource.get("container.id") == cid and "container.name" in p.resource
                for p in iter_points(requests)
            )

        # The first export names the container: its memcg is known before the read.
        otlp_receiver.wait_for_metrics(named, timeout=60)
        # A first run faults busybox (a fresh copy in the container's rootfs) into
        # this memcg; the cold read after it is then the memcg's only disk I/O.
        dd = ("taskset", _cpu_mask(), "dd", "of=/dev/null", "bs=1M")
        runtime.cli.exec(cid, *dd, "if=/data/warm")
        before = _counters_after(otlp_receiver, cid, time.time_ns())
        runtime.cli.exec(cid, *dd, "if=/data/cold-16m")

        def counted(requests: list) -> bool:
            return _value(requests, cid, "pagecache.insertions") >= before["insertions"] + PAGES

        requests = otlp_receiver.wait_for_metrics(counted, timeout=60)
        assert agent.terminate() == 0, agent.log()

    resources = [p.resource for p in iter_points(requests) if p.resource.get("container.id") == cid]
    expected = {
        "container.id": cid,
        "container.runtime.name": runtime.name,
        "container.name": container_name,
        "container.image.name": runtime.image_name,
        "container.image.id": runtime.image_id,
        "container.image.tags": [TAG],
        "pagecache.cgroup.kind": "container",
    }
    assert resources and all({k: r.get(k) for k in expected} == expected for r in resources), (
        resources[-1]
    )
    # Exact as in tests/test_activity_end_to_end.py: every page of the cold file
    # read from disk once and inserted once into this memcg (readahead may add a
    # few past EOF); lookups also count the hits on busybox's own pages.
    after = {name: _value(requests, cid, f"pagecache.{name}") for name in before}
    assert PAGES <= after["misses"] - before["misses"] <= PAGES + 64, (before, after)
    assert PAGES <= after["insertions"] - before["insertions"] <= PAGES + 64, (before, after)
    assert after["lookups"] - before["lookups"] >= PAGES, (before, after)
    errors = [p.value for p in iter_points(requests) if p.metric == "pagecache.agent.read_errors"]
    assert errors and errors[-1] == 0, agent.log()


def test_real_runtime_files_follow_a_rename_and_a_removal(runtime: Runtime) -> None:
    # The enricher alone, on the runtime's live files: no agent, no BPF.
    cid = runtime.cli.run(
        f"{IMAGE}:{TAG}", "sleep", "100000", name="before", volume="/tmp:/data:ro"
    )
    path = f"{runtime.parent.path}/{'libpod-' if runtime.name == 'podman' else ''}{cid}"
    identity = identify(path)
    assert (identity.container_id, identity.runtime) == (cid, runtime.name)
    roots = {
        "docker_root": runtime.agent_env.get("OTEL_PAGECACHE_DOCKER_DATA_ROOT", "/nonexistent"),
        "storage_root": runtime.agent_env.get(
            "OTEL_PAGECACHE_CONTAINERS_STORAGE_ROOT", "/nonexistent"
        ),
    }
    enricher = Enricher(refresh_seconds=0, **roots)
    assert enricher.enrich(identity).name == "before"
    runtime.cli.cli("rename", cid, "after")
    assert enricher.enrich(identity).name == "after"
    runtime.cli.remove(cid)
    # Gone: Docker's directory vanished, so the last name is kept (a stopping
    # container is still named); containers.json was rewritten without it, so
    # podman's is forgotten. Either way the identity stands and nothing is an error.
    gone = enricher.enrich(identity)
    assert (gone.container_id, gone.runtime) == (cid, runtime.name)
    assert gone.name == ("after" if runtime.name == "docker" else None)
    assert enricher.take_read_errors() == 0
