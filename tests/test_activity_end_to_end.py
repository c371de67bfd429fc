"""The agent process with its BPF probes: activity over OTLP, and a clean detach."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from otel_pagecache.probes.bcc import _kprobe_hook, bcc_available
from otel_pagecache.probes.btf_offsets import KernelBtf
from otel_pagecache.probes.core import PROGRAMS, choose_programs
from tests.agent_process import AgentProcess
from tests.conftest import make_cold_file
from tests.kernel_features import EXACT_COLD_READ, skip_unless_lookups, skipped_program_runs
from tests.pace import scaled
from tests.peers.otlp_receiver import iter_points


def _expected_programs() -> dict[str, set[str]]:
    """The activity programs each engine attaches on this kernel (its BTF
    decides: probes/core.py choose_programs), stall programs aside."""
    with KernelBtf() as btf:
        choice = choose_programs(btf.params)
    counters = {
        p
        for p in choice.tracepoint_programs
        if p in ("on_add_to_page_cache", "on_delete_from_page_cache") or p.startswith("on_dirty_")
    }
    hook = choice.lookup_hooks[0] if choice.lookup_hooks else None
    core = counters | set(hook.programs if hook else ())
    # BCC names each program after its raw tracepoint, and serves lookups from
    # the 6.12 tracepoints, else from kprobes on the functions the CO-RE
    # engine's kprobe hook names.
    bcc = {f"raw_tracepoint__{PROGRAMS[p].split(':')[1]}" for p in counters}
    if hook is not None and hook.code == "tracepoint":
        bcc |= {f"raw_tracepoint__{PROGRAMS[p].split(':')[1]}" for p in hook.programs}
    else:
        bcc |= {program for _, program in _kprobe_hook(choice.lookup_hooks)}
    return {"core": core, "bcc": bcc}


MIB = 1 << 20


def _program_ids(engine: str) -> set[int]:
    out = subprocess.run(
        ["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True
    ).stdout
    # Older bpftool shows names cut to 15 characters (BPF_OBJ_NAME_LEN - 1).
    expected = _expected_programs()[engine]
    names = expected | {name[:15] for name in expected}
    return {p["id"] for p in json.loads(out) if p.get("name") in names}


@pytest.mark.kernel
@pytest.mark.parametrize("engine", ["core", "bcc"])
def test_activity_exported_per_container_and_programs_detached_on_sigterm(
    memcgs, data_dir, otlp_receiver, tmp_path, engine
):
    if engine == "bcc" and not bcc_available():
        pytest.skip("BCC's Python module (python3-bpfcc) is not installed")
    skip_unless_lookups()  # it waits for the lookups of a read
    our_programs = _expected_programs()[engine]
    container_id, path, directory = memcgs.create_container()
    worker = memcgs.worker(directory)
    cold = make_cold_file(data_dir / "cold-16m", 16 * MIB)
    pages = 16 * MIB // 4096
    before = _program_ids(engine)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_PAGECACHE_TOP_FILES": "3",
    }
    with AgentProcess(["run", "--engine", engine, "--include", path], env, tmp_path) as agent:
        deadline = time.monotonic() + scaled(30)
        while (
            len(_program_ids(engine) - before) < len(our_programs)
            and time.monotonic() < deadline
            and agent.running()
        ):
            time.sleep(0.1)
        attached = _program_ids(engine) - before
        assert len(attached) == len(our_programs), agent.log()
        # An export names the container: the agent has taken a snapshot with
        # its memcg (the baseline) before the workload.
        otlp_receiver.wait_for_metrics(
            lambda r: any(p.resource.get("container.id") == container_id for p in iter_points(r)),
            timeout=30,
        )
        skipped_before = skipped_program_runs()
        worker.do("read", cold, EXACT_COLD_READ)

        def has_lookups(requests):
            counted = [
                p.value
                for p in iter_points(requests)
                if p.metric == "pagecache.lookups"
                and p.resource.get("container.id") == container_id
            ]
            if not counted:
                return False
            # All the pages, less one per run the kernel says it skipped (below).
            short = pages - max(counted)
            return short <= 0 or short <= skipped_program_runs() - skipped_before

        requests = otlp_receiver.wait_for_metrics(has_lookups, timeout=120)
        skipped = skipped_program_runs() - skipped_before
        assert agent.terminate() == 0, agent.log()

    # No program of ours is left once the agent has stopped (freeing is
    # asynchronous in the kernel: allow it a moment).
    deadline = time.monotonic() + scaled(5)
    while _program_ids(engine) & attached and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _program_ids(engine) & attached

    mine = [p for p in iter_points(requests) if p.resource.get("container.id") == container_id]
    latest = {}
    for p in mine:
        key = (p.metric, tuple(sorted(p.attributes.items())))
        if p.time_unix_nano >= latest.get(key, (0, None))[0]:
            latest[key] = (p.time_unix_nano, p)
    by_metric = {}
    for (metric, _), (_, p) in latest.items():
        by_metric.setdefault(metric, []).append(p)
    # A kernel that preempts programs on tracepoints (7.x) skips an event whose
    # program is already running on that CPU and says so (recursion_misses):
    # a skipped read loses its one page, a skipped insertion its folio, up to
    # a PMD's 512 pages. Nothing else may be missing.
    counters = ("pagecache.lookups", "pagecache.misses", "pagecache.insertions")
    counts = {m: by_metric[m][0].value for m in counters}
    why = (counts, f"{skipped} program runs skipped by the kernel during the read")
    print(f"\nACTIVITY {engine} {pages} pages: {why}")  # with pytest -s
    assert pages - skipped <= counts["pagecache.lookups"] <= pages, why
    assert by_metric["pagecache.lookups"][0].unit == "{page}"
    assert by_metric["pagecache.lookups"][0].is_monotonic
    assert pages - 512 * skipped <= counts["pagecache.misses"] <= pages + 64, why
    assert pages - 512 * skipped <= counts["pagecache.insertions"] <= pages + 64, why
    reasons = {p.attributes["pagecache.removal.reason"] for p in by_metric["pagecache.removals"]}
    assert reasons == {"eviction", "invalidation"}
    assert by_metric["pagecache.hit_ratio"][0].unit == "1"
    files = by_metric["pagecache.file.usage"]
    st = cold.stat()
    match = [f for f in files if f.attributes["file.inode"] == str(st.st_ino)]
    assert match and match[0].unit == "By"
    assert (
        match[0].attributes["pagecache.file.device"]
        == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    )
    assert "file.path" not in match[0].attributes  # not opted in
    # The agent's own BPF health metrics, on the base resource.
    names = {p.metric for p in iter_points(requests) if "container.id" not in p.resource}
    assert {"pagecache.agent.bpf.map.fill", "pagecache.agent.bpf.lost"} <= names
    own = [p for p in iter_points(requests) if p.metric == "pagecache.agent.collection.duration"]
    assert own[-1].attributes["pagecache.engine"] == engine
    assert own[-1].attributes["pagecache.attribution"] == "owner"
    hooks = choose_programs(KernelBtf().params).lookup_hooks
    assert own[-1].attributes["pagecache.lookup_hook"] in {h.code for h in hooks}
    assert own[-1].attributes["pagecache.engine.reason"] == "requested"
