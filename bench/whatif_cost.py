"""Cost of the what-if curve (issue 16): the increment over the same build
with the curve off. Prints figures; asserts nothing.

1. Per event, ``bpf_stats`` (bench/bpf_cost.py's method: run_time_ns /
   run_cnt of the CO-RE lookup program on ``mm_filemap_get_pages``, from its
   fd, counting held on by BPF_ENABLE_STATS): the agent's CO-RE engine with
   the curve on (whatif_config enabled, one page in 64, samples drained by the
   agent's own poller into its tracker) against the same object with the
   curve off (enabled 0), each attached alone in its turn, alternated, for
   cached 4 KiB preads of one page (the page is sampled or not by its file's
   phase: either every event sends a record or none), cached 4 KiB preads
   across a 64 MiB file (one event in 64 sends one) and cached 1 MiB
   sequential reads (each event's 256 pages hold 4 sampled ones: one record).
   Target: <= +3 ns per event.
2. ``pread`` slowdown: per round, the engine with the curve off, then on
   (reversed every other round), each the fastest of 3 runs of 2,000,000
   4 KiB preads across a cached 64 MiB file; the paired difference in points
   of the curve-off time, median and its 95% order-statistic interval.
   Target: <= +0.5 points.
3. Agent CPU: the process's CPU time (ring callbacks and the estimator, in
   the poller thread) while a reader does N cached 4 KiB preads across a file,
   per page access, scaled to 1,000,000 page accesses per second host-wide.
   Target: <= 2% of one core.
4. Memory for 1,000 active memcgs: the tracker's Python heap (tracemalloc)
   after each of 1,000 memcgs took random pages until its key cap filled
   (the default budget: 100,000 keys, 100 each), and for 8 memcgs at the
   per-memcg cap (16,384 keys). Target: <= 20 MiB.

Run as root: ``.venv/bin/python bench/whatif_cost.py [--event-rounds 10] [--rounds 30]``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bpf_cost  # noqa: E402
from bpf_cost import Setup, against_target, build, per_event_rounds  # noqa: E402

from otel_pagecache.config import Settings  # noqa: E402
from otel_pagecache.probes.core import CoreProbe  # noqa: E402
from otel_pagecache.probes.layout import WhatifSample  # noqa: E402
from otel_pagecache.whatif import WhatifRun, WhatifTracker  # noqa: E402

MIB = 1 << 20
SHIFT, MAX_PAGES = Settings.whatif_sample_shift, Settings.whatif_max_pages_per_event
bpf_cost.WORKLOADS = {
    "4k": ("cached 4 KiB pread of one page", 4096, 300_000, 4096),
    "4k-file": ("cached 4 KiB preads across a 64 MiB file", 4096, 300_000, 64 * MIB),
    "1m": ("cached 1 MiB sequential reads", MIB, 2_000, 64 * MIB),
}


class Engine:
    """The CO-RE engine as the agent runs it, the curve on or off."""

    def __init__(self, curve: bool) -> None:
        self.probe = CoreProbe().start()
        self.run: WhatifRun | None = None
        if curve:
            self.run = WhatifRun(WhatifTracker(shift=SHIFT), self.probe)
        self.probe.set_whatif(SHIFT, MAX_PAGES, enabled=curve)

    def close(self) -> None:
        if self.run is not None:
            self.run.stop()
        self.probe.close()


def engine_setups() -> dict[str, list[Setup]]:
    def fd(engine: Engine) -> int:
        return engine.probe.program_fds()["on_get_pages"]

    return {
        "core": [
            Setup("curve-off", lambda: Engine(False), fd),
            Setup("curve-on", lambda: Engine(True), fd),
        ]
    }


def per_event(tmp: Path, loop: Path, rounds: int) -> None:
    runs = per_event_rounds(tmp, loop, engine_setups(), rounds)
    print(
        f"per event, lookup program on mm_filemap_get_pages (bpf_stats), {rounds} alternated "
        "rounds; the curve on minus the same object with it off; target <= +3 ns"
    )
    header = f"{'workload':<8} {'events/run':>10} {'off ns':>7} {'on ns':>7}"
    print(f"{header} {'on - off, median [95% CI]':>28}")
    for workload in bpf_cost.WORKLOADS:
        off = runs[("core", "curve-off", workload)]
        on = runs[("core", "curve-on", workload)]
        diff = [a.ns_per_event - b.ns_per_event for a, b in zip(on, off, strict=True)]
        median, low, high, verdict = against_target(diff, 3)
        print(
            f"{workload:<8} {statistics.median(r.events for r in on):>10.0f} "
            f"{statistics.median(r.ns_per_event for r in off):>7.1f} "
            f"{statistics.median(r.ns_per_event for r in on):>7.1f} "
            f"{f'{median:+.1f} [{low:+.1f}, {high:+.1f}]':>28}  {verdict}"
        )
    for name, (what, block, count, size) in bpf_cost.WORKLOADS.items():
        print(f"  {name}: {what}: {count} reads of {block} B from a {size} B file per run")


PREADS = 2_000_000


def pread_slowdown(tmp: Path, loop: Path, rounds: int) -> None:
    data = tmp / "pread_data"
    data.write_bytes(os.urandom(64 * MIB))

    def run(curve: bool) -> float:
        engine = Engine(curve)
        try:
            with open(data, "rb") as f:
                while f.read(MIB):
                    pass
            return min(
                float(
                    subprocess.run(
                        [str(loop), str(data), str(PREADS), "4096"],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
                for _ in range(3)
            )
        finally:
            engine.close()

    diffs, offs = [], []
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        ns = {curve: run(curve) for curve in order}
        offs.append(ns[False])
        diffs.append(100 * (ns[True] - ns[False]) / ns[False])
    median, low, high, verdict = against_target(diffs, 0.5)
    print(
        f"4 KiB pread across a cached 64 MiB file, {PREADS} per run, the fastest of 3; "
        f"{rounds} paired rounds (curve off, on): off {statistics.median(offs):.1f} ns/pread; "
        f"on - off {median:+.2f} points [{low:+.2f}, {high:+.2f}] (95%, order statistics); "
        f"target <= +0.5 points: {verdict}"
    )


def agent_cpu(tmp: Path, loop: Path, reads: int = 3_000_000) -> None:
    data = tmp / "cpu_data"
    data.write_bytes(os.urandom(64 * MIB))
    engine = Engine(True)
    try:
        with open(data, "rb") as f:
            while f.read(MIB):
                pass
        time.sleep(0.5)
        before = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic()
        subprocess.run([str(loop), str(data), str(reads), "4096"], check=True, capture_output=True)
        time.sleep(0.3)  # the poller drains what is left (it polls every 100 ms)
        after = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - wall
        samples = sum(engine.run.tracker.samples.values()) if engine.run else 0
        lost = engine.probe.read().lost
    finally:
        engine.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    per_access_ns = cpu / reads * 1e9
    print(
        f"agent CPU: {cpu * 1000:.0f} ms for {reads} cached 4 KiB preads across a 64 MiB file "
        f"in {wall:.1f} s ({samples} sampled pages, one in {1 << SHIFT}; ring full "
        f"{lost['whatif_ring_buffer_full']}): {per_access_ns:.1f} ns per page access, "
        f"{per_access_ns * 1e6 / 1e9 * 100:.2f}% of one core at 1,000,000 accesses/s; "
        "target <= 2%"
    )
    # The same records through the tracker alone (no ring, no ctypes): what
    # the estimator itself costs per sampled page.
    tracker = WhatifTracker(shift=SHIFT)
    rng = random.Random(1)
    records = [
        bytes(WhatifSample(1, 0x1000, rng.randrange(16384) << SHIFT, ~0 & (2**64 - 1), 1, SHIFT))
        for _ in range(200_000)
    ]
    t0 = time.process_time()
    for raw in records:
        tracker.take(raw)
    per_sample_us = (time.process_time() - t0) / len(records) * 1e6
    print(
        f"  the tracker alone: {per_sample_us:.2f} us per sampled page "
        f"({per_sample_us * 1e6 / (1 << SHIFT) / 1e6 * 100:.2f}% of a core at 1,000,000 "
        f"accesses/s with one page in {1 << SHIFT} sampled)"
    )


def memory(memcgs: int = 1000) -> None:
    cases = ((memcgs, None, "the default budget"), (8, 16_384, "8 at the per-memcg cap"))
    for count, keys_each, label in cases:
        tracemalloc.start()
        tracker = WhatifTracker(shift=SHIFT)
        rng = random.Random(2)
        base = tracemalloc.get_traced_memory()[0]
        per = keys_each or tracker._cap(count)
        for memcg in range(count):
            for i in range(2 * per):
                tracker.add(
                    memcg + 1, 0x1000 + memcg, rng.randrange(1 << 24), 1, 0, -1, now=i * 1e-3
                )
        used = tracemalloc.get_traced_memory()[0] - base
        keys = sum(c.memory_keys() for c in tracker.curves.values())
        tracemalloc.stop()
        print(
            f"memory: {count} active memcgs ({label}: {keys} keys in all), tracker heap "
            f"{used / MIB:.1f} MiB ({used / max(keys, 1):.0f} B per key); target <= 20 MiB "
            f"for 1,000 memcgs"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--event-rounds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30, help="paired pread rounds")
    parser.add_argument("--skip", default="", help="comma-separated: event,pread,cpu,memory")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(
        dir=ROOT / ".test-data" if (ROOT / ".test-data").exists() else None
    ) as d:
        tmp = Path(d)
        _, loop = build(tmp)
        if "event" not in skip:
            per_event(tmp, loop, args.event_rounds)
        if "pread" not in skip:
            pread_slowdown(tmp, loop, args.rounds)
        if "cpu" not in skip:
            agent_cpu(tmp, loop)
    if "memory" not in skip:
        memory()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
