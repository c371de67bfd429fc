"""Cost of the BPF activity probes on the hot path (issues 11 and 15), as
paired differences in one run. The gate for the per-event cost.

1. Per-event cost of the lookup program, one method: ``bpf_stats``
   (``run_time_ns / run_cnt``, read from the program fd's fdinfo, counting
   held on by BPF_ENABLE_STATS) of the engine's program on
   ``filemap:mm_filemap_get_pages`` against an EMPTY program of the same
   attach type on the same tracepoint (bench/empty.bpf.c: ``tp_btf`` for
   CO-RE, ``raw_tp`` for BCC), each attached alone in its turn, alternated
   (the order reversed every other round), ``--event-rounds`` rounds, for two
   workloads (bench/pread_loop.c): cached 4 KiB ``pread()`` of one page, and
   cached 1 MiB sequential reads of a 64 MiB file. Prints the median of the
   per-round differences with its 95% interval, per workload.
   Target: <= +10 ns per event on both.
   ``--core-object NAME=PATH`` adds a CO-RE object (a variant built
   elsewhere) to the alternation, and prints it against the engine too.
2. The user's worst case: a loop of 4 KiB pread()s of one cached page.
   ``--rounds`` (>= 30) PAIRED rounds per engine: no program, the empty floor
   on mm_filemap_get_pages, then the engine started as the agent starts it by
   default (lookups and stalls on), back to back, each the fastest of 3 runs.
   Prints the median of the paired differences (percentage points of the
   no-program time) with its 95% order-statistic confidence interval.
   Target: median <= +3 points, met only if the interval's upper bound is too.
3. Load-and-attach time of the CO-RE programs, and the extra RSS.
4. ``--sharing-rounds``: the ``pread`` slowdown of shared hits alone (issue
   17): per engine, paired rounds of the engine with them off, then on, each
   the fastest of 3 runs; the median difference in points of the off time,
   with its 95% interval. Target: <= +0.5 points.

Run as root: ``.venv/bin/python bench/bpf_cost.py [--rounds 30] [--event-rounds 10]``.
Needs clang and gcc (it builds the empty object and the read loop in a
temporary directory) and, for BCC, python3-bpfcc. Prints the load average
with its figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_pagecache.probes.core import CoreProbe  # noqa: E402
from otel_pagecache.probes.libbpf import BpfObject, Libbpf  # noqa: E402

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


# The gate's two workloads: name -> (what it is, block size, reads per run, file size).
WORKLOADS = {
    "4k": ("cached 4 KiB pread of one page", 4096, 300_000, 4096),
    "1m": ("cached 1 MiB sequential reads", MIB, 2_000, 64 * MIB),
}


def stats_by_fd(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of one program, from its fd's fdinfo: exact to this
    program whatever else is loaded on the host (names are not unique)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    )
    return int(fields.get("run_time_ns", 0)), int(fields.get("run_cnt", 0))


class RunTimeStats:
    """kernel.bpf_stats_enabled's counting, held on by an fd (BPF_ENABLE_STATS)
    rather than by the sysctl, so that nothing else toggling it interferes."""

    def __enter__(self) -> RunTimeStats:
        lib = Libbpf.get().lib
        lib.bpf_enable_stats.argtypes = (ctypes.c_int,)
        lib.bpf_enable_stats.restype = ctypes.c_int
        self.fd = lib.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
        if self.fd < 0:
            raise OSError(-self.fd, "BPF_ENABLE_STATS")
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


@dataclass
class Setup:
    """Something to attach for a round: start() returns it attached (with
    close()), fd() the lookup program's fd on mm_filemap_get_pages."""

    name: str
    start: Callable[[], Any]
    fd: Callable[[Any], int]


def _empty_setup(empty_obj: Path, program: str) -> Setup:
    return Setup(program, _empty_program(empty_obj, program), lambda o: o.program_fd(program))


def event_setups(
    empty_obj: Path, core_objects: dict[str, str], bcc: bool
) -> dict[str, list[Setup]]:
    """engine -> its setups: the floor first, then the engine (and variants)."""
    setups = {
        "core": [
            _empty_setup(empty_obj, "empty_get_pages"),
            Setup("core", lambda: CoreProbe().start(), lambda p: p.program_fds()["on_get_pages"]),
            # The same object with shared hits off (CONFIG_PAGECACHE_SHARING=0:
            # the verifier drops their code): the cost of issue 17 is core's
            # figure minus this one's.
            Setup(
                "core-no-sharing",
                lambda: CoreProbe(sharing=False).start(),
                lambda p: p.program_fds()["on_get_pages"],
            ),
        ]
    }
    for name, path in core_objects.items():
        setups["core"].append(
            Setup(
                name,
                lambda path=path: CoreProbe(object_path=path).start(),
                lambda p: p.program_fds()["on_get_pages"],
            )
        )
    if bcc:
        from otel_pagecache.probes.bcc import BccProbe

        bcc_fd = lambda p: p._bpf.funcs[b"raw_tracepoint__mm_filemap_get_pages"].fd  # noqa: E731
        setups["bcc"] = [
            _empty_setup(empty_obj, "empty_raw_get_pages"),
            Setup("bcc", lambda: BccProbe().start(), bcc_fd),
            # Shared hits compiled out (no WITH_SHARING): their cost on BCC.
            Setup("bcc-no-sharing", lambda: BccProbe(sharing=False).start(), bcc_fd),
        ]
    return setups


def workload_files(tmp: Path) -> dict[str, Path]:
    files = {}
    for name, (_, _, _, size) in WORKLOADS.items():
        files[name] = tmp / f"data_{name}"
        with open(files[name], "wb") as f:
            f.write(os.urandom(size))
    return files


def run_workload(loop: Path, data: Path, name: str) -> float:
    """ns per read of one run of workload ``name`` (the file read whole first:
    page cache is shed from outside now and then, and the workload is cached)."""
    _, block, count, _ = WORKLOADS[name]
    with open(data, "rb") as f:
        while f.read(MIB):
            pass
    out = subprocess.run(
        [str(loop), str(data), str(count), str(block)], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


@dataclass
class EventRun:
    ns_per_event: float
    events: int
    ns_per_read: float


def per_event_rounds(
    tmp: Path, loop: Path, setups: dict[str, list[Setup]], rounds: int
) -> dict[tuple[str, str, str], list[EventRun]]:
    """(engine, setup, workload) -> one EventRun per round. Each round starts
    each setup of an engine alone in turn (the order reversed every other
    round), and runs both workloads under it."""
    files = workload_files(tmp)
    runs: dict[tuple[str, str, str], list[EventRun]] = {}
    with RunTimeStats():
        for r in range(rounds):
            for engine, engine_setups_ in setups.items():
                order = engine_setups_ if r % 2 == 0 else engine_setups_[::-1]
                for setup in order:
                    attached = setup.start()
                    try:
                        fd = setup.fd(attached)
                        for workload_name in WORKLOADS:
                            t0, c0 = stats_by_fd(fd)
                            per_read = run_workload(loop, files[workload_name], workload_name)
                            t1, c1 = stats_by_fd(fd)
                            runs.setdefault((engine, setup.name, workload_name), []).append(
                                EventRun((t1 - t0) / max(c1 - c0, 1), c1 - c0, per_read)
                            )
                    finally:
                        attached.close()
    return runs


def print_per_event(
    setups: dict[str, list[Setup]], runs: dict[tuple[str, str, str], list[EventRun]]
) -> None:
    rounds = len(next(iter(runs.values())))
    print(
        f"per-event cost of the lookup program on filemap:mm_filemap_get_pages "
        f"(bpf_stats run_time_ns / run_cnt), {rounds} alternated rounds;"
    )
    print(
        "floor: an EMPTY program of the same attach type on the same tracepoint "
        "(tp_btf for CO-RE, raw_tp for BCC), attached alone in its turn"
    )
    print(
        f"{'engine':<6} {'program':<16} {'workload':<8} {'events/run':>10} {'ns/event':>9} "
        f"{'extra ns, median [95% CI]':>27} {'extra ns/read':>13}  target <= +10 ns"
    )
    for engine, engine_setups_ in setups.items():
        floor = engine_setups_[0].name
        for setup in engine_setups_:
            for workload_name in WORKLOADS:
                mine = runs[(engine, setup.name, workload_name)]
                events = statistics.median(r.events for r in mine)
                ns = statistics.median(r.ns_per_event for r in mine)
                line = f"{engine:<6} {setup.name:<16} {workload_name:<8} {events:>10.0f} {ns:>9.1f}"
                if setup.name != floor:
                    base = runs[(engine, floor, workload_name)]
                    extra = [
                        m.ns_per_event - b.ns_per_event for m, b in zip(mine, base, strict=True)
                    ]
                    median, low, high, verdict = against_target(extra, 10)
                    reads = WORKLOADS[workload_name][2]
                    line += (
                        f" {f'{median:+.1f} [{low:+.1f}, {high:+.1f}]':>27}"
                        f" {median * events / reads:>+13.1f}  {verdict}"
                    )
                print(line)
    for name, (what, block, count, size) in WORKLOADS.items():
        print(f"  {name}: {what}: {count} reads of {block} B from a {size} B file per run")
    for engine, engine_setups_ in setups.items():
        # Variants (--core-object) against the engine itself, paired by round.
        engine_name = engine_setups_[1].name
        for setup in engine_setups_[2:]:
            for workload_name in WORKLOADS:
                diff = [
                    v.ns_per_event - e.ns_per_event
                    for v, e in zip(
                        runs[(engine, setup.name, workload_name)],
                        runs[(engine, engine_name, workload_name)],
                        strict=True,
                    )
                ]
                low, high = order_statistic_ci(diff)
                print(
                    f"  {setup.name} - {engine_name}, {workload_name}: "
                    f"{statistics.median(diff):+.1f} ns/event [{low:+.1f}, {high:+.1f}]"
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


def against_target(values: list[float], target: float) -> tuple[float, float, float, str]:
    """Median, 95% interval (order statistics) and the verdict against
    ``target``: met only if the whole interval is within it."""
    low, high = order_statistic_ci(values)
    median = statistics.median(values)
    verdict = "met" if high <= target else "median only" if median <= target else "NOT met"
    return median, low, high, verdict


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
def engine_setups(
    empty_obj: Path, bcc: bool = True
) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    setups: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "core": (_empty_program(empty_obj, "empty_get_pages"), lambda: CoreProbe().start()),
    }
    from otel_pagecache.probes.bcc import BccProbe, bcc_available

    if bcc and bcc_available():
        setups["bcc"] = (
            _empty_program(empty_obj, "empty_raw_get_pages"),
            lambda: BccProbe().start(),
        )
    return setups


def pread_paired(
    tmp: Path, empty_obj: Path, loop: Path, rounds: int, bcc: bool = True, repeats: int = 3
) -> dict[str, list[float]]:
    """Per engine, ``rounds`` paired differences in percentage points of the
    no-program time: each round runs nothing, the empty floor, then the engine
    (as the agent starts it by default), back to back (in the reverse order
    every other round), and compares the last two against the first of the
    same round. Each of the three is the fastest of ``repeats`` runs under one
    attachment: other work on a shared machine only ever adds time."""
    page = tmp / "page"
    page.write_bytes(os.urandom(4096))
    setups = engine_setups(empty_obj, bcc)
    diffs: dict[str, list[float]] = {engine: [] for engine in setups}
    for r in range(rounds):
        for engine, (floor, agent) in setups.items():
            named = {"none": None, "floor": floor, "agent": agent}
            order = list(named) if r % 2 == 0 else list(named)[::-1]
            ns = {name: fastest_pread(page, loop, named[name], repeats) for name in order}
            diffs[engine].append(100 * (ns["agent"] - ns["floor"]) / ns["none"])
    return diffs


def fastest_pread(
    page: Path, loop: Path, start: Callable[[], Any] | None, repeats: int = 3
) -> float:
    """ns per cached 4 KiB pread of ``page`` with what ``start`` attaches (or
    nothing): the fastest of ``repeats`` runs under one attachment, since
    other work on a shared machine only ever adds time."""
    attached = start() if start is not None else None
    try:
        return min(
            float(
                subprocess.run(
                    [str(loop), str(page), str(PREAD_COUNT)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            for _ in range(repeats)
        )
    finally:
        if attached is not None:
            attached.close()


def sharing_pread(tmp: Path, loop: Path, rounds: int, bcc: bool = True) -> dict[str, list[float]]:
    """Per engine, ``rounds`` paired differences, in points of the sharing-off
    time, of the engine with shared hits on (the agent's default) over the
    same engine with them off, on cached 4 KiB preads of one page (order
    reversed every other round). Issue 17's target: <= +0.5 points."""
    page = tmp / "page"
    page.write_bytes(os.urandom(4096))
    setups = {"core": (lambda: CoreProbe(sharing=False).start(), lambda: CoreProbe().start())}
    if bcc:
        from otel_pagecache.probes.bcc import BccProbe

        setups["bcc"] = (lambda: BccProbe(sharing=False).start(), lambda: BccProbe().start())
    diffs: dict[str, list[float]] = {engine: [] for engine in setups}
    for r in range(rounds):
        for engine, (off, on) in setups.items():
            named = {"off": off, "on": on}
            order = list(named) if r % 2 == 0 else list(named)[::-1]
            ns = {name: fastest_pread(page, loop, named[name]) for name in order}
            diffs[engine].append(100 * (ns["on"] - ns["off"]) / ns["off"])
    return diffs


def print_points(diffs: dict[str, list[float]], per_round: str, column: str, target: float) -> None:
    """A table of paired pread differences in points, per engine, against ``target``."""
    print(f"4 KiB pread of a cached page, {PREAD_COUNT} per run, the fastest of 3; {per_round}")
    print(f"{'engine':<7} {'rounds':>6} {column:>13} {'95% CI (order statistics)':>27}")
    for engine, values in diffs.items():
        median, low, high, verdict = against_target(values, target)
        print(
            f"{engine:<7} {len(values):>6} {median:>+13.2f} "
            f"{f'[{low:+.2f}, {high:+.2f}]':>27}   target <= +{target:g} points: {verdict}"
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


def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=30, help="paired pread rounds (>= 30; 0: skip them)"
    )
    parser.add_argument(
        "--event-rounds", type=int, default=10, help="alternated per-event rounds (0: skip them)"
    )
    parser.add_argument(
        "--core-object",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also measure this CO-RE object per event, alternated with the others",
    )
    parser.add_argument(
        "--sharing-rounds",
        type=int,
        default=0,
        help="paired pread rounds of shared hits off vs on (>= 30; 0: skip them, the default)",
    )
    parser.add_argument("--no-bcc", action="store_true", help="CO-RE only")
    args = parser.parse_args()
    for name in ("rounds", "sharing_rounds"):
        if 0 < getattr(args, name) < 30:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag}: at least 30 (the 95% interval needs them), or 0")
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    from otel_pagecache.probes.bcc import bcc_available

    bcc = not args.no_bcc and bcc_available()
    if not args.no_bcc and not bcc:
        print("bcc: python3-bpfcc not importable, its rounds are skipped")
    core_objects = dict(item.split("=", 1) for item in args.core_object)
    print(f"kernel {os.uname().release}; {load()} at start")
    with tempfile.TemporaryDirectory(dir=ROOT) as tmpdir:
        tmp = Path(tmpdir)
        empty_obj, loop = build(tmp)
        load_time_and_rss()
        if args.event_rounds:
            setups = event_setups(empty_obj, core_objects, bcc)
            print_per_event(setups, per_event_rounds(tmp, loop, setups, args.event_rounds))
            print(f"({load()} after the per-event rounds)")
        if args.rounds:
            print_points(
                pread_paired(tmp, empty_obj, loop, args.rounds, bcc),
                "per round: nothing, the empty floor, the engine at the agent's defaults, "
                "back to back",
                "median pts",
                3,
            )
            print(f"({load()} after the pread rounds)")
        if args.sharing_rounds:
            print_points(
                sharing_pread(tmp, loop, args.sharing_rounds, bcc),
                "per round: the engine with shared hits off, then on (the agent's default)",
                "on - off pts",
                0.5,
            )
            print(f"({load()} after the shared-hit pread rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
