"""collector-config/: the Collector YAMLs validated by the real collector, the rotel invocation run.

Every collector YAML passes ``validate`` of the collector built from
collector-config/builder.yaml (scripts/build-peers), and the house rules the
collector does not enforce: every defined component used, memory_limiter first,
batch last. agent.yaml also runs end to end in tests/test_pipeline.py.
rotel.env is started as it ships (only the listening ports and the backends are
pointed at loopback) and carries the in-process plugin's spans and metrics to
the OTLP receiver.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.agent_process import run_instrumented_app
from tests.conftest import make_cold_file
from tests.peers import free_port, go_peer_binary, stop_process, wait_for_port
from tests.peers.otelcol import validate
from tests.peers.otlp_receiver import iter_points, iter_spans
from tests.peers.rotel import rotel_binary

CONFIG = Path(__file__).resolve().parent.parent / "collector-config"
APP = Path(__file__).with_name("apps") / "cold_read_app.py"
SECTIONS = ("receivers", "processors", "exporters", "extensions", "connectors")
# Collector configs (builder.yaml is the Collector Builder's manifest, rotel.env not YAML).
COLLECTOR_CONFIGS = sorted(p.name for p in CONFIG.glob("*.yaml") if p.name != "builder.yaml")


def _load(name: str) -> dict:
    with open(CONFIG / name) as f:
        return yaml.safe_load(f)


def test_every_collector_config_is_checked():
    assert COLLECTOR_CONFIGS == ["agent.yaml", "minimal.yaml"]


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_the_built_collector_validates_the_config(name):
    result = validate(go_peer_binary("otelcol"), CONFIG / name)
    assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


def test_the_built_collector_rejects_a_broken_config(tmp_path):
    # validate really checks: a processor type that the distribution lacks fails.
    broken = tmp_path / "broken.yaml"
    config = _load("minimal.yaml")
    config["processors"]["no_such_processor"] = {}
    config["service"]["pipelines"]["traces"]["processors"].append("no_such_processor")
    broken.write_text(yaml.safe_dump(config))
    result = validate(go_peer_binary("otelcol"), broken)
    assert result.returncode != 0
    assert "no_such_processor" in result.stdout + result.stderr


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_collector_config_is_complete_and_consistent(name):
    config = _load(name)
    defined = {section: set((config.get(section) or {}).keys()) for section in SECTIONS}
    service = config["service"]
    used = {section: set() for section in SECTIONS}
    used["extensions"] = set(service.get("extensions", []))
    assert service["pipelines"], f"{name}: no pipelines"
    for pipeline_name, pipeline in service["pipelines"].items():
        assert pipeline_name.split("/", 1)[0] in ("traces", "metrics", "logs")
        assert pipeline.get("receivers"), f"{name}: {pipeline_name} has no receiver"
        assert pipeline.get("exporters"), f"{name}: {pipeline_name} has no exporter"
        processors = pipeline.get("processors", [])
        if "memory_limiter" in processors:
            assert processors[0] == "memory_limiter", f"{name}: memory_limiter must come first"
        if "batch" in processors:
            assert processors[-1] == "batch", f"{name}: batch belongs last"
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in defined[section], f"{name}: {component} used, not defined"
                used[section].add(component)
    for section in SECTIONS:
        assert defined[section] == used[section], f"{name}: {section} defined but unused"


def test_agent_config_associates_per_container_resources():
    config = _load("agent.yaml")
    association = config["processors"]["k8sattributes"]["pod_association"]
    sources = [s["name"] for rule in association for s in rule["sources"]]
    assert sources == ["k8s.pod.uid", "container.id"]
    remote_write = config["exporters"]["prometheusremotewrite"]
    assert remote_write["resource_to_telemetry_conversion"]["enabled"] is True


def _rotel_env(receiver_endpoint: str) -> tuple[dict[str, str], int]:
    env = {}
    for line in (CONFIG / "rotel.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    port = free_port()
    env.update(
        ROTEL_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{port}",
        ROTEL_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{free_port()}",
        ROTEL_OTLP_EXPORTER_ENDPOINT=receiver_endpoint,
        ROTEL_OTLP_EXPORTER_TRACES_ENDPOINT=receiver_endpoint,
        ROTEL_OTLP_EXPORTER_METRICS_ENDPOINT=receiver_endpoint,
    )
    return env, port


def test_rotel_invocation_carries_spans_and_metrics(memcgs, data_dir, otlp_receiver, tmp_path):
    rotel_env, port = _rotel_env(otlp_receiver.grpc_endpoint)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
    log = open(tmp_path / "rotel.log", "wb")  # noqa: SIM115 - closed below
    rotel = subprocess.Popen(
        [str(rotel_binary()), "start"], env={**clean, **rotel_env}, stdout=log, stderr=log
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=15, proc=rotel)
        container_id, _, directory = memcgs.create_container()
        cold = make_cold_file(data_dir / "cold-2m", 2 << 20)
        run_instrumented_app(
            APP,
            cold,
            endpoint=f"http://127.0.0.1:{port}",
            service="through-rotel",
            cgroup=directory,
            base_env=clean,
        )
        otlp_receiver.wait_for_traces(
            lambda reqs: any(s.name == "read-cold" for s in iter_spans(reqs)), timeout=20
        )
        otlp_receiver.wait_for_metrics(
            lambda reqs: any(p.metric == "pagecache.usage" for p in iter_points(reqs)), timeout=20
        )
    finally:
        stop_process(rotel)
        log.close()
    span = next(s for s in iter_spans(otlp_receiver.trace_requests()) if s.name == "read-cold")
    assert span.attributes["pagecache.thread.read_bytes"] >= 2 << 20
    assert span.resource["service.name"] == "through-rotel"
    usage = next(
        p for p in iter_points(otlp_receiver.metrics_requests()) if p.metric == "pagecache.usage"
    )
    assert usage.attributes["container.id"] == container_id
