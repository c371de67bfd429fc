"""The what-if curve against the kernel: does it predict the hit ratio a
memcg really gets at another limit?

Ground truth is the hit ratio the kernel gave, from the agent's exact lookups
and misses (the CO-RE programs' counters) of a memcg we create beneath the
test's own cgroup with a limit we set (v1 ``memory.limit_in_bytes``, v2
``memory.max``). A pre-started reader (tests/whatif_worker.py), moved into it,
reads 4 KiB pages in a seeded order from cold files opened with
POSIX_FADV_RANDOM (no readahead: a miss is one page). The curve is the
agent's estimator (otel_pagecache/whatif.py) fed by the agent's BPF samples.

The same access sequence runs at three limits; the smallest limit's curve,
read at the page cache each run really held at its end (``active_file +
inactive_file``), must give each run's measured hit ratio:
  - uniform: within 0.05, uncalibrated;
  - hot set inside a cold file, two files at different rates: within 0.08,
    calibrated as the agent calibrates (scale 1 moved onto the smallest run's
    measured ratio; pagecache.whatif.calibrated=true, docs/whatif.md);
  - a loop larger than the cache: reported (LRU misses all of it; the
    kernel's lists keep part), and the curve must see the loop's size.
Then the agent starting mid-workload, and the window sliding past an old phase.

Host: a 256 MiB file, limits 64/128/192 MiB. Guests (scripts/vmtest, 6.12
with MGLRU off, 7.x with it on): 64 MiB, limits 16/32/48 MiB. Each result line
names the LRU; OTEL_PAGECACHE_TEST_WHATIF_RESULTS names a file they are
appended to (docs/whatif.md's table).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_pagecache.probes import ProbeUnavailable
from otel_pagecache.probes.core import CoreProbe
from otel_pagecache.whatif import Curve, WhatifTracker
from tests.conftest import make_cold_file
from tests.kernel_features import GUEST_KERNEL, skip_unless_lookups

pytestmark = pytest.mark.kernel
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
SCALED = GUEST_KERNEL is not None
FILE = (64 if SCALED else 256) * MIB
LIMITS = tuple(m * MIB for m in ((16, 32, 48) if SCALED else (64, 128, 192)))
PAGES = FILE // PAGE
# Guests (TCG) read once per page on average, the host twice: 3 minutes of
# guest time for every what-if test is the budget.
ACCESSES = (1 if SCALED else 2) * PAGES
LOOP_ROUNDS = 2 if SCALED else 3
SHIFT = 3 if SCALED else 4  # one page in 8 (guests), in 16 (host): 2,048 / 4,096 keys
LRU_GEN = Path("/sys/kernel/mm/lru_gen/enabled")
RESULTS = os.environ.get("OTEL_PAGECACHE_TEST_WHATIF_RESULTS")


def lru_name() -> str:
    """The reclaim the kernel runs: MGLRU when lru_gen is on, else the two lists."""
    try:
        enabled = int(LRU_GEN.read_text().strip(), 16)
    except (OSError, ValueError):
        return "two-list"
    return "mglru" if enabled & 1 else "two-list"


# One reclaim per guest kernel, both covered: the guests are CI's critical
# path, and both LRUs on both kernels took 76 s (6.12) and 98 s (7.x) of it.
GUEST_LRU = {"6.12": "off", "7": "on"}


@pytest.fixture(scope="module")
def lru():
    """The host's reclaim as it is; in a guest of ours, MGLRU on or off as
    GUEST_LRU says (a setting of that VM alone)."""
    if not SCALED:
        yield lru_name()
        return
    if GUEST_KERNEL not in GUEST_LRU:
        pytest.skip(f"the what-if kernel runs are for the 6.12 and 7.x guests, not {GUEST_KERNEL}")
    if not LRU_GEN.exists():
        pytest.fail(f"{LRU_GEN} is missing: Debian's {GUEST_KERNEL} kernel has MGLRU")
    before = LRU_GEN.read_text().strip()
    LRU_GEN.write_text("y" if GUEST_LRU[GUEST_KERNEL] == "on" else "n")
    yield lru_name()
    LRU_GEN.write_text("y" if int(before, 16) else "n")


@pytest.fixture(scope="module")
def probe(real_hierarchy):
    try:
        engine = CoreProbe(stalls=False).start()
    except ProbeUnavailable as e:
        pytest.fail(f"the CO-RE engine must load on the CI kernel: {e}")
    skip_unless_lookups(engine)
    engine.set_whatif(SHIFT, 64)
    yield engine
    engine.close()


class Harness:
    """The probe's samples into the current tracker; the counters of one memcg."""

    def __init__(self, probe) -> None:
        self.probe = probe
        self.tracker: WhatifTracker | None = None
        self.ring = probe.whatif_ring(self._take)

    def _take(self, raw: bytes) -> None:
        if self.tracker is not None:
            self.tracker.take(raw)

    def start(self, window_s: float = 3600.0) -> WhatifTracker:
        self.drain()
        self.tracker = WhatifTracker(window_s=window_s, shift=SHIFT)
        return self.tracker

    def drain(self) -> None:
        while self.ring.consume():
            pass

    def counts(self, memcg: int) -> tuple[int, int]:
        reading = self.probe.read()
        return reading.lookups.get(memcg, 0), reading.misses.get(memcg, 0)


@pytest.fixture(scope="module")
def harness(probe):
    h = Harness(probe)
    yield h
    h.ring.close()


class Reader:
    """tests/whatif_worker.py, warmed up outside, then moved into a memcg."""

    def __init__(self, memcgs, directory: Path, warm: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("whatif_worker.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        memcgs.children.append(self.proc)
        # Pinned: the probes' insertion slot is per CPU (see conftest.Worker).
        os.sched_setaffinity(self.proc.pid, {min(os.sched_getaffinity(0))})
        self.do(None, "uniform", -64, 1, warm)
        self.do(None, "lock")
        (directory / "cgroup.procs").write_text(str(self.proc.pid))

    def do(self, harness: Harness | None, *command: object, during=None) -> None:
        """Run a command, polling the samples' ring meanwhile (one thread polls it)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(" ".join(map(str, command)) + "\n")
        self.proc.stdin.flush()
        while not select.select([self.proc.stdout], [], [], 0)[0]:
            select.select([self.proc.stdout], [], [], 0.05)
            if harness is not None:
                harness.ring.consume()
            if during is not None:
                during()
        line = self.proc.stdout.readline()
        assert line.strip() == "ok", f"reader failed on {command}: {line!r}"
        if harness is not None:
            harness.drain()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("exit\n")
        self.proc.stdin.flush()
        self.proc.wait(30)


def _set_limit(directory: Path, limit: int) -> None:
    v1 = directory / "memory.limit_in_bytes"
    (v1 if v1.exists() else directory / "memory.max").write_text(str(limit))


def _stat(directory: Path) -> dict[str, int]:
    lines = (directory / "memory.stat").read_text().splitlines()
    return {k: int(v) for k, v in (line.split() for line in lines if line)}


def _file_lru_pages(directory: Path) -> int:
    stat = _stat(directory)
    return (stat["active_file"] + stat["inactive_file"]) // PAGE


def _kubelet_working_set(directory: Path) -> int:
    """usage - inactive_file, as the kubelet computes it (bytes)."""
    usage = directory / "memory.usage_in_bytes"
    used = int((usage if usage.exists() else directory / "memory.current").read_text())
    stat = _stat(directory)
    return max(0, used - stat.get("total_inactive_file", stat["inactive_file"]))


def _evict(*paths: Path) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


@dataclass
class Run:
    limit: int
    lookups: int
    misses: int
    cache_pages: int  # the memcg's page cache at the run's end
    curve: Curve
    kubelet_working_set: int  # usage - inactive_file at the run's end (bytes)

    @property
    def measured(self) -> float:
        return 1.0 - self.misses / self.lookups


def _run(memcgs, harness, data_dir: Path, limit: int, command: tuple, files: tuple) -> Run:
    _, directory = memcgs.create()
    _set_limit(directory, limit)
    memcg = directory.stat().st_ino
    warm = make_cold_file(data_dir / f"warm-{memcg}", MIB)
    _evict(*files)
    reader = Reader(memcgs, directory, warm)
    tracker = harness.start()
    assert harness.counts(memcg) == (0, 0)
    reader.do(harness, *command)
    lookups, misses = harness.counts(memcg)
    cache_pages = _file_lru_pages(directory)
    kubelet = _kubelet_working_set(directory)
    curve = tracker.curve(memcg)
    reader.close()
    warm.unlink()
    assert curve is not None and lookups > 0, (lookups, misses)
    return Run(limit, lookups, misses, cache_pages, curve, kubelet)


def _report(pattern: str, lru: str, runs: list[Run], calibrated: bool) -> list[tuple]:
    """(limit, cache, measured, predicted) per run from the first run's curve,
    printed and appended to the results file."""
    base = runs[0]
    shift = base.measured - base.curve.hit_ratio(base.cache_pages) if calibrated else 0.0
    best = base.curve.best() or 0.0
    rows = []
    for run in runs:
        predicted = min(best, max(0.0, base.curve.hit_ratio(run.cache_pages) + shift))
        rows.append((run.limit // MIB, run.cache_pages * PAGE // MIB, run.measured, predicted))
    kernel = GUEST_KERNEL or os.uname().release
    for run, (limit, cache, measured, predicted) in zip(runs, rows, strict=True):
        working_set = run.curve.working_set(0.95) or 0.0
        line = {
            "pattern": pattern,
            "kernel": kernel,
            "lru": lru,
            "limit_mib": limit,
            "cache_mib": cache,
            "measured": round(measured, 4),
            "predicted": round(predicted, 4),
            "calibrated": calibrated,
            "samples": base.curve.samples,
            "best": round(run.curve.best() or 0.0, 4),
            "whatif_ws95_mib": round(working_set * PAGE / MIB, 1),
            "kubelet_ws_mib": round(run.kubelet_working_set / MIB, 1),
        }
        print(json.dumps(line))
        if RESULTS:
            with open(RESULTS, "a") as f:
                f.write(json.dumps(line) + "\n")
    return rows


def test_uniform_random_reads_are_predicted_within_0_05(memcgs, data_dir, harness, lru):
    target = make_cold_file(data_dir / "uniform", FILE)
    command = ("uniform", -ACCESSES, 16, target)
    runs = [_run(memcgs, harness, data_dir, limit, command, (target,)) for limit in LIMITS]
    rows = _report("uniform", lru, runs, calibrated=False)
    for limit, _, measured, predicted in rows:
        assert abs(predicted - measured) <= 0.05, (limit, rows)
    target.unlink()


@pytest.mark.parametrize("pattern", ["hotcold", "mixed"])
def test_skewed_and_mixed_reads_are_predicted_within_0_08_calibrated(
    memcgs, data_dir, harness, lru, pattern
):
    target = make_cold_file(data_dir / pattern, FILE)
    if pattern == "hotcold":
        # 80% of the accesses to an eighth of the file, the rest anywhere.
        files: tuple = (target,)
        command: tuple = ("hotcold", -ACCESSES, 17, target, PAGES // 8, 0.8)
    else:
        # Two files of half the size each, one read twice as often.
        os.truncate(target, FILE // 2)
        other = make_cold_file(data_dir / "mixed-b", FILE // 2)
        files = (target, other)
        command = ("mixed", -ACCESSES, 18, target, other, 2 / 3)
    runs = [_run(memcgs, harness, data_dir, limit, command, files) for limit in LIMITS]
    rows = _report(pattern, lru, runs, calibrated=True)
    _report(pattern, lru, runs, calibrated=False)  # for the record
    for limit, _, measured, predicted in rows:
        assert abs(predicted - measured) <= 0.08, (limit, rows)
    for path in files:
        path.unlink()


def test_a_loop_larger_than_the_cache_is_reported(memcgs, data_dir, harness, lru):
    """LRU misses a loop larger than the cache entirely; the kernel keeps part.
    Reported, not asserted (docs/whatif.md); the curve must see the loop's size."""
    loop_pages = PAGES * 3 // 8  # 1.5 times the smallest limit
    target = make_cold_file(data_dir / "loop", loop_pages * PAGE)
    command = ("loop", LOOP_ROUNDS, target)
    run = _run(memcgs, harness, data_dir, LIMITS[0], command, (target,))
    _report("loop", lru, [run], calibrated=False)
    # Every pass but the first hits in an LRU of the loop's size, none below.
    repeats = (LOOP_ROUNDS - 1) / LOOP_ROUNDS
    assert run.curve.hit_ratio(loop_pages * 1.03) == pytest.approx(repeats, abs=0.05)
    assert run.curve.hit_ratio(loop_pages * 0.9) == pytest.approx(0.0, abs=0.05)
    target.unlink()


def test_started_mid_workload_and_an_old_phase_leaves_with_the_window(
    memcgs, data_dir, harness, lru
):
    """Window 20 s. The reader is already at work when the curve starts; then a
    small file (all hits) for 8 s; then uniform reads for 32 s. At the end the
    curve at scale 1 must give the hit ratio of the last 20 s (uniform only)."""
    if SCALED:
        pytest.skip("host only: 45 s of wall time, beyond the guests' budget (docs/whatif.md)")
    window = 20.0
    target = make_cold_file(data_dir / "window", FILE)
    small = make_cold_file(data_dir / "small", LIMITS[0] // 4)
    _, directory = memcgs.create()
    _set_limit(directory, LIMITS[0])
    memcg = directory.stat().st_ino
    warm = make_cold_file(data_dir / "warm-window", MIB)
    reader = Reader(memcgs, directory, warm)
    harness.tracker = None
    reader.do(harness, "uniform", 5, 19, target)  # before the agent starts: unseen
    tracker = harness.start(window_s=window)
    reader.do(harness, "uniform", 8, 20, small)  # the old phase
    marks: list[tuple[float, int, int]] = []

    def mark() -> None:
        if not marks or time.monotonic() - marks[-1][0] >= 1.0:
            marks.append((time.monotonic(), *harness.counts(memcg)))

    reader.do(harness, "uniform", 32, 21, target, during=mark)
    now = time.monotonic()
    lookups, misses = harness.counts(memcg)
    start = next(m for m in marks if m[0] >= now - window)
    measured = 1.0 - (misses - start[2]) / (lookups - start[1])
    cache_pages = _file_lru_pages(directory)
    curve = tracker.curve(memcg)
    predicted = curve.hit_ratio(cache_pages)
    line = {
        "pattern": "window",
        "kernel": GUEST_KERNEL or os.uname().release,
        "lru": lru,
        "limit_mib": LIMITS[0] // MIB,
        "cache_mib": cache_pages * PAGE // MIB,
        "measured": round(measured, 4),
        "predicted": round(predicted, 4),
        "calibrated": False,
        "samples": curve.samples,
    }
    print(json.dumps(line))
    if RESULTS:
        with open(RESULTS, "a") as f:
            f.write(json.dumps(line) + "\n")
    reader.close()
    assert abs(predicted - measured) <= 0.05, line
    for path in (target, small, warm):
        path.unlink()
