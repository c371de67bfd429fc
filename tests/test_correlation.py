"""A kernel stall span links to the application span its thread was running.

The application runs under ``opentelemetry-instrument`` with the plugin, in
a memory cgroup with a 48 MiB limit, and reads a 128 MiB cold file inside
span "read-big", which it opens at once: its thread stalls in memcg reclaim.
The node agent's stall spans for that thread must carry a link to "read-big"
(same trace and span id), read by the BPF program from the plugin's span
slot at the stall's start, from the first stall on (all but one at most).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_pagecache.probes.bcc import bcc_available
from tests.agent_process import (
    AgentProcess,
    limit_memcg,
    run_instrumented_app,
    stall_agent_env,
    stalls_on_span,
    wait_for_log,
)
from tests.conftest import make_cold_file
from tests.kernel_features import skip_if_lacking
from tests.peers.otlp_receiver import iter_spans

APP = Path(__file__).with_name("apps") / "stall_app.py"
MIB = 1 << 20


@pytest.mark.parametrize(
    ("engine", "own_pid_namespace"),
    [
        ("core", False),
        pytest.param("core", True, marks=pytest.mark.kernel),
        pytest.param("bcc", False, marks=pytest.mark.kernel),
        ("bcc", True),
    ],
    ids=["core-host-pids", "core-own-pid-ns", "bcc-host-pids", "bcc-own-pid-ns"],
)
def test_stall_span_links_to_the_application_span(
    memcgs, data_dir, otlp_receiver, tmp_path, engine, own_pid_namespace
):
    if engine == "bcc" and not bcc_available():
        pytest.skip("BCC's Python module (python3-bpfcc) is not installed")
    skip_if_lacking(("vmscan:mm_vmscan_memcg_reclaim_begin",), "memcg reclaim stall spans")
    container_id, path, directory = memcgs.create_container()
    limit_memcg(directory, 48 * MIB)
    cold = make_cold_file(data_dir / "cold-128m", 128 * MIB)
    agent_env = stall_agent_env(otlp_receiver, OTEL_METRICS_EXPORTER="none")
    with AgentProcess(["run", "--engine", engine, "--include", path], agent_env, tmp_path) as agent:
        wait_for_log(agent, "stall spans:")
        # In its own PID namespace (as in a container) the app sees itself as
        # pid 1: the registry, the slots and its spans use those numbers.
        run_instrumented_app(
            APP,
            cold,
            endpoint=otlp_receiver.grpc_endpoint,
            service="stalling-app",
            cgroup=directory,
            prefix=("unshare", "--pid", "--fork") if own_pid_namespace else (),
            OTEL_METRICS_EXPORTER="none",
        )

        def linked(requests):
            return any(
                s.name == "pagecache.stall.memcg_reclaim" and s.links for s in iter_spans(requests)
            )

        otlp_receiver.wait_for_traces(linked, timeout=30)
        assert agent.terminate() == 0, agent.log()

    spans = list(iter_spans(otlp_receiver.trace_requests()))
    app_span = next(s for s in spans if s.name == "read-big")
    stalls = [
        s
        for s in spans
        if s.name == "pagecache.stall.memcg_reclaim"
        and s.resource.get("container.id") == container_id
    ]
    # The app opened its span at once: its slots must be known from its first
    # stall (the kernel records the slots the plugin's announcement carries,
    # whatever the agent is doing), so every stall of its thread while the
    # span ran is linked but one at most: one that began between the span's
    # start time and the plugin's writing its slot (one Python call).
    during = stalls_on_span(stalls, app_span)
    linked = [s for s in stalls if s.links]
    assert during, stalls
    unlinked = len([s for s in during if not s.links])
    assert unlinked <= 1, f"{unlinked} of {len(during)} stall spans not linked"
    for stall in linked:
        (link,) = stall.links
        assert (link.trace_id, link.span_id) == (app_span.trace_id, app_span.span_id)
        assert stall.attributes["thread.id"] == app_span.attributes["thread.id"]
        # The stall happened while the application span ran.
        assert app_span.start_time_unix_nano <= stall.start_time_unix_nano
        assert stall.end_time_unix_nano <= app_span.end_time_unix_nano
        if own_pid_namespace:
            assert stall.attributes["process.pid"] == 1 == app_span.attributes["process.pid"]
            assert stall.attributes["pagecache.host.pid"] != 1
