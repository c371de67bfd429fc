"""Cost of the BPF activity probes (issue 11, part 2), as ratios in one run.

1. Per-event cost of each program (kernel.bpf_stats_enabled=1:
   run_time_ns / run_cnt), side by side with an EMPTY program of the same
   attach type on the same tracepoint, attached at the same time
   (bench/empty.bpf.c): tp_btf for the CO-RE engine, raw_tp for BCC. The empty
   program is the floor, including what the measurement itself costs.
   Target: the lookup programs <= +10 ns per event.
2. The user's worst case: a loop of 4 KiB pread()s of one cached page
   (bench/pread_loop.c). ``--rounds`` (>= 30) PAIRED rounds per engine: no
   program, the empty floor on mm_filemap_get_pages, then the engine started
   as the agent starts it by default (lookups and stalls on), back to back.
   Prints the median of the paired differences (percentage points of the
   no-program time) with its 95% order-statistic confidence interval.
   Target: median <= 3 points, both engines.
3. Load-and-attach time of the CO-RE programs, and the extra RSS.

Run as root: ``.venv/bin/python bench/bpf_cost.py [--rounds 30]``. Needs
clang and gcc (it builds the empty object and the pread loop in a temporary
directory) and, for BCC, python3-bpfcc. Restores kernel.bpf_stats_enabled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_pagecache.probes.core import LOOKUP_PROGRAMS, PROGRAMS, CoreProbe  # noqa: E402
from otel_pagecache.probes.libbpf import BpfObject  # noqa: E402

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
EMPTY = {
    "on_add_to_page_cache": "empty_add",
    "on_delete_from_page_cache": "empty_delete",
    "on_dirty_folio": "empty_dirty",
    "on_get_pages": "empty_get_pages",
    "on_fault": "empty_fault",
    "on_map_pages": "empty_map_pages",
}
# BCC's lookup programs are raw tracepoints (bpf/pagecache_bcc.c): their floor
# is an empty raw_tp program on the same tracepoint.
EMPTY_RAW = {
    "on_get_pages": "empty_raw_get_pages",
    "on_fault": "empty_raw_fault",
    "on_map_pages": "empty_raw_map_pages",
}
BCC_NAMES = {
    "on_add_to_page_cache": "raw_tracepoint__mm_filemap_add_to_page_cache",
    "on_delete_from_page_cache": "raw_tracepoint__mm_filemap_delete_from_page_cache",
    "on_dirty_folio": "raw_tracepoint__writeback_dirty_folio",
    "on_get_pages": "raw_tracepoint__mm_filemap_get_pages",
    "on_fault": "raw_tracepoint__mm_filemap_fault",
    "on_map_pages": "raw_tracepoint__mm_filemap_map_pages",
}
MIB = 1 << 20


def build(tmp: Path) -> tuple[Path, Path]:
    empty = tmp / "empty.bpf.o"
    subprocess.run(
        [
            "clang",
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-I",
            str(ROOT / "bpf"),
            "-c",
            str(ROOT / "bench" / "empty.bpf.c"),
            "-o",
            str(empty),
        ],
        check=True,
    )
    loop = tmp / "pread_loop"
    subprocess.run(
        ["gcc", "-O2", "-o", str(loop), str(ROOT / "bench" / "pread_loop.c")], check=True
    )
    return empty, loop


def prog_stats() -> dict[str, tuple[int, int]]:
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True).stdout
    return {
        p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0))
        for p in json.loads(out)
        if p.get("name", "").startswith(("on_", "empty_", "raw_tracepoint__"))
    }


def workload(tmp: Path, loop: Path) -> None:
    data = tmp / "data"
    with open(data, "wb") as f:
        f.write(os.urandom(64 * MIB))
        f.flush()
        os.fsync(f.fileno())
    for _ in range(3):
        fd = os.open(data, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # deletes
        while os.read(fd, MIB):  # insertions (cold) and get_pages
            pass
        os.close(fd)
    subprocess.run([str(loop), str(data), "300000"], check=True, capture_output=True)
    script = (
        "import mmap,sys\n"
        "f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\n"
        "m.madvise(mmap.MADV_NOHUGEPAGE)\n"
        "sum(m[i] for i in range(0, len(m), 4096))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(data)], check=True)
    with open(tmp / "written", "wb") as f:  # insertions + dirtying
        f.write(b"x" * 32 * MIB)
    os.unlink(tmp / "written")


def _delta(before: dict, after: dict, name: str) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of ``name`` between two prog_stats()."""
    (t1, c1), (t0, c0) = after.get(name, (0, 0)), before.get(name, (0, 0))
    return t1 - t0, c1 - c0


def per_event_cost(tmp: Path, empty_obj: Path, loop: Path) -> None:
    """Each engine in turn, alone with every empty program, under one workload:
    each event runs the engine and the floors, so the differences are per event."""
    from otel_pagecache.probes.bcc import BccProbe, bcc_available

    print("per-event cost, kernel.bpf_stats_enabled=1 (ns per event; empty = floor of the")
    print("same attach type: tp_btf for CO-RE, raw_tp for BCC); target: lookups <= +10 ns")
    print(
        f"{'engine':<6} {'tracepoint':<40} {'events':>8} {'agent ns':>9} {'empty ns':>9} "
        f"{'extra ns':>9}"
    )
    engines: list[tuple[str, Callable[[], Any], dict[str, str], dict[str, str]]] = [
        ("core", CoreProbe, {p: p for p in EMPTY}, EMPTY)
    ]
    if bcc_available():
        engines.append(("bcc", BccProbe, BCC_NAMES, EMPTY_RAW))
    for engine, make, names, floors in engines:
        probe = make().start()
        empty = BpfObject(str(empty_obj))
        empty.load()
        for name in (*EMPTY.values(), *EMPTY_RAW.values()):
            empty.attach(name)
        try:
            before = prog_stats()
            workload(tmp, loop)
            after = prog_stats()
        finally:
            empty.close()
            probe.close()

        for program, floor in floors.items():
            (t1, c1), (t0, c0) = _delta(before, after, names[program]), _delta(before, after, floor)
            if c1 and c0:
                mark = "  (lookup path)" if program in LOOKUP_PROGRAMS else ""
                print(
                    f"{engine:<6} {PROGRAMS[program]:<40} {c1:>8} {t1 / c1:>9.1f} "
                    f"{t0 / c0:>9.1f} {t1 / c1 - t0 / c0:>+9.1f}{mark}"
                )


PREAD_COUNT = 2_000_000


def pread_medians(
    loop: Path, tmp: Path, setups: dict[str, Callable[[], Any] | None], rounds: int
) -> dict[str, float]:
    """ns per 4 KiB pread of a cached page under each setup, median of
    alternating rounds. A setup starts what it measures (something with
    close()), or is None for nothing attached."""
    page = tmp / "page"
    page.write_bytes(os.urandom(4096))
    results: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, start in setups.items():
            attached = start() if start is not None else None
            try:
                out = subprocess.run(
                    [str(loop), str(page), str(PREAD_COUNT)], capture_output=True, text=True
                )
                results[name].append(float(out.stdout))
            finally:
                if attached is not None:
                    attached.close()
    return {name: statistics.median(values) for name, values in results.items()}


def print_pread(medians: dict[str, float], rounds: int) -> None:
    base = medians["none"]
    print(f"4 KiB pread of a cached page, {PREAD_COUNT} per run, median of {rounds} rounds")
    for name, median in medians.items():
        print(f"  {name:<18} {median:7.1f} ns/pread  {100 * (median / base - 1):+6.1f} %")


def order_statistic_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median: the k-th smallest and k-th largest
    values, k the largest rank with P(Binomial(n, 1/2) < k) <= (1 - level) / 2."""
    ordered = sorted(values)
    n = len(ordered)
    tail = (1 - level) / 2
    k, below = 0, 0.0
    while k < n // 2:
        below_next = below + math.comb(n, k) / 2**n  # P(B <= k)
        if below_next > tail:
            break
        below, k = below_next, k + 1
    if k == 0:  # too few rounds for this level: the whole range
        return ordered[0], ordered[-1]
    return ordered[k - 1], ordered[n - k]


def _empty_program(empty_obj: Path, program: str) -> Callable[[], BpfObject]:
    """Start just ``program`` of bench/empty.bpf.c (the floor of one attach type)."""

    def start() -> BpfObject:
        empty = BpfObject(str(empty_obj))
        for name in (*EMPTY.values(), *EMPTY_RAW.values()):
            empty.set_autoload(name, name == program)
        empty.load()
        empty.attach(program)
        return empty

    return start


# engine -> (its empty floor on mm_filemap_get_pages, the engine at the agent's defaults)
def engine_setups(empty_obj: Path) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    setups: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "core": (_empty_program(empty_obj, "empty_get_pages"), lambda: CoreProbe().start()),
    }
    from otel_pagecache.probes.bcc import BccProbe, bcc_available

    if bcc_available():
        setups["bcc"] = (
            _empty_program(empty_obj, "empty_raw_get_pages"),
            lambda: BccProbe().start(),
        )
    else:
        print("bcc: python3-bpfcc not importable, its pread rounds are skipped")
    return setups


def pread_paired(tmp: Path, empty_obj: Path, loop: Path, rounds: int) -> dict[str, list[float]]:
    """Per engine, ``rounds`` paired differences in percentage points of the
    no-program time: each round runs nothing, the empty floor, then the engine
    (as the agent starts it by default), back to back, and compares the last
    two against the first of the same round."""
    page = tmp / "page"
    page.write_bytes(os.urandom(4096))
    setups = engine_setups(empty_obj)
    diffs: dict[str, list[float]] = {engine: [] for engine in setups}

    def run(start: Callable[[], Any] | None) -> float:
        attached = start() if start is not None else None
        try:
            out = subprocess.run(
                [str(loop), str(page), str(PREAD_COUNT)], capture_output=True, text=True
            )
            return float(out.stdout)
        finally:
            if attached is not None:
                attached.close()

    for _ in range(rounds):
        for engine, (floor, agent) in setups.items():
            none_ns, floor_ns, agent_ns = run(None), run(floor), run(agent)
            diffs[engine].append(100 * (agent_ns - floor_ns) / none_ns)
    return diffs


def print_paired(diffs: dict[str, list[float]]) -> None:
    print(
        f"4 KiB pread of a cached page, {PREAD_COUNT} per run; per round: nothing, the empty "
        "floor, the engine at the agent's defaults, back to back"
    )
    print(f"{'engine':<7} {'rounds':>6} {'median pts':>11} {'95% CI (order statistics)':>27}")
    for engine, values in diffs.items():
        low, high = order_statistic_ci(values)
        verdict = "met" if statistics.median(values) <= 3 else "NOT met"
        print(
            f"{engine:<7} {len(values):>6} {statistics.median(values):>+11.2f} "
            f"{f'[{low:+.2f}, {high:+.2f}]':>27}   target <= +3 points: {verdict}"
        )


def load_time_and_rss() -> None:
    def rss_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    rss0 = rss_kib()
    times = []
    probe = None
    for _ in range(5):
        start = time.perf_counter()
        probe = CoreProbe().start()
        times.append(time.perf_counter() - start)
        if len(times) < 5:
            probe.close()
    rss1 = rss_kib()
    probe.close()
    print(
        f"load and attach: median {statistics.median(times) * 1e3:.0f} ms "
        f"(min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f}) over 5; "
        f"extra RSS with the probe loaded: {(rss1 - rss0) / 1024:.1f} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=30, help="paired pread rounds (>= 30; 0: skip them)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    original = STATS.read_text().strip()
    with tempfile.TemporaryDirectory(dir=ROOT) as tmpdir:
        tmp = Path(tmpdir)
        empty_obj, loop = build(tmp)
        load_time_and_rss()
        try:
            STATS.write_text("1")
            per_event_cost(tmp, empty_obj, loop)
        finally:
            STATS.write_text(original)
        if args.rounds:
            print_paired(pread_paired(tmp, empty_obj, loop, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
