"""Cost of the BPF activity probes, measured as ratios in one run.

1. Per-event cost of each program (kernel.bpf_stats_enabled=1:
   run_time_ns / run_cnt), side by side with an EMPTY tp_btf program on the
   same tracepoint attached at the same time (bench/empty.bpf.c): the empty
   program is the floor, including the ~50 ns the measurement itself costs.
2. The user's worst case: a loop of 4 KiB pread()s of one cached page
   (bench/pread_loop.c), with no program, with only the empty program on
   mm_filemap_get_pages (the floor), with the agent's programs, and with the
   agent's programs minus the lookup path; alternating rounds, medians.
3. Load-and-attach time of the agent's programs, and the extra RSS.

Run as root: ``.venv/bin/python bench/bpf_cost.py``. Needs clang and gcc
(it builds the empty object and the pread loop in a temporary directory).
Restores kernel.bpf_stats_enabled as it found it.
"""

from __future__ import annotations

import json
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

from otel_pagecache.probes.core import PROGRAMS, CoreProbe  # noqa: E402
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
        if p.get("name", "").startswith(("on_", "empty_"))
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


def per_event_cost(tmp: Path, empty_obj: Path, loop: Path) -> None:
    probe = CoreProbe().start()
    empty = BpfObject(str(empty_obj))
    empty.load()
    for name in EMPTY.values():
        empty.attach(name)
    try:
        before = prog_stats()
        workload(tmp, loop)
        after = prog_stats()
    finally:
        empty.close()
        probe.close()
    print("per-event cost, kernel.bpf_stats_enabled=1 (ns per event; empty = floor)")
    print(f"{'tracepoint':<40} {'events':>9} {'agent ns':>9} {'empty ns':>9} {'extra ns':>9}")

    def delta(name: str) -> tuple[int, int]:
        (t_after, c_after), (t_before, c_before) = after.get(name, (0, 0)), before.get(name, (0, 0))
        return t_after - t_before, c_after - c_before

    for ours, floor in EMPTY.items():
        t1, c1 = delta(ours)
        t0, c0 = delta(floor)
        if c1 and c0:
            print(
                f"{PROGRAMS[ours]:<40} {c1:>9} {t1 / c1:>9.1f} {t0 / c0:>9.1f} "
                f"{t1 / c1 - t0 / c0:>9.1f}"
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


def pread_slowdown(tmp: Path, empty_obj: Path, loop: Path, rounds: int = 7) -> None:
    def empty_on_get_pages() -> BpfObject:
        empty = BpfObject(str(empty_obj))
        for name in EMPTY.values():
            empty.set_autoload(name, name == "empty_get_pages")
        empty.load()
        empty.attach("empty_get_pages")
        return empty

    medians = pread_medians(
        loop,
        tmp,
        {
            "none": None,
            "empty": empty_on_get_pages,
            "agent": lambda: CoreProbe().start(),
            "agent-no-lookups": lambda: CoreProbe(lookups=False).start(),
        },
        rounds,
    )
    print_pread(medians, rounds)
    base = medians["none"]
    floor, agent = medians["empty"] / base - 1, medians["agent"] / base - 1
    print(f"  agent minus floor: {100 * (agent - floor):+.1f} percentage points")


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
        pread_slowdown(tmp, empty_obj, loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
