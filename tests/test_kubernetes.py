"""Kubernetes for real: the shipped DaemonSet on a one-node cluster built from upstream modules.

scripts/kube-node starts etcd, kube-apiserver, -controller-manager, -scheduler,
Debian's containerd and the kubelet (Kubernetes v1.35.4, loopback only); the
agent's image is built from examples/container/Dockerfile by scripts/agent-image
(podman, on a Debian rootfs made by mmdebstrap) and imported into containerd's
k8s.io namespace under the name the manifest gives. examples/kubernetes/daemonset.yaml
is applied through the API (--dry-run=server first) with an overlay that changes
two environment values only (``_overlay``): the controller manager creates the
agent's pod, the scheduler binds it, the kubelet runs it with the manifest's
capabilities and mounts. The agent exports to the Collector of
collector-config/builder.yaml running collector-config/agent.yaml with
k8sattributes KEPT (it reads the API with a kubeconfig whose user is bound to
examples/kubernetes/collector-rbac.yaml's ClusterRole), which writes to Prometheus
and Jaeger as tests/test_pipeline.py does.

Workloads are pods of the test's own namespace, one Deployment-owned and one bare,
each reading a cold file of known size once the test drops a trigger file into its
hostPath directory (so the shell's own start-up misses come before the counted read).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from otel_pagecache.containers import Enricher, identify
from tests.agent_watch import bpf_objects_of, live_bpf_ids
from tests.conftest import make_cold_file
from tests.manifests import daemonset_documents
from tests.pace import scaled
from tests.peers import go_peer_binary
from tests.peers.jaeger import Jaeger
from tests.peers.kube_node import NODE_NAME, KubeNode
from tests.peers.otelcol import Collector
from tests.peers.prometheus import PrometheusServer

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "collector-config"
MANIFESTS = REPO / "examples" / "kubernetes"
IMAGE = "ghcr.io/example/otel-pagecache:0.1.0"  # the manifest's image, built here
MIB = 1 << 20
PAGE = 4096
INTERVAL_S = 5  # the overlay's OTEL_METRIC_EXPORT_INTERVAL
BATCH_TIMEOUT_S = 5  # agent.yaml's batch processor
STALL = "pagecache.stall.memcg_reclaim"
# Set to a directory: the run's Prometheus answers and the stall span's trace, as
# Prometheus and Jaeger returned them, are written there (docs/kubernetes.md quotes them).
EXAMPLE_DIR = os.environ.get("OTEL_PAGECACHE_KUBE_EXAMPLE")

# A workload container: waits for its trigger, reads its cold file once, then idles.
# The wait loop runs sh and sleep first, so their pages are in before the read.
READER = (
    "while [ ! -e /data/go ]; do sleep 0.2; done; "
    "dd if=/data/cold of=/dev/null bs=1M 2>/dev/null; exec sleep 100000"
)


def _overlay(manifest: dict[str, Any], collector: Collector) -> dict[str, Any]:
    """The shipped DaemonSet pointed at this node's Collector, exporting every 5 s, with
    every stall spanned: a 48 MiB pod's reclaim of clean pages stalls well under the
    default 1 ms threshold. Nothing else changes (test_the_overlay_changes_three_values_only);
    the file's other document, its Namespace, is applied as it is."""
    daemonset = copy.deepcopy(manifest)
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    values = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": str(INTERVAL_S * 1000),
    }
    for env in container["env"]:
        if env["name"] in values:
            env["value"] = values[env["name"]]
    container["env"].append({"name": "OTEL_PAGECACHE_STALL_THRESHOLD_MS", "value": "0"})
    return daemonset


def _collector_overlay(jaeger: Jaeger, prometheus: PrometheusServer) -> dict[str, Any]:
    """agent.yaml's changes: its exporters' endpoints, and the API reached through a
    kubeconfig (the Collector runs on the node, not as a pod). k8sattributes stays."""
    return {
        "exporters": {
            "otlp/traces": {"endpoint": jaeger.otlp_endpoint},
            "prometheusremotewrite": {"endpoint": f"{prometheus.url}/api/v1/write"},
        },
        "processors": {"k8sattributes": {"auth_type": "kubeConfig"}},
    }


@dataclass
class Workload:
    name: str  # the Deployment's or the bare pod's name
    directory: Path  # its hostPath /data
    size: int
    pod: dict[str, Any] = field(default_factory=dict)

    @property
    def container_id(self) -> str:
        return self.pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]

    @property
    def pod_name(self) -> str:
        return self.pod["metadata"]["name"]

    @property
    def pages(self) -> int:
        return self.size // PAGE


@dataclass
class Cluster:
    node: KubeNode
    prometheus: PrometheusServer
    jaeger: Jaeger
    collector: Collector
    namespace: str
    manifest: dict[str, Any]
    applied: dict[str, Any]
    data: Path
    started: float
    workloads: dict[str, Workload] = field(default_factory=dict)

    def agent_pod(self) -> dict[str, Any]:
        pods = self.node.get(
            "pods", "-n", "observability", "-l", "app.kubernetes.io/name=otel-pagecache"
        )
        running = [p for p in pods["items"] if p["status"].get("phase") == "Running"
                   and "deletionTimestamp" not in p["metadata"]]  # fmt: skip
        assert len(running) == 1, [p["metadata"]["name"] for p in pods["items"]]
        return running[0]

    def diagnosis(self) -> str:
        agent = self.node.get("pods", "-n", "observability")["items"]
        names = [p["metadata"]["name"] for p in agent]
        return (
            f"agent pods {names}\n--- agent log ---\n"
            + "\n".join(self.node.pod_log("observability", n)[-3000:] for n in names)
            + f"\n--- collector ---\n{self.collector.log_tail(20)}"
            + f"\n--- kubelet ---\n{self.node.log('kubelet', 15)}"
        )


def _data_dir(base: Path) -> Path:
    """A directory on a disk file system (tmpfs pages are shmem, not file LRU)."""
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(base)], capture_output=True, text=True)
    if fs.stdout.strip() == "tmpfs":
        base = REPO / ".test-data" / uuid.uuid4().hex[:8]
    base.mkdir(parents=True, exist_ok=True)
    return base


def _reader_pod_spec(directory: Path, memory_limit: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "reader",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", READER],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
    }
    if memory_limit:
        container["resources"] = {"limits": {"memory": memory_limit}}
    return {
        "hostNetwork": True,  # no pod network on this node
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "containers": [container],
        "volumes": [{"name": "data", "hostPath": {"path": str(directory), "type": "Directory"}}],
    }


def _workload_objects(namespace: str, workloads: dict[str, Workload]) -> list[dict[str, Any]]:
    deploy = workloads["reader"]
    labels = {"app": "reader"}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": deploy.name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                             "spec": _reader_pod_spec(deploy.directory)},
            },
        },
    ]  # fmt: skip
    for key, limit in (("bare", None), ("stall", "48Mi")):
        w = workloads[key]
        objects.append({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": w.name, "namespace": namespace},
            "spec": _reader_pod_spec(w.directory, limit),
        })  # fmt: skip
    return objects


def _wait_for(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition} not within {timeout} s"
        time.sleep(0.2)


def _wait_running(node: KubeNode, namespace: str, selector: list[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    pods: list = []
    while time.monotonic() < deadline:
        pods = node.get("pods", "-n", namespace, *selector)["items"]
        ready = [p for p in pods if p["status"].get("phase") == "Running"
                 and p["status"].get("containerStatuses", [{}])[0].get("containerID")
                 and "deletionTimestamp" not in p["metadata"]]  # fmt: skip
        if ready:
            return ready[0]
        time.sleep(0.5)
    statuses = [(p["metadata"]["name"], p["status"]) for p in pods]
    raise AssertionError(f"no running pod for {selector} in {namespace}: {statuses}"
                         f"\n--- kubelet ---\n{node.log('kubelet')}")  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("a kubelet, containerd and BPF need root")
    if not Path("/sys/fs/cgroup/memory").is_dir():
        pytest.skip("the cgroup v1 memory controller is what this node's kubelet runs on here")
    workdir = tmp_path_factory.mktemp("kubernetes")
    started = time.time()
    image = subprocess.run([str(REPO / "scripts" / "agent-image")], capture_output=True,
                           text=True, timeout=3600)  # fmt: skip
    assert image.returncode == 0, image.stderr[-3000:]
    remote_write = ["--web.enable-remote-write-receiver"]
    jaeger = Jaeger(go_peer_binary("jaeger"), workdir / "jaeger")
    prometheus = PrometheusServer([], workdir=workdir / "prometheus", extra_args=remote_write)
    data = _data_dir(workdir / "data")
    with KubeNode(workdir / "node") as node, jaeger, prometheus:
        node.ctr("images", "import", image.stdout.strip())
        namespace = f"otel-pagecache-test-{uuid.uuid4().hex[:6]}"
        documents = daemonset_documents()
        manifest = next(d for d in documents if d["kind"] == "DaemonSet")
        # The file's Namespace first: a server-side dry run of objects in a namespace
        # that does not exist yet is refused, and the RBAC's ServiceAccount lives there.
        (namespace_doc,) = [d for d in documents if d["kind"] == "Namespace"]
        node.kubectl("apply", "-f", "-", stdin=json.dumps(namespace_doc))
        rbac = str(MANIFESTS / "collector-rbac.yaml")
        node.kubectl("apply", "--dry-run=server", "-f", rbac)
        node.kubectl("apply", "-f", rbac)
        node.kubectl("create", "clusterrolebinding", "otel-pagecache-collector-user",
                     "--clusterrole=otel-pagecache-collector",
                     "--user=otel-pagecache-collector")  # fmt: skip
        overlay = _collector_overlay(jaeger, prometheus)
        collector = Collector(go_peer_binary("otelcol"), workdir / "otelcol",
                              [CONFIG / "agent.yaml"], overlay)  # fmt: skip
        collector.env = {**collector.env, "K8S_NODE_NAME": NODE_NAME,
                         "KUBECONFIG": str(node.state / "collector.kubeconfig")}  # fmt: skip
        with collector:
            applied = _overlay(manifest, collector)
            items = [applied if d is manifest else d for d in documents]
            text = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            node.kubectl("apply", "--dry-run=server", "-f", "-", stdin=text)
            node.kubectl("apply", "-f", "-", stdin=text)
            c = Cluster(node, prometheus, jaeger, collector, namespace, manifest, applied,
                        data, started)  # fmt: skip
            agent = _wait_running(node, "observability",
                                  ["-l", "app.kubernetes.io/name=otel-pagecache"],
                                  scaled(120))  # fmt: skip
            assert agent["spec"]["nodeName"] == NODE_NAME
            sizes = (("reader", "reader", 16 * MIB), ("bare", "bare-reader", 8 * MIB),
                     ("stall", "stall-reader", 128 * MIB))  # fmt: skip
            for key, name, size in sizes:
                directory = data / key
                directory.mkdir()
                make_cold_file(directory / "cold", size)
                c.workloads[key] = Workload(name, directory, size)
            objects = _workload_objects(namespace, c.workloads)
            # The namespace first, then its "default" ServiceAccount (the controller
            # manager makes it; the ServiceAccount admission refuses pods until then).
            node.kubectl("apply", "-f", "-", stdin=json.dumps(objects.pop(0)))
            _wait_for(lambda: node.kubectl("get", "serviceaccount", "default", "-n",
                                           namespace, check=False), scaled(60))  # fmt: skip
            node.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                              "items": objects}))  # fmt: skip
            for key, w in c.workloads.items():
                selector = ["-l", "app=reader"] if key == "reader" else [
                    "--field-selector", f"metadata.name={w.name}"]  # fmt: skip
                w.pod = _wait_running(node, namespace, selector, scaled(120))
            # Nothing to delete afterwards: `down` removes the node whole.
            yield c
    shutil.rmtree(data, ignore_errors=True)


def _example(name: str, document: object) -> None:
    if EXAMPLE_DIR:
        Path(EXAMPLE_DIR, name).write_text(json.dumps(document, indent=2) + "\n")


def _series(prometheus: PrometheusServer, metric: str, **labels: str) -> list[dict[str, Any]]:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return prometheus.query(f"{metric}{{{selector}}}")


def _wait_series(cluster: Cluster, metric: str, timeout: float = 90, **labels: str) -> list:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        series = _series(cluster.prometheus, metric, **labels)
        if series:
            return series
        time.sleep(0.5)
    raise AssertionError(f"no {metric} series with {labels} in {timeout} s\n{cluster.diagnosis()}")


def _misses(cluster: Cluster, container_id: str) -> float:
    series = _series(cluster.prometheus, "pagecache_misses_total", container_id=container_id)
    return sum(float(s["value"][1]) for s in series)


def test_the_overlay_changes_three_values_only(cluster):
    before, after = cluster.manifest, copy.deepcopy(cluster.applied)
    env_before = before["spec"]["template"]["spec"]["containers"][0]["env"]
    env_after = after["spec"]["template"]["spec"]["containers"][0]["env"]
    added = env_after[len(env_before) :]
    assert added == [{"name": "OTEL_PAGECACHE_STALL_THRESHOLD_MS", "value": "0"}]
    changed = {e["name"] for e, o in zip(env_after, env_before, strict=False) if e != o}
    assert changed == {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_METRIC_EXPORT_INTERVAL"}
    after["spec"]["template"]["spec"]["containers"][0]["env"] = env_before
    assert after == before
    # The API server took it as shipped: the DaemonSet's pod runs the manifest's
    # capabilities, mounts and host namespaces.
    pod = cluster.agent_pod()
    spec = pod["spec"]
    assert spec["hostPID"] and spec["hostNetwork"] and spec["nodeName"] == NODE_NAME
    caps = spec["containers"][0]["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"]}
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("DaemonSet", "otel-pagecache")


def test_misses_match_each_cold_file(cluster):
    for key in ("reader", "bare"):
        w = cluster.workloads[key]
        # Known to the agent (a residency series) before the read is triggered.
        _wait_series(cluster, "pagecache_memcg_usage_bytes", container_id=w.container_id)
        before = _misses(cluster, w.container_id)
        (w.directory / "go").touch()
        deadline = time.monotonic() + scaled(90)
        while _misses(cluster, w.container_id) - before < w.pages * 0.98:
            assert time.monotonic() < deadline, (
                f"{key}: misses {_misses(cluster, w.container_id) - before} of {w.pages}\n"
                + cluster.diagnosis()
            )
            time.sleep(0.5)
        delta = _misses(cluster, w.container_id) - before
        assert abs(delta - w.pages) <= 0.02 * w.pages, (key, delta, w.pages)


def test_workload_series_carry_k8sattributes(cluster):
    for key in ("reader", "bare"):
        w = cluster.workloads[key]
        series = _wait_series(cluster, "pagecache_misses_total", container_id=w.container_id)
        expected = {
            "k8s_pod_name": w.pod_name,
            "k8s_namespace_name": cluster.namespace,
            "k8s_container_name": "reader",
            "k8s_node_name": NODE_NAME,
            "k8s_pod_uid": w.pod["metadata"]["uid"],
        }
        if key == "reader":
            expected["k8s_deployment_name"] = "reader"
        _example(f"prometheus-{key}.json", series)
        for s in series:
            labels = s["metric"]
            assert {k: labels.get(k) for k in expected} == expected, labels
            if key == "bare":
                assert "k8s_deployment_name" not in labels, labels


def test_the_agent_names_its_own_container(cluster):
    pod = cluster.agent_pod()
    status = pod["status"]["containerStatuses"][0]
    cid = status["containerID"].split("://", 1)[1]
    series = _wait_series(cluster, "pagecache_memcg_usage_bytes", container_id=cid)
    labels = series[0]["metric"]
    expected = {
        "container_id": cid,
        "container_name": "otel-pagecache",
        "k8s_pod_uid": pod["metadata"]["uid"],
        "container_image_name": IMAGE.rsplit(":", 1)[0],
        "pagecache_cgroup_kind": "container",
        # and from k8sattributes:
        "k8s_pod_name": pod["metadata"]["name"],
        "k8s_namespace_name": "observability",
        "k8s_daemonset_name": "otel-pagecache",
        "app": "otel-pagecache",  # agent.yaml's label extraction (app.kubernetes.io/name)
    }
    assert {k: labels.get(k) for k in expected} == expected, labels


def test_a_pods_sandbox_is_kind_sandbox(cluster):
    """The pause container's cgroup sits beside the app container's, in the same
    path shape. From containerd's on-disk state (the directory the DaemonSet mounts)
    the agent's own Enricher calls it a sandbox, without a container id; and the
    shipped agent (--containers-only) exports no series for it."""
    w = cluster.workloads["reader"]
    uid = w.pod["metadata"]["uid"]
    app = _wait_series(cluster, "pagecache_memcg_usage_bytes", container_id=w.container_id)
    app_path = app[0]["metric"]["pagecache_cgroup_path"]
    pod_dir = Path("/sys/fs/cgroup/memory") / app_path.lstrip("/")
    sandboxes = [d for d in pod_dir.parent.iterdir() if d.is_dir() and d.name != w.container_id]
    assert len(sandboxes) == 1, sandboxes
    sandbox_path = f"{Path(app_path).parent}/{sandboxes[0].name}"
    root = cluster.node.state / "root"
    enricher = Enricher(
        refresh_seconds=0,
        pod_log_root=str(root / "var" / "log" / "pods"),
        containerd_state_root=str(root / "run" / "containerd"),
    )
    sandbox = enricher.enrich(identify(sandbox_path))
    attributes = sandbox.resource_attributes()
    assert attributes["pagecache.cgroup.kind"] == "sandbox", attributes
    assert attributes["k8s.pod.uid"] == uid and "container.id" not in attributes, attributes
    app_identity = enricher.enrich(identify(app_path))
    assert app_identity.kind == "container" and app_identity.container_id == w.container_id
    assert enricher.take_read_errors() == 0
    exported = _series(cluster.prometheus, "pagecache_memcg_usage_bytes",
                       pagecache_cgroup_path=sandbox_path)  # fmt: skip
    assert (
        exported == []
        and _series(
            cluster.prometheus, "pagecache_memcg_usage_bytes", container_id=sandboxes[0].name
        )
        == []
    )


def test_a_stall_span_reaches_jaeger_under_the_pods_resource(cluster):
    w = cluster.workloads["stall"]
    since = time.time()
    (w.directory / "go").touch()

    def stalled(spans: list) -> bool:
        return any(s.name == STALL and s.resource.get("container.id") == w.container_id
                   for s in spans)  # fmt: skip

    spans = cluster.jaeger.wait_for_spans("otel-pagecache", since - 5, stalled, timeout=scaled(120))
    stall = next(s for s in spans if stalled([s]))
    _example("jaeger-stall-trace.json", cluster.jaeger.trace(stall.trace_id))
    expected = {
        "k8s.pod.name": w.pod_name,
        "k8s.pod.uid": w.pod["metadata"]["uid"],
        "k8s.namespace.name": cluster.namespace,
        "k8s.container.name": "reader",
    }
    assert {k: stall.resource.get(k) for k in expected} == expected, stall.resource


def _last_sample(cluster: Cluster, container_id: str) -> float:
    """The newest sample time (s) of any series of the container, every metric: a range
    selector answers the samples themselves with their times (timestamp() would drop
    the metric names and collide)."""
    result = cluster.prometheus.query(f'{{container_id="{container_id}"}}[5m]')
    return max((float(t) for s in result for t, _ in s.get("values", [])), default=0.0)


def test_a_deleted_pods_series_get_no_new_sample(cluster):
    w = cluster.workloads["bare"]
    _wait_series(cluster, "pagecache_memcg_usage_bytes", container_id=w.container_id)
    cluster.node.kubectl("delete", "pod", "-n", cluster.namespace, w.name, "--wait=true",
                         "--timeout=60s")  # fmt: skip
    gone = time.time()
    quiet = INTERVAL_S + BATCH_TIMEOUT_S
    # Nothing to wait on for an absence: one interval plus the batch timeout, then as
    # long again to see that nothing newer arrives.
    time.sleep(2 * quiet + 1)
    last = _last_sample(cluster, w.container_id)
    assert 0 < last <= gone + quiet, (last - gone, cluster.diagnosis())


def _container_pids(cgroup_path: str) -> set[int]:
    procs = Path("/sys/fs/cgroup/memory") / cgroup_path.lstrip("/") / "cgroup.procs"
    return {int(p) for p in procs.read_text().split()}


def test_the_agent_pod_restarts_cleanly(cluster):
    old = cluster.agent_pod()
    old_cid = old["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    series = _wait_series(cluster, "pagecache_memcg_usage_bytes", container_id=old_cid)
    old_pids = _container_pids(series[0]["metric"]["pagecache_cgroup_path"])
    held: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    for pid in old_pids:
        for kind, ids in bpf_objects_of(pid).items():
            held[kind] |= ids
    assert held["prog"], f"no BPF program held by the agent's pids {old_pids}"
    cluster.node.kubectl("delete", "pod", "-n", "observability", old["metadata"]["name"],
                         "--wait=true", "--timeout=60s")  # fmt: skip
    new = _wait_running(cluster.node, "observability",
                        ["-l", "app.kubernetes.io/name=otel-pagecache"], scaled(60))  # fmt: skip
    started = time.time()
    new_cid = new["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    assert new_cid != old_cid
    _wait_series(cluster, "pagecache_memcg_usage_bytes", timeout=30, container_id=new_cid)
    exported_within = time.time() - started
    live = live_bpf_ids()
    left = {kind: sorted(ids & live[kind]) for kind, ids in held.items() if ids & live[kind]}
    assert not left, f"BPF objects of the old agent pod still there: {left}"
    assert exported_within <= 30
