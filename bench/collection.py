"""Collection-cycle cost vs number of memory cgroups, on the real kernel.

Creates N empty memory cgroups beneath this process's own cgroup (N = 10,
1000, 10000 by default), shaped as a Kubernetes node's (``--shape k8s``, the
default: kubepods.slice / QoS slice / pod slice / one sandbox and two
container scopes per pod, ``cri-containerd-<64 hex>.scope``) or flat
(``--shape flat``), then measures, in CPU time per cycle:

- floor: bare os.open/os.read/os.close of every file one cycle reads (all memcg
  files of every cgroup the walk finds, plus /proc/meminfo), nothing else;
- read+parse: ResidencyReader.read() -- the same reads, parsing, v2
  subtraction, identities, selection; "steady" is a cycle between full walks
  of the hierarchy (directories are listed again only when their link count
  changed), "full walk" lists every directory as well (every 30 s by default);
- encode: what the agent's push loop does with that snapshot (the SDK
  collecting the agent's own metrics, the direct encoder building the
  per-container bulk, requests split under 1 MiB; no network);
- agent: a real ``otel-pagecache run`` process (defaults: CO-RE activity
  engine attached) exporting over OTLP/gRPC to a loopback receiver, at each
  N: its CPU time per export cycle (utime+stime from /proc over several
  cycles, after warm-up), its RSS and peak RSS, and the requests per cycle
  and largest request it sent. Targets (issue 11): ≤ 100 ms per cycle at
  1,000 memcgs, ≤ 1 s at 10,000; RSS ≤ 100 MiB at 10,000.

Run as root: ``.venv/bin/python bench/collection.py [N ...] [--baseline DIR]``
(default 10 1000 10000; ``--baseline`` also runs another checkout's agent,
e.g. the commit before the direct encoder, for a before/after in one run).
Prints a table. ``--profile`` instead runs the agent's cycle in this process
(``Agent``, CO-RE engine attached, nothing sent) at each N and prints where
the CPU goes (cProfile, the cycle's parts) and who owns the memory
(tracemalloc, after a cycle and at its peak). Removes every cgroup it
created, also on Ctrl-C. CPU figures are inflated by whatever else the
machine runs; the cgroups other jobs create are walked too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_pagecache.cgroupfs import find_memory_hierarchy, own_cgroup_path, walk  # noqa: E402
from otel_pagecache.metric_export import own_reader  # noqa: E402
from otel_pagecache.metric_regrouping import ResourceSplitter  # noqa: E402
from otel_pagecache.metrics import AgentMetrics  # noqa: E402
from otel_pagecache.otlp_bulk import BulkEncoder  # noqa: E402
from otel_pagecache.pipeline import MetricsPipeline  # noqa: E402
from otel_pagecache.residency import ResidencyReader, Selection, SnapshotSource  # noqa: E402

V1_FILES = ("memory.stat", "memory.usage_in_bytes", "memory.limit_in_bytes", "memory.failcnt")
V2_FILES = ("memory.stat", "memory.current", "memory.max", "memory.events.local", "memory.pressure")


def cpu() -> float:
    return time.thread_time()


def floor_cycle(paths: list[str]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.read(fd, 65536)
        finally:
            os.close(fd)


def measure(fn, repeat: int) -> float:
    fn()  # warm caches (dentries, code paths)
    best = float("inf")
    for _ in range(3):
        start = cpu()
        for _ in range(repeat):
            fn()
        best = min(best, (cpu() - start) / repeat)
    return best


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def agent_figures(
    max_cgroups: int, interval_ms: int, cycles: int = 5, checkout: str | None = None
) -> dict:
    """A real agent exporting to a loopback OTLP/gRPC receiver: CPU per export
    cycle (counted by the agent's own collection.duration point), RSS."""
    import threading

    from tests.peers.otlp_receiver import OtlpReceiver

    lock = threading.Condition()
    seen = {"cycles": 0, "requests": 0, "largest": 0}

    def on_request(received) -> None:
        if received.signal != "metrics":
            return
        size = received.request.ByteSize()
        # One point of this metric per cycle, whatever the request order.
        first = any(
            m.name == "pagecache.agent.collection.duration"
            for rm in received.request.resource_metrics
            if not any(kv.key == "pagecache.cgroup.id" for kv in rm.resource.attributes)
            for sm in rm.scope_metrics
            for m in sm.metrics
        )
        with lock:
            seen["requests"] += 1
            seen["largest"] = max(seen["largest"], size)
            seen["cycles"] += first
            lock.notify_all()

    receiver = OtlpReceiver(on_request=on_request).start()
    env = {
        **os.environ,
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms),
        "OTEL_PAGECACHE_MAX_CGROUPS": str(max_cgroups),
    }
    if checkout is not None:  # the agent of another checkout, e.g. the baseline commit
        env["PYTHONPATH"] = checkout
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the process, in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_pagecache.cli", "run"],
        env=env,
        cwd=checkout,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )

    def wait_cycles(n: int) -> None:
        deadline = time.monotonic() + 300 + n * interval_ms / 1000 * 4
        with lock:
            while seen["cycles"] < n:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"agent exported {seen['cycles']} cycles of {n}:\n{tail}")
                lock.wait(0.5)

    try:
        wait_cycles(2)  # warm: first walk, caches, BPF maps populated
        with lock:
            start_cycles, start_requests = seen["cycles"], seen["requests"]
        start_cpu = _cpu_s(proc.pid)
        wait_cycles(start_cycles + cycles)
        cpu = _cpu_s(proc.pid) - start_cpu
        with lock:
            done, requests = seen["cycles"] - start_cycles, seen["requests"] - start_requests
        return {
            "cpu_per_cycle_s": cpu / done,
            "rss_kib": _status_kib(proc.pid, "VmRSS"),
            "hwm_kib": _status_kib(proc.pid, "VmHWM"),
            "requests_per_cycle": requests / done,
            "largest_request": seen["largest"],
        }
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()
        receiver.stop()


def k8s_paths(n: int) -> list[str]:
    """``n`` cgroup paths shaped as a Kubernetes node's (cgroupfs driver
    systemd, containerd), parents before children."""
    out = ["kubepods.slice"] + [f"kubepods.slice/kubepods-{q}.slice" for q in QOS_SLICES]
    pod = 0
    while len(out) < n:
        qos = ("burstable", "besteffort", "guaranteed")[pod % 3]
        uid = str(uuid.UUID(int=pod + 1)).replace("-", "_")
        if qos == "guaranteed":
            pod_dir = f"kubepods.slice/kubepods-pod{uid}.slice"
        else:
            pod_dir = f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid}.slice"
        out.append(pod_dir)
        # The sandbox and two containers.
        out += [f"{pod_dir}/cri-containerd-{pod * 4 + c:064x}.scope" for c in range(3)]
        pod += 1
    return out[:n]


QOS_SLICES = ("burstable", "besteffort")


def grow(bench_root: Path, created: list[Path], n: int, shape: str) -> None:
    """Create memcgs under ``bench_root`` until ``n`` exist (``created`` in order)."""
    paths = [f"m{i:05d}" for i in range(n)] if shape == "flat" else k8s_paths(n)
    for rel in paths[len(created) :]:
        d = bench_root / rel
        d.mkdir()
        created.append(d)


def main(sizes: list[int], baseline: str | None = None, shape: str = "k8s") -> int:
    if os.geteuid() != 0:
        print("run as root: it creates memory cgroups", file=sys.stderr)
        return 2
    hierarchy = find_memory_hierarchy()
    files = V1_FILES if hierarchy.version == 1 else V2_FILES
    parent = Path(hierarchy.directory(own_cgroup_path(hierarchy.version)))
    bench_root = parent / f"otel-pagecache-bench-{uuid.uuid4().hex[:6]}"
    bench_root.mkdir()
    created: list[Path] = []
    print(f"cgroup v{hierarchy.version}, {shape}-shaped memcgs created under {bench_root}")
    header = (
        f"{'memcgs':>7} {'walked':>7} {'floor ms':>9} {'read+parse ms':>14} {'ratio':>6} "
        f"{'µs/memcg':>9} {'full walk ms':>13} {'encode ms':>10} {'cycle ms':>9} "
        f"{'requests':>9} {'agent CPU ms/cycle':>19} {'RSS MiB':>8} {'peak MiB':>9}"
    )
    print(header)
    try:
        for n in sizes:
            grow(bench_root, created, n, shape)
            entries = walk(hierarchy)
            paths = [hierarchy.directory(e.path) + "/" + f for e in entries for f in files]
            paths.append("/proc/meminfo")
            repeat = max(3, 2000 // max(1, len(entries)))
            floor = measure(lambda paths=paths: floor_cycle(paths), repeat)
            selection = Selection(max_cgroups=100_000)
            reader = ResidencyReader(hierarchy, selection=selection)
            read_parse = measure(reader.read, repeat)
            walking = ResidencyReader(hierarchy, selection=selection, full_walk_s=0)
            full_walk = measure(walking.read, repeat)

            # The agent's push loop on one snapshot: its own metrics through
            # the SDK, the bulk through the direct encoder, split requests.
            snapshot = reader.read()
            source = SnapshotSource(lambda snapshot=snapshot: snapshot, max_age_s=1e9)
            own = own_reader()
            provider = MeterProvider(
                metric_readers=[own], exemplar_filter=AlwaysOffExemplarFilter()
            )
            AgentMetrics(provider.get_meter("bench"), source)
            pipeline = MetricsPipeline(
                own,
                ResourceSplitter().split,
                BulkEncoder({"service.name": "bench"}, "otel_pagecache", "bench"),
                source,
                sender=None,
                interval_s=60,
                export_timeout_s=10,
                destination="bench",
            )
            bodies = pipeline.bodies()
            encode = measure(pipeline.bodies, max(2, repeat // 4))
            provider.shutdown()
            interval_ms = 1000 if n <= 1000 else 3000
            agent = agent_figures(n, interval_ms)
            print(
                f"{n:>7} {len(entries):>7} {floor * 1e3:>9.2f} {read_parse * 1e3:>14.2f} "
                f"{read_parse / floor:>6.2f} {read_parse / len(entries) * 1e6:>9.1f} "
                f"{full_walk * 1e3:>13.2f} {encode * 1e3:>10.2f} "
                f"{(read_parse + encode) * 1e3:>9.2f} {len(bodies):>9} "
                f"{agent['cpu_per_cycle_s'] * 1e3:>19.1f} {agent['rss_kib'] / 1024:>8.1f} "
                f"{agent['hwm_kib'] / 1024:>9.1f}",
                flush=True,
            )
            print(
                f"        agent: {agent['requests_per_cycle']:.1f} requests per cycle, largest "
                f"{agent['largest_request'] / 2**20:.2f} MiB (limit 1 MiB), every {interval_ms} ms",
                flush=True,
            )
            if baseline is not None:
                try:
                    before = agent_figures(n, interval_ms, checkout=baseline)
                except RuntimeError as e:
                    print(f"        baseline agent ({baseline}) failed: {e}", flush=True)
                else:
                    print(
                        f"        baseline agent ({baseline}): "
                        f"{before['cpu_per_cycle_s'] * 1e3:.1f} ms CPU per cycle, "
                        f"RSS {before['rss_kib'] / 1024:.1f} MiB, "
                        f"peak {before['hwm_kib'] / 1024:.1f} MiB, "
                        f"{before['requests_per_cycle']:.1f} requests per cycle, largest "
                        f"{before['largest_request'] / 2**20:.2f} MiB",
                        flush=True,
                    )
    finally:
        for d in reversed(created):
            d.rmdir()
        bench_root.rmdir()
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Collection-cycle cost vs number of memcgs")
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 1000, 10000])
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure the agent of this checkout (e.g. `git worktree add DIR <commit>`, "
        "with its BPF object built), in the same run",
    )
    parser.add_argument("--shape", choices=("k8s", "flat"), default="k8s")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the agent's cycle in this process (cProfile, tracemalloc) at each N",
    )
    args = parser.parse_args()
    if args.profile:
        from collection_profile import profile_main

        sys.exit(profile_main(args.sizes, args.shape))
    sys.exit(main(args.sizes, args.baseline, args.shape))
