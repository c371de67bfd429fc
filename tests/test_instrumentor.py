"""The in-process plugin under the real ``opentelemetry-instrument``, exporting to OTLP."""

from __future__ import annotations

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
