"""Collection-cycle cost vs number of memory cgroups, on the real kernel.

Creates N empty memory cgroups beneath this process's own cgroup (N = 10, 100,
1000 by default), then measures, in CPU time per cycle:

- floor: bare os.open/os.read/os.close of every file one cycle reads (all memcg
  files of every cgroup the walk finds, plus /proc/meminfo), nothing else;
- read+parse: ResidencyReader.read() -- the same reads, parsing, v2
  subtraction, identities, selection; "steady" is a cycle between full walks
  of the hierarchy (directories are listed again only when their link count
  changed), "full walk" lists every directory as well (every 30 s by default);
- collect+export: the OpenTelemetry SDK collecting every instrument from that
  snapshot and encoding the OTLP protobuf request (no network);
- agent RSS: a real ``otel-pagecache run`` process at the largest N.

Run as root: ``.venv/bin/python bench/collection.py [N ...]``. Prints a table;
the README quotes it. Removes every cgroup it created, also on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_pagecache.cgroupfs import find_memory_hierarchy, own_cgroup_path, walk  # noqa: E402
from otel_pagecache.export import ResourceSplitter  # noqa: E402
from otel_pagecache.metrics import PageCacheMetrics, sample_resource_attributes  # noqa: E402
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


def agent_rss_kib(max_cgroups: int) -> tuple[int, int, int]:
    """RSS and peak RSS of a real agent exporting over OTLP/gRPC to a loopback
    receiver every 500 ms; also how many export requests arrived."""
    from tests.peers.otlp_receiver import OtlpReceiver

    receiver = OtlpReceiver().start()
    env = {
        **os.environ,
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_PAGECACHE_MAX_CGROUPS": str(max_cgroups),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_pagecache.cli", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(6)  # about ten export cycles
        status = Path(f"/proc/{proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        requests = len(receiver.metrics_requests())
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]), requests
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
        receiver.stop()


def main(sizes: list[int]) -> int:
    if os.geteuid() != 0:
        print("run as root: it creates memory cgroups", file=sys.stderr)
        return 2
    hierarchy = find_memory_hierarchy()
    files = V1_FILES if hierarchy.version == 1 else V2_FILES
    parent = Path(hierarchy.directory(own_cgroup_path(hierarchy.version)))
    bench_root = parent / f"otel-pagecache-bench-{uuid.uuid4().hex[:6]}"
    bench_root.mkdir()
    created: list[Path] = []
    print(f"cgroup v{hierarchy.version}, memcgs created under {bench_root}")
    header = (
        f"{'memcgs':>7} {'walked':>7} {'floor ms':>9} {'read+parse ms':>14} {'ratio':>6} "
        f"{'µs/memcg':>9} {'full walk ms':>13} {'ratio':>6} {'collect+export ms':>18} "
        f"{'cycle ms':>9}"
    )
    print(header)
    try:
        for n in sizes:
            while len(created) < n:
                d = bench_root / f"m{len(created):05d}"
                d.mkdir()
                created.append(d)
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

            # The agent's OTLP path: points carry the cgroup id only, the
            # exporter puts each memcg's identity on its Resource.
            snapshot = reader.read()
            identities = {m.id: sample_resource_attributes(m) for m in snapshot.memcgs}
            source = SnapshotSource(lambda snapshot=snapshot: snapshot, max_age_s=1e9)
            metric_reader = InMemoryMetricReader()
            provider = MeterProvider(
                metric_readers=[metric_reader], exemplar_filter=AlwaysOffExemplarFilter()
            )
            PageCacheMetrics(provider.get_meter("bench"), source, identity_on_points=False)
            splitter = ResourceSplitter(lookup=identities.get)

            def collect_export(metric_reader=metric_reader, splitter=splitter) -> None:
                data = metric_reader.get_metrics_data()
                encode_metrics(splitter.split(data)).SerializeToString()

            sdk = measure(collect_export, max(2, repeat // 4))
            provider.shutdown()
            print(
                f"{n:>7} {len(entries):>7} {floor * 1e3:>9.2f} {read_parse * 1e3:>14.2f} "
                f"{read_parse / floor:>6.2f} {read_parse / len(entries) * 1e6:>9.1f} "
                f"{full_walk * 1e3:>13.2f} {full_walk / floor:>6.2f} "
                f"{sdk * 1e3:>18.2f} {(read_parse + sdk) * 1e3:>9.2f}"
            )
        rss, hwm, requests = agent_rss_kib(max(sizes) + 100)
        print(
            f"agent process at {len(walk(hierarchy))} memcgs (otel-pagecache run, OTLP/gRPC "
            f"every 500 ms, {requests} exports received): RSS {rss / 1024:.1f} MiB, "
            f"peak {hwm / 1024:.1f} MiB"
        )
    finally:
        for d in reversed(created):
            d.rmdir()
        bench_root.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [10, 100, 1000]))
