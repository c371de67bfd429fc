"""Churn soak (issue 11, part 3): memcgs created and removed at a steady rate,
with I/O inside each, while the real agent exports every second to a real
OTLP receiver.

Load: ``--rate`` memcg creations and as many removals per second (after the
first ``--lifetime`` seconds), for ``--seconds``; each new memcg gets a
64 KiB file written and read back by a process inside it. Before a memcg is
removed its file is deleted, which frees its page cache: a removed memcg
still holding cache would stay a dying memcg keeping its id, and ids are
capped at 65,535 host-wide.

Requirements, each printed with its figure; the exit code is 1 if one fails:

- no exception and no error line in the agent's log;
- the exported set equals the live set within one interval: every memcg in an
  export existed when it was collected, and every memcg alive from one
  interval before a collection to after it is in that collection;
- the per-memcg BPF maps stay bounded and are pruned
  (``pagecache.agent.bpf.map.entries``, ``pagecache.agent.bpf.forgotten_cgroups``);
- exports every interval: the gaps between exports as the receiver sees
  them (first request of each collection) have p99 <= 1.5x and max <= 2x
  the interval;
- after warm-up the agent's RSS grows by less than 5 MiB, and by less than
  1 MiB over the last 10 minutes (runs of at least warm-up + 10 minutes).

Full run (10 minutes, 100 per second; root, memory cgroups):
``.venv/bin/python bench/soak.py``; the issue-15 run: ``--seconds 1800``.
tests/test_soak.py runs a short one.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_pagecache.cgroupfs import find_memory_hierarchy, own_cgroup_path  # noqa: E402
from otel_pagecache.metrics import CGROUP_PATH  # noqa: E402
from tests.agent_process import AgentProcess  # noqa: E402
from tests.agent_watch import error_lines, rss_kib  # noqa: E402
from tests.peers.otlp_receiver import OtlpReceiver, Received  # noqa: E402

MIB = 1 << 20
FILE_BYTES = 64 << 10
RSS_GROWTH_LIMIT_KIB = 5 * 1024
# Flat: less than 1 MiB over the last 10 minutes of the run.
RSS_TAIL_S = 600
RSS_TAIL_LIMIT_KIB = 1024
GAP_P99_FACTOR = 1.5
GAP_MAX_FACTOR = 2.0
PER_MEMCG_MAPS = {
    f"pagecache_{name}" for name in ("lookups", "misses", "insertions", "dirtied", "removals")
}
# Time a collection may take between reading cgroupfs and stamping its points,
# on a contended machine.
SLACK_S = 1.0


# ------------------------------------------------------------------ the churner


def churn(root: Path, data: Path, rate: float, lifetime: float, seconds: float) -> None:
    """Runs in its own process (its pid moves between memcgs). Prints
    ``C n t0 t1`` once memcg ``c<n>`` exists (t0 before mkdir, t1 after its
    I/O), ``R n t0 t1`` around its removal (t0 before, t1 after rmdir)."""
    me = str(os.getpid()).encode()
    block = os.urandom(FILE_BYTES)
    readback = bytearray(FILE_BYTES)
    home = os.open(root / "cgroup.procs", os.O_WRONLY)
    live: deque[tuple[float, int]] = deque()
    out = sys.stdout

    def remove(n: int) -> None:
        t0 = time.time()
        os.unlink(data / f"c{n}")  # frees its page cache: no dying memcg left behind
        for attempt in range(100):
            try:
                os.rmdir(root / f"c{n}")
                break
            except OSError:
                if attempt == 99:
                    raise
                time.sleep(0.01)
        out.write(f"R {n} {t0:.6f} {time.time():.6f}\n")

    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        n += 1
        t0 = time.time()
        directory = root / f"c{n}"
        os.mkdir(directory)
        procs = os.open(directory / "cgroup.procs", os.O_WRONLY)
        os.write(procs, me)
        os.close(procs)
        fd = os.open(data / f"c{n}", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, block)
        os.preadv(fd, [readback], 0)
        os.close(fd)
        os.write(home, me)
        out.write(f"C {n} {t0:.6f} {time.time():.6f}\n")
        now = time.monotonic()
        live.append((now + lifetime, n))
        while live and live[0][0] <= now:
            remove(live.popleft()[1])
        out.flush()
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    while live:
        remove(live.popleft()[1])
    out.flush()


# ------------------------------------------------------------------ the soak


class Timeline:
    """When each memcg existed, from the churner's lines."""

    def __init__(self) -> None:
        self.created: dict[int, tuple[float, float]] = {}
        self.removed: dict[int, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def follow(self, stream) -> None:
        for line in stream:
            kind, n, t0, t1 = line.split()
            with self.lock:
                (self.created if kind == "C" else self.removed)[int(n)] = (float(t0), float(t1))

    def live_count(self) -> int:
        with self.lock:
            return len(self.created) - len(self.removed)


class Exports:
    """What the receiver got, kept compact: per collection time, the memcgs
    exported; the agent's own figures over time. ``take`` only queues (the
    receiver answers the agent at once, so a slow soak script cannot slow
    the agent's exports); one thread digests the protobufs directly."""

    def __init__(self, root_path: str) -> None:
        self.prefix = root_path.rstrip("/") + "/c"
        self.collections: dict[int, set[int]] = {}
        self.map_entries: list[tuple[float, int]] = []
        self.forgotten: list[tuple[float, int]] = []
        self.read_seconds: dict[int, float] = {}  # collection time -> its cgroupfs read time
        self.requests = 0
        self.arrivals: list[float] = []
        self.first_arrival: dict[int, float] = {}  # collection time -> its first request's arrival
        self.lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._digest_all, daemon=True).start()

    def take(self, received: Received) -> None:
        self.requests += 1
        now = time.monotonic()
        self.arrivals.append(now)
        self._queue.put((now, received.request))

    def drain(self) -> None:
        self._queue.join()

    def _digest_all(self) -> None:
        while True:
            arrived, request = self._queue.get()
            try:
                self._digest(arrived, request)
            finally:
                self._queue.task_done()

    def _digest(self, arrived: float, request) -> None:
        for rm in request.resource_metrics:
            path = next(
                (a.value.string_value for a in rm.resource.attributes if a.key == CGROUP_PATH),
                None,
            )
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if path is not None:
                        number = path[len(self.prefix) :] if path.startswith(self.prefix) else ""
                        if metric.name == "pagecache.usage" and number.isdigit():
                            stamp = metric.gauge.data_points[0].time_unix_nano
                            with self.lock:
                                self.collections.setdefault(stamp, set()).add(int(number))
                                self.first_arrival.setdefault(stamp, arrived)
                        continue
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points if kind else ():
                        self._own(metric.name, point)

    def _own(self, name: str, point) -> None:
        value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
        at = point.time_unix_nano
        if name == "pagecache.agent.collection.duration":
            self.read_seconds[at] = float(value)
        elif name == "pagecache.agent.bpf.forgotten_cgroups":
            self.forgotten.append((at / 1e9, int(value)))
        elif name == "pagecache.agent.bpf.map.entries":
            attrs = {a.key: a.value.string_value for a in point.attributes}
            if attrs.get("pagecache.bpf.map") == "pagecache_insertions":
                self.map_entries.append((at / 1e9, int(value)))


def host_memcgs() -> int:
    """The memory controller's cgroup count from /proc/cgroups (the agent reads
    every memcg of the host each cycle, ours or not)."""
    for line in Path("/proc/cgroups").read_text().splitlines():
        fields = line.split()
        if fields[:1] == ["memory"] and len(fields) >= 3 and fields[2].isdigit():
            return int(fields[2])
    return 0


def export_gaps(exports: Exports, timeline: Timeline) -> list[float]:
    """Seconds between the first requests of consecutive collections, as the
    receiver saw them, while the churn ran (every collection then has memcgs
    of ours, so none is missed)."""
    with timeline.lock, exports.lock:
        created, removed = dict(timeline.created), dict(timeline.removed)
        arrivals = sorted(exports.first_arrival.items())
    if not created:
        return []
    # Collection times are wall clock; keep those within the churn.
    first = min(t0 for t0, _ in created.values())
    last = max((t1 for _, t1 in removed.values()), default=first)
    during = [arrived for stamp, arrived in arrivals if first <= stamp / 1e9 <= last]
    return [b - a for a, b in zip(during, during[1:], strict=False)]


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile (no interpolation: a figure that happened)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def check_sets(
    timeline: Timeline, exports: Exports, interval: float
) -> tuple[int, int, int, int, int]:
    """(collections checked, stale memcgs exported, live memcgs missing, memcgs
    exported under a collection time older than their creation, live
    memcg-collection pairs checked)."""
    stale = missing = checked = early = pairs = 0
    with timeline.lock, exports.lock:
        created, removed = dict(timeline.created), dict(timeline.removed)
        collections = dict(exports.collections)
        read_seconds = dict(exports.read_seconds)
    first = min((t0 for t0, _ in created.values()), default=0.0)
    last = max((t1 for _, t1 in removed.values()), default=0.0)
    # (ready, leaving, n) by ready time, so that each collection looks only
    # at the memcgs that can have been alive around it: a 30-minute run has
    # 180,000 memcgs and 1,800 collections.
    lives = sorted((ready, removed[n][0], n) for n, (_, ready) in created.items() if n in removed)
    forever = [(ready, 1e18, n) for n, (_, ready) in created.items() if n not in removed]
    readies = [ready for ready, _, _ in lives]
    longest = max((leaving - ready for ready, leaving, _ in lives), default=0.0)
    for stamp, exported in sorted(collections.items()):
        at = stamp / 1e9
        if not first + interval < at < last - interval:
            continue  # only collections while the churn runs
        checked += 1
        for n in exported:
            born, gone = created.get(n, (at + 1e9, 0))[0], removed.get(n, (0, 1e18))[1]
            # Existed within one interval of the collection, which reads
            # cgroupfs after it starts (read_seconds long).
            latest = at + interval + read_seconds.get(stamp, 0.0) + SLACK_S
            if gone < at - interval - SLACK_S:
                stale += 1
            elif born > latest:
                # The SDK stamps a collection with its start; on a loaded
                # machine the callbacks that read cgroupfs run seconds later.
                early += 1
        # Alive from one interval before the collection to one interval
        # after its cgroupfs read (which starts when the collection does, or
        # later on a loaded machine). Leaving after ``until`` means ready
        # after ``until - longest``.
        until = at + interval + read_seconds.get(stamp, 0.0) + SLACK_S
        cutoff = at - interval - SLACK_S
        low = bisect.bisect_right(readies, until - longest)
        high = bisect.bisect_right(readies, cutoff)
        for ready, leaving, n in itertools.chain(lives[low:high], forever):
            if ready <= cutoff and leaving > until:
                pairs += 1
                missing += n not in exported
    return checked, stale, missing, early, pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rate", type=float, default=100, help="memcgs created per second")
    parser.add_argument("--lifetime", type=float, default=6, help="seconds each memcg lives")
    parser.add_argument("--interval", type=float, default=1, help="export interval, seconds")
    parser.add_argument(
        "--warmup",
        type=float,
        default=120,
        help="seconds before the RSS baseline (the agent's bounded caches fill first)",
    )
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--churner", nargs=2, metavar=("ROOT", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.churner:
        churn(Path(args.churner[0]), Path(args.churner[1]), args.rate, args.lifetime, args.seconds)
        return 0
    if os.geteuid() != 0:
        print("run as root (memory cgroups, BPF)", file=sys.stderr)
        return 2

    hierarchy = find_memory_hierarchy("/sys/fs/cgroup")
    root_path = (
        own_cgroup_path(hierarchy.version).rstrip("/")
        + f"/otel-pagecache-soak-{uuid.uuid4().hex[:8]}"
    )
    root = Path(hierarchy.directory(root_path))
    data = ROOT / ".test-data" / f"soak-{uuid.uuid4().hex[:8]}"
    data.mkdir(parents=True)
    root.mkdir()
    memcgs_before = host_memcgs()
    exports = Exports(root_path)
    timeline = Timeline()
    receiver = OtlpReceiver(on_request=lambda r: (exports.take(r), receiver.clear()))
    receiver.start()
    log_dir = data / "logs"
    log_dir.mkdir()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": str(int(args.interval * 1000)),
        "OTEL_PAGECACHE_STALLS": "false",
    }
    agent = AgentProcess(
        ["run", "--engine", args.engine, "--include", f"{root_path}/*"], env, log_dir
    )
    rss: list[tuple[float, int]] = []
    churner = None
    try:
        agent.start()
        deadline = time.monotonic() + 60
        while not exports.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        if not exports.requests:
            print(f"the agent did not export within 60 s:\n{agent.log()}")
            return 1
        churner = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--churner",
                str(root),
                str(data),
                "--rate",
                str(args.rate),
                "--lifetime",
                str(args.lifetime),
                "--seconds",
                str(args.seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: (root / "cgroup.procs").write_text(str(os.getpid())),
        )
        follower = threading.Thread(target=timeline.follow, args=(churner.stdout,), daemon=True)
        follower.start()
        started = time.monotonic()
        while churner.poll() is None:
            rss.append((time.monotonic() - started, rss_kib(agent.proc.pid)))
            if agent.proc.poll() is not None:
                print(f"the agent exited during the soak:\n{agent.log()}")
                return 1
            time.sleep(1)
        follower.join(10)
        time.sleep(3 * args.interval)  # the last removals reach an export
        elapsed = time.monotonic() - started
        code = agent.terminate()
        exports.drain()
    finally:
        if churner is not None and churner.poll() is None:
            churner.kill()
        if agent.proc is not None and agent.proc.poll() is None:
            agent.terminate()
        receiver.stop()
        for f in data.glob("c*"):
            f.unlink()  # before the memcgs go: no cache left charged to them
        for directory in [d for d in root.iterdir() if d.is_dir()]:
            directory.rmdir()
        root.rmdir()
    log = agent.log()

    ok = True
    print(
        f"memory cgroups on the host (/proc/cgroups): {memcgs_before} before, "
        f"{host_memcgs()} after; machine load {os.getloadavg()[0]:.1f}"
    )

    def report(name: str, met: bool, figure: str) -> None:
        nonlocal ok
        ok &= met
        print(f"{'ok  ' if met else 'FAIL'} {name}: {figure}")

    created = len(timeline.created)
    print(
        f"soak: {created} memcgs created and {len(timeline.removed)} removed in {elapsed:.0f} s "
        f"({created / max(elapsed, 1):.1f}/s asked {args.rate:g}/s), lifetime {args.lifetime:g} s, "
        f"exports every {args.interval:g} s, engine {args.engine}; {exports.requests} export "
        f"requests, {len(exports.collections)} collections with memcgs of ours"
    )
    report(
        "agent exit code",
        code == 0 and churner.returncode == 0,
        f"agent {code}, churner {churner.returncode}",
    )
    errors = error_lines(log)
    report(
        "no exception, no error log",
        not errors,
        f"{len(errors)} lines" + (f": {errors[:3]}" if errors else ""),
    )
    checked, stale, missing, early, pairs = check_sets(timeline, exports, args.interval)
    report(
        "exported set = live set within one interval",
        checked > 0 and pairs > 0 and stale == 0 and missing == 0,
        f"{checked} collections checked, {stale} stale memcgs exported, "
        f"{missing} of {pairs} live ones missing ({early} exported under a collection time "
        "older than their creation: read later than the collection started)",
    )
    entries = [v for _, v in exports.map_entries]
    forgotten = max((v for _, v in exports.forgotten), default=0)
    gaps = export_gaps(exports, timeline)
    period = statistics.mean(gaps) if gaps else elapsed
    longest_gap = max(gaps, default=period)
    live_peak = round(args.rate * args.lifetime)
    if entries:
        # Bounded: entries are pruned at each collection, so at most the
        # memcgs alive since the previous one (ours: rate x (lifetime + the
        # longest gap between exports)) plus the host's own, whatever else
        # does I/O (500). Pruned: removed memcgs are forgotten.
        bound = round(args.rate * (args.lifetime + longest_gap)) + 500
        half = len(entries) // 2
        first, second = max(entries[:half] or [0]), max(entries[half:])
        report(
            "BPF maps bounded and pruned",
            max(entries) <= bound and forgotten >= len(timeline.removed) - live_peak,
            f"pagecache_insertions entries: peak {first} in the first half, {second} in the "
            f"second (bound {bound}), last {entries[-1]}; forgotten_cgroups {forgotten} for "
            f"{len(timeline.removed)} removed; an export every {period:.1f} s on average, "
            f"{longest_gap:.1f} s at most",
        )
    else:
        print("     BPF maps: no activity engine running, nothing to check")
    if gaps:
        p50, p99 = quantile(gaps, 0.5), quantile(gaps, 0.99)
        report(
            "exports every interval (p99 gap <= 1.5x, max <= 2x)",
            p99 <= GAP_P99_FACTOR * args.interval and longest_gap <= GAP_MAX_FACTOR * args.interval,
            f"{len(gaps)} gaps between collections: p50 {p50:.2f} s, p90 "
            f"{quantile(gaps, 0.9):.2f} s, p99 {p99:.2f} s, max {longest_gap:.2f} s "
            f"(interval {args.interval:g} s)",
        )
    else:
        report("exports every interval (p99 gap <= 1.5x, max <= 2x)", False, "no export")
    reads = sorted(exports.read_seconds.values())
    if reads:
        # What a cycle costs the agent: its cgroupfs read (every memcg of the
        # host, not only ours), the part of a cycle that grows with load.
        print(
            f"     cgroupfs read per collection (pagecache.agent.collection.duration): "
            f"p50 {quantile(reads, 0.5):.2f} s, p99 {quantile(reads, 0.99):.2f} s, "
            f"max {reads[-1]:.2f} s"
        )
    after = [kib for t, kib in rss if t >= args.warmup and kib]
    if len(after) >= 10:
        window = max(5, len(after) // 10)
        base, end = statistics.median(after[:window]), statistics.median(after[-window:])
        report(
            "RSS growth after warm-up < 5 MiB",
            end - base < RSS_GROWTH_LIMIT_KIB,
            f"{base / 1024:.1f} MiB at {args.warmup:g} s, {end / 1024:.1f} MiB at the end "
            f"({(end - base) / 1024:+.1f} MiB; peak {max(after) / 1024:.1f} MiB)",
        )
    else:
        report("RSS growth after warm-up < 5 MiB", False, "run too short for the warm-up")
    tail_start = rss[-1][0] - RSS_TAIL_S if rss else 0.0
    if rss and tail_start >= args.warmup:
        tail = [(t, kib) for t, kib in rss if t >= tail_start and kib]
        # Medians of the first and the last minute of the last 10 minutes.
        base = statistics.median(kib for t, kib in tail if t < tail_start + 60)
        end = statistics.median(kib for t, kib in tail if t >= rss[-1][0] - 60)
        report(
            "RSS growth over the last 10 minutes < 1 MiB",
            end - base < RSS_TAIL_LIMIT_KIB,
            f"{base / 1024:.1f} MiB at {tail_start:.0f} s, {end / 1024:.1f} MiB at the end "
            f"({(end - base) / 1024:+.2f} MiB)",
        )
    else:
        print(
            "     RSS over the last 10 minutes: not checked, the run is shorter than "
            f"warm-up + {RSS_TAIL_S} s"
        )
    timeline_rss = " ".join(f"{t:.0f}s:{kib / 1024:.1f}" for t, kib in rss[::10])
    print(f"     agent RSS (MiB) every 10 s: {timeline_rss}")
    print(f"agent log: {agent.log_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
