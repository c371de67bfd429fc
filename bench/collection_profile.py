"""Where one collection cycle's CPU and memory go: ``bench/collection.py --profile``.

Runs the agent's own cycle in this process: an ``Agent`` built from the
environment as ``otel-pagecache run`` builds it (CO-RE engine attached, OTLP
exporter pointed at a closed port, its loop asleep), and its pipeline's
collection consumed request by request as the loop does, without sending.
Per N (memcgs created as ``bench/collection.py`` creates them) it prints:

- memory: tracemalloc's traced total after a cycle and at the cycle's peak,
  and the largest owners (file:line of the allocation) after a cycle;
- CPU per cycle without a profiler (process time, every thread), then the
  cycle's parts from cProfile (cumulative time of the functions that make
  it up, as a share of the profiled cycle, since the profiler inflates all).
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

# (label, function name, file suffix): cumulative time of each, per cycle.
PARTS = (
    ("residency read (all of it)", "read", "residency.py"),
    ("  tree walk / rescans", "entries", "cgroupfs.py"),
    ("  size pass: open dir, fstat, usage", "read_size", "memstat.py"),
    ("  memory.stat + limit + failcnt of the kept", "read_memcg", "memstat.py"),
    ("  identities (identify, enrich, pause)", "_identity", "residency.py"),
    ("  /proc/meminfo", "read_meminfo", "memstat.py"),
    ("activity: BPF maps joined by memcg", "update", "activity.py"),
    ("own metrics: SDK collect + encode", "_own_metrics", "pipeline.py"),
    ("bulk: series settled", "_settle", "otlp_bulk.py"),
    ("bulk: points framed", "_frame", "otlp_bulk.py"),
    ("requests joined", "requests", "otlp_bulk.py"),
)


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _agent(cap: int):
    os.environ.update(
        {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            "OTEL_METRIC_EXPORT_INTERVAL": str(24 * 3600 * 1000),
            "OTEL_PAGECACHE_MAX_CGROUPS": str(cap),
        }
    )
    from otel_pagecache.agent import Agent
    from otel_pagecache.config import Settings

    return Agent(Settings.from_env())


def _cycle(agent) -> None:
    # What the export loop does, minus the network: one snapshot, the
    # requests framed one at a time.
    agent.source._snapshot = None  # a fresh snapshot every cycle
    for _body in agent.pipelines[0]._collect():
        pass


def profile_once(n: int) -> None:
    tracemalloc.start()
    agent = _agent(n)
    try:
        _cycle(agent)
        _cycle(agent)
        gc.collect()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        _cycle(agent)
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
        owners = tracemalloc.take_snapshot().statistics("lineno")[:14]
        tracemalloc.stop()
        print(
            f"  memory (tracemalloc): {before / 2**20:.1f} MiB before a cycle, peak "
            f"{peak / 2**20:.1f} MiB within it, {after / 2**20:.1f} MiB after; "
            "largest owners after a cycle:"
        )
        for stat in owners:
            frame = stat.traceback[0]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            print(f"    {stat.size / 2**20:6.2f} MiB {stat.count:>7} blocks  {where}")

        cycles = 5
        start = time.process_time()
        for _ in range(cycles):
            _cycle(agent)
        cpu = (time.process_time() - start) / cycles
        gc.collect()
        print(
            f"  CPU per cycle (no profiler, process time): {cpu * 1e3:.0f} ms; "
            f"RSS {_status_mib('VmRSS'):.1f} MiB, peak {_status_mib('VmHWM'):.1f} MiB "
            "(this process: tracemalloc ran earlier)"
        )
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(2):
            _cycle(agent)
        profiler.disable()
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items()) / 2
        print(f"  parts (cProfile, {total * 1e3:.0f} ms per profiled cycle):")
        for label, name, suffix in PARTS:
            cum = sum(
                ct
                for (filename, _, func), (_, _, _, ct, _) in stats.items()
                if func == name and filename.endswith(suffix)
            )
            print(f"    {label:<44} {cum / 2 * 1e3:7.1f} ms  {cum / 2 / total:6.1%}")
    finally:
        agent.stop()


def profile_main(sizes: list[int], shape: str) -> int:
    from collection import grow

    from otel_pagecache.cgroupfs import find_memory_hierarchy, own_cgroup_path, walk

    if os.geteuid() != 0:
        print("run as root: it creates memory cgroups", file=sys.stderr)
        return 2
    hierarchy = find_memory_hierarchy()
    parent = Path(hierarchy.directory(own_cgroup_path(hierarchy.version)))
    bench_root = parent / f"otel-pagecache-bench-{uuid.uuid4().hex[:6]}"
    bench_root.mkdir()
    created: list[Path] = []
    try:
        for n in sizes:
            grow(bench_root, created, n, shape)
            walked = len(walk(hierarchy))
            print(f"{n} {shape}-shaped memcgs ({walked} walked), cap {n}:", flush=True)
            profile_once(n)
    finally:
        for d in reversed(created):
            d.rmdir()
        bench_root.rmdir()
    return 0
