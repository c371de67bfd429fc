"""The agent as a real process on the real kernel, exporting to real peers.

Memory cgroups are created beneath this test process's own cgroup (cgroup v1
memory controller on our CI machines); children in them read cold files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.agent_process import AgentProcess, wait_for_log
from tests.cgroup_trees import write_v2_cgroup
from tests.conftest import MemcgFactory, make_cold_file, resident_bytes
from tests.peers import ClosingListener, free_port
from tests.peers.otlp_receiver import iter_points

FILE_SIZE = 16 << 20
POD_UID = str(uuid.uuid4())
POD_SLICE = f"kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice"
BESTEFFORT_SLICE = f"kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice"
CONTAINERD_ID = uuid.uuid4().hex + uuid.uuid4().hex
DOCKER_ID = uuid.uuid4().hex + uuid.uuid4().hex


def _stat(directory: Path) -> dict[str, int]:
    out = {}
    for line in (directory / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


def _file_lru(directory: Path) -> int:
    stat = _stat(directory)
    return stat["active_file"] + stat["inactive_file"]


def _populate(
    memcgs: MemcgFactory, data_dir: Path, names: list[str]
) -> dict[str, tuple[str, Path, Path]]:
    """One cgroup per name, each with a child that read a cold FILE_SIZE file.

    Returns name -> (cgroup path, cgroup directory, the file read)."""
    out = {}
    for i, name in enumerate(names):
        path, directory = memcgs.create(name)
        cold = make_cold_file(data_dir / f"cold-{i}", FILE_SIZE)
        memcgs.run(directory, ["dd", f"if={cold}", "of=/dev/null", "bs=1M", "status=none"])
        out[name] = (path, directory, cold)
    return out


def assert_covers(exported: int, cold: Path) -> None:
    """The memcg's exported file LRU covers what of the file is still cached.

    Not simply the file size: these VMs can shed page cache at any moment.
    Measured after the export, so shedding in between only makes it easier.
    """
    resident = resident_bytes(cold)
    assert resident > 0, f"{cold} was shed from the page cache entirely"
    # memory.stat sums per-CPU counters that the kernel folds in batches
    # (MEMCG_CHARGE_BATCH, 32 or 64 pages per CPU by kernel), so it may lag
    # the page cache by that much: measured 4 pages short on 5.10's cgroup v2.
    lag = 64 * os.sysconf("SC_PAGE_SIZE") * (os.cpu_count() or 1)
    assert exported >= resident - lag, (exported, resident)


def _agent_env(**extra: str) -> dict[str, str]:
    env = {
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_PAGECACHE_SHUTDOWN_TIMEOUT": "5",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=ci",
        "OTEL_SERVICE_NAME": "",
    }
    env.update(extra)
    return env


def _usage_by_path(points) -> dict[str, dict]:
    """Latest pagecache.usage per cgroup path: {path: {state: value, "resource": ...}}."""
    out: dict[str, dict] = {}
    for p in points:
        if p.metric != "pagecache.usage":
            continue
        path = p.resource.get("pagecache.cgroup.path")
        entry = out.setdefault(path, {"t": 0})
        if p.time_unix_nano >= entry["t"]:
            entry["t"] = p.time_unix_nano
            entry[p.attributes["pagecache.state"]] = p.value
            entry["resource"] = p.resource
            entry["point"] = p
    return out


def _has_paths(paths):
    def predicate(requests):
        usage = _usage_by_path(iter_points(requests))
        return all(p in usage and "active" in usage[p] and "inactive" in usage[p] for p in paths)

    return predicate


@pytest.fixture
def workload(memcgs: MemcgFactory, data_dir: Path):
    names = [
        f"plain-{uuid.uuid4().hex[:6]}",
        f"{POD_SLICE}/cri-containerd-{CONTAINERD_ID}.scope",
        f"docker-{DOCKER_ID}.scope",
    ]
    return memcgs, _populate(memcgs, data_dir, names), names


@pytest.mark.kernel
def test_otlp_grpc_per_container_resources_match_memory_stat(workload, otlp_receiver, tmp_path):
    memcgs, cgroups, names = workload
    env = _agent_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.grpc_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_HEADERS="x-pagecache-test=grpc-42",
        OTEL_EXPORTER_OTLP_INSECURE="true",
    )
    paths = [cgroups[n][0] for n in names]
    kernel_before = {n: _file_lru(cgroups[n][1]) for n in names}
    with AgentProcess(["run", "--include", memcgs.children_glob], env, tmp_path) as agent:
        requests = otlp_receiver.wait_for_metrics(_has_paths(paths), timeout=30)
        kernel_after = {n: _file_lru(cgroups[n][1]) for n in names}
        usage = _usage_by_path(iter_points(requests))
        assert agent.terminate() == 0, agent.log()

    for name in names:
        path = cgroups[name][0]
        exported = usage[path]["active"] + usage[path]["inactive"]
        assert_covers(exported, cgroups[name][2])
        # The kernel's own figure, read just before and just after the export:
        # nothing reads in between, so page cache can only shrink (shedding).
        low, high = sorted((kernel_before[name], kernel_after[name]))
        slack = 16 * 4096
        assert low - slack <= exported <= high + slack, (name, exported, low, high)
        assert usage[path]["point"].unit == "By"
        assert set(usage[path]["point"].attributes) == {"pagecache.state"}

    plain = usage[cgroups[names[0]][0]]["resource"]
    assert plain["pagecache.cgroup.kind"] == "system" and "container.id" not in plain
    assert plain["service.name"] == "otel-pagecache"
    assert plain["deployment.environment.name"] == "ci"
    assert plain["host.name"]
    k8s = usage[cgroups[names[1]][0]]["resource"]
    assert k8s["container.id"] == CONTAINERD_ID
    assert k8s["container.runtime.name"] == "containerd"
    assert k8s["k8s.pod.uid"] == POD_UID
    assert k8s["pagecache.k8s.qos_class"] == "burstable"
    assert k8s["pagecache.cgroup.id"] == cgroups[names[1]][1].stat().st_ino
    docker = usage[cgroups[names[2]][0]]["resource"]
    assert docker["container.id"] == DOCKER_ID and docker["container.runtime.name"] == "docker"
    # The pod slice is a pod, never a container.
    pod_path = cgroups[names[1]][0].rsplit("/", 1)[0]
    pod = usage[pod_path]["resource"]
    assert pod["pagecache.cgroup.kind"] == "pod" and "container.id" not in pod
    assert pod["k8s.pod.uid"] == POD_UID
    assert any(h.get("x-pagecache-test") == "grpc-42" for h in otlp_receiver.headers())

    points = list(iter_points(otlp_receiver.metrics_requests()))
    node = [p for p in points if p.metric == "pagecache.node.cached"]
    assert node and "pagecache.cgroup.path" not in node[-1].resource and node[-1].unit == "By"
    refaults = [p for p in points if p.metric == "pagecache.refaults"]
    assert refaults and refaults[-1].kind == "sum" and refaults[-1].is_monotonic
    assert refaults[-1].temporality == "cumulative" and refaults[-1].unit == "{page}"


def test_otlp_http_protobuf(memcgs, data_dir, otlp_receiver, tmp_path):
    name = f"docker-{DOCKER_ID}.scope"
    cgroups = _populate(memcgs, data_dir, [name])
    path = cgroups[name][0]
    env = _agent_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_HEADERS="x-pagecache-test=http-7",
    )
    with AgentProcess(["run", "--include", path], env, tmp_path) as agent:
        requests = otlp_receiver.wait_for_metrics(_has_paths([path]), timeout=30)
        assert agent.terminate() == 0, agent.log()
    usage = _usage_by_path(iter_points(requests))[path]
    assert_covers(usage["active"] + usage["inactive"], cgroups[name][2])
    assert usage["resource"]["container.id"] == DOCKER_ID
    assert all(r.transport == "http" for r in otlp_receiver.received("metrics"))
    assert any(h.get("x-pagecache-test") == "http-7" for h in otlp_receiver.headers())


def test_through_rotel_collector(memcgs, data_dir, otlp_receiver, rotel_agent, tmp_path):
    name = f"{BESTEFFORT_SLICE}/cri-containerd-{CONTAINERD_ID}.scope"
    cgroups = _populate(memcgs, data_dir, [name])
    path = cgroups[name][0]
    env = _agent_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=rotel_agent.grpc_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_INSECURE="true",
    )
    with AgentProcess(["run", "--include", memcgs.children_glob], env, tmp_path) as agent:
        requests = otlp_receiver.wait_for_metrics(_has_paths([path]), timeout=30)
        assert agent.terminate() == 0, agent.log()
    usage = _usage_by_path(iter_points(requests))[path]
    assert_covers(usage["active"] + usage["inactive"], cgroups[name][2])
    resource = usage["resource"]
    assert resource["container.id"] == CONTAINERD_ID
    assert resource["k8s.pod.uid"] == POD_UID
    assert resource["pagecache.k8s.qos_class"] == "besteffort"


def test_prometheus_endpoint_scraped_by_real_prometheus(
    memcgs, data_dir, prometheus_server, tmp_path
):
    name = f"docker-{DOCKER_ID}.scope"
    cgroups = _populate(memcgs, data_dir, [name])
    path = cgroups[name][0]
    port = free_port()
    env = _agent_env(
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(port),
    )
    with AgentProcess(["run", "--include", path], env, tmp_path) as agent:
        server = prometheus_server([f"127.0.0.1:{port}"])
        query = f'pagecache_usage_bytes{{container_id="{DOCKER_ID}",pagecache_state="inactive"}}'
        series = server.wait_for_series(query, timeout=40)
        assert agent.terminate() == 0, agent.log()
    labels = series[0]["metric"]
    assert labels["container_runtime_name"] == "docker"
    assert labels["pagecache_cgroup_path"] == path
    assert float(series[0]["value"][1]) > 0


def test_console_exporter_prints_per_container_resource(memcgs, data_dir, tmp_path):
    name = f"docker-{DOCKER_ID}.scope"
    path = _populate(memcgs, data_dir, [name])[name][0]
    env = _agent_env(OTEL_METRICS_EXPORTER="console")
    with AgentProcess(["run", "--include", path], env, tmp_path) as agent:
        deadline = time.monotonic() + 20
        while DOCKER_ID not in agent.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert agent.terminate() == 0
    log = agent.log()
    start = log.index("{")
    document = json.JSONDecoder().raw_decode(log[start:])[0]
    resources = [rm["resource"]["attributes"] for rm in document["resource_metrics"]]
    assert any(r.get("container.id") == DOCKER_ID for r in resources), resources


def test_unreachable_collector_keeps_running_and_warns_rarely(memcgs, tmp_path):
    path, _ = memcgs.create()
    # The collector's port closes every connection unanswered, and counts
    # them: each cycle's one attempt fails at once (a retry, 1 s later, would
    # pass the 1 s export timeout).
    metrics = b"POST /v1/metrics "
    with ClosingListener() as dead:
        env = _agent_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=dead.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_TIMEOUT="1000",  # milliseconds, as the specification says
            OTEL_METRIC_EXPORT_INTERVAL="200",
            OTEL_METRIC_EXPORT_TIMEOUT="1000",
            OTEL_PAGECACHE_SHUTDOWN_TIMEOUT="2",
        )
        with AgentProcess(["run", "--include", path], env, tmp_path) as agent:
            # The first failed cycle warns ...
            wait_for_log(agent, "metric export via", timeout=20)
            # ... and the next ones do not: three more cycles reach the endpoint,
            # so at least two have failed since the warning (the export loop
            # runs one cycle at a time).
            dead.wait_for_attempts(dead.attempts(metrics) + 3, metrics, timeout=20)
            assert agent.proc.poll() is None, agent.log()
            started = time.monotonic()
            code = agent.terminate()
            elapsed = time.monotonic() - started
    log = agent.log()
    assert elapsed < 8, f"shutdown took {elapsed:.1f}s"
    assert code == 0, log
    assert log.count("metric export via") == 1, log
    # The SDK's own per-attempt warnings are rate-limited to one per template.
    assert log.count("Transient error") <= 1, log
    assert log.count("Traceback") == 0, log


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otel_pagecache.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_top_once_names_containers(workload):
    memcgs, cgroups, names = workload
    out = _cli("top", "--once", "--include", memcgs.children_glob, check=True).stdout
    assert f"docker:{DOCKER_ID[:12]}" in out
    assert f"containerd:{CONTAINERD_ID[:12]}" in out
    assert names[0][-12:] in out
    lines = [line for line in out.splitlines() if "docker:" in line or "containerd:" in line]
    assert len(lines) == 2 and all(line.split()[1].endswith("M") for line in lines), out


def test_bad_cgroup_root_fails_with_cause_and_fix(tmp_path):
    result = _cli("run", "--cgroup-root", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "--cgroup-root" in result.stderr


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def test_unprivileged_user_still_sees_residency(workload):
    """cgroupfs memory files are world-readable: residency needs no privilege."""
    memcgs, cgroups, names = workload
    args = ("top", "--once", "--include", memcgs.children_glob)
    result = _cli(*args, check=True, preexec_fn=_as_nobody)
    assert f"docker:{DOCKER_ID[:12]}" in result.stdout
    # Without CAP_BPF the activity probes cannot load: one message says why
    # and how to fix it, and the residency table is still there.
    assert "activity: off" in result.stdout
    assert result.stderr.count("page-cache activity unavailable") == 1
    assert "CAP_BPF" in result.stderr


def test_unreadable_cgroupfs_names_cause_and_fix_and_keeps_node_totals(tmp_path):
    # pytest's own tmp_path is private to root; this tree must be reachable by nobody.
    shared = Path(tempfile.mkdtemp(prefix="otel-pagecache-"))
    shared.chmod(0o755)
    root = shared / "cg"
    write_v2_cgroup(root, "/", {"file": 1})
    (root / "memory.stat").chmod(0)
    (shared / "meminfo").write_text("Cached:  100 kB\n")
    env = _agent_env(OTEL_METRICS_EXPORTER="console", OTEL_METRIC_EXPORT_INTERVAL="300")
    agent = AgentProcess(
        ["run", "--cgroup-root", str(root), "--proc-root", str(shared)], env, tmp_path
    )
    agent.preexec_fn = _as_nobody
    try:
        with agent:
            deadline = time.monotonic() + 20
            while "pagecache.node.cached" not in agent.log() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert agent.terminate() == 0, agent.log()
    finally:
        shutil.rmtree(shared)
    log = agent.log()
    assert "cannot read" in log and "run as root" in log
    assert "pagecache.node.cached" in log


def test_sigterm_flushes_the_last_export(memcgs, otlp_receiver, tmp_path):
    """With a one-hour interval the only export is the one made on SIGTERM."""
    path, _ = memcgs.create()
    env = _agent_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.grpc_endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_METRIC_EXPORT_INTERVAL="3600000",
    )
    with AgentProcess(["run", "--include", path], env, tmp_path) as agent:
        wait_for_log(agent, "exporters:")  # started and idle: nothing exported yet
        assert otlp_receiver.metrics_requests() == []
        assert agent.terminate() == 0, agent.log()
    points = list(iter_points(otlp_receiver.metrics_requests()))
    assert any(p.resource.get("pagecache.cgroup.path") == path for p in points), agent.log()
