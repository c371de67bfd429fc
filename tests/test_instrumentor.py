"""The in-process plugin under the real ``opentelemetry-instrument``, exporting to OTLP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.agent_process import run_instrumented_app
from tests.conftest import make_cold_file
from tests.peers.otlp_receiver import iter_points, iter_spans

APP = Path(__file__).with_name("apps") / "cold_read_app.py"
MIB = 1 << 20


def _run_app(directory: Path, cold: Path, receiver, **extra_env: str) -> None:
    run_instrumented_app(
        APP,
        cold,
        endpoint=receiver.grpc_endpoint,
        service="cold-read-app",
        cgroup=directory,
        OTEL_METRIC_EXPORT_INTERVAL="60000",
        **extra_env,
    )


def test_spans_carry_thread_figures_and_residency_names_the_container(
    memcgs, data_dir, otlp_receiver
):
    container_id, path, directory = memcgs.create_container()
    cold = make_cold_file(data_dir / "cold-8m", 8 * MIB)
    _run_app(directory, cold, otlp_receiver)

    spans = {s.name: s for s in iter_spans(otlp_receiver.trace_requests())}
    read = spans["read-cold"]
    # The thread read the whole cold file from storage while the span ran.
    assert 8 * MIB <= read.attributes["pagecache.thread.read_bytes"] <= 9 * MIB
    assert read.attributes["pagecache.thread.major_faults"] >= 0
    assert read.attributes["thread.id"] > 0
    handed = spans["handed-off"]
    assert "pagecache.thread.read_bytes" not in handed.attributes  # ended elsewhere
    assert read.resource["service.name"] == "cold-read-app"

    usage = [
        p for p in iter_points(otlp_receiver.metrics_requests()) if p.metric == "pagecache.usage"
    ]
    assert usage, "process residency exported"
    attrs = usage[0].attributes
    assert attrs["pagecache.reporter"] == "process"
    assert attrs["container.id"] == container_id
    assert attrs["pagecache.cgroup.path"] == path
    assert {p.attributes["pagecache.state"] for p in usage} == {"active", "inactive"}
    # Only its own memcg: one cgroup path in everything it exported.
    paths = {
        p.attributes.get("pagecache.cgroup.path")
        for p in iter_points(otlp_receiver.metrics_requests())
        if p.metric.startswith("pagecache.")
    }
    assert paths == {path}


def test_disabled_through_the_standard_variable(memcgs, data_dir, otlp_receiver):
    path, directory = memcgs.create()
    cold = make_cold_file(data_dir / "cold-1m", MIB)
    _run_app(directory, cold, otlp_receiver, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="pagecache")
    spans = list(iter_spans(otlp_receiver.trace_requests()))
    assert spans and all("pagecache.thread.read_bytes" not in s.attributes for s in spans)
    names = {p.metric for p in iter_points(otlp_receiver.metrics_requests())}
    assert not {n for n in names if n.startswith("pagecache.")}


# The node agent's export path: none of it belongs in an instrumented application.
AGENT_EXPORT_PATH = (
    "agent",
    "cli",
    "container_resources",
    "endpoint",
    "log_rate_limit",
    "metric_export",
    "metric_regrouping",
    "otlp_bulk",
    "otlp_transport",
    "pipeline",
    "prometheus_bulk",
    "span_delivery",
    "span_export",
)

FOOTPRINT_APP = """
import json, sys
from opentelemetry import trace
from otel_pagecache.instrumentor import PageCacheInstrumentor
plugin = PageCacheInstrumentor()  # the instance opentelemetry-instrument made
with trace.get_tracer("t").start_as_current_span("work"):
    pass
print(json.dumps({
    "wrapped": plugin.is_instrumented_by_opentelemetry and plugin._processor is not None,
    "modules": sorted(m for m in sys.modules if m.startswith("otel_pagecache")),
}))
"""


def test_the_plugin_loads_nothing_of_the_agents_export_path():
    """A fresh interpreter under ``opentelemetry-instrument``: the plugin loaded, wrapped
    the SDK's span processors and started process residency, with none of the agent's
    bulk encoder, transport or exporter modules imported."""
    package = Path(__file__).resolve().parent.parent / "otel_pagecache"
    for name in AGENT_EXPORT_PATH:  # a renamed module must not leave this test vacuous
        assert (package / f"{name}.py").is_file(), name
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    result = subprocess.run(
        [str(instrument), sys.executable, "-c", FOOTPRINT_APP],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["wrapped"], result.stderr
    assert "otel_pagecache.instrumentor" in report["modules"]
    loaded = {f"otel_pagecache.{name}" for name in AGENT_EXPORT_PATH} & set(report["modules"])
    assert not loaded, f"the plugin imports the agent's export path: {sorted(loaded)}"
