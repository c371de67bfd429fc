"""Each lookup hook this kernel allows: its exactness and its per-event cost.

For each kind of lookup hook (tracepoint, fentry, kprobe) the running
kernel's BTF offers and that loads here, alone:
  1. a cold read of a 64 MiB file in 1 MiB read()s, then a warm re-read:
     lookups and misses of this process's memcg (truth: 16384 and 16384,
     then 16384 and 0);
  2. 4 KiB pread()s of one cached page: ns per event of each lookup program
     (kernel.bpf_stats_enabled=1, run_time_ns / run_cnt), beside the
     counters' programs on the same run.
Made for the kernel matrix (scripts/vmtest run --kernel K -- .venv/bin/python
bench/lookup_hooks.py): under TCG the figures compare hooks within one guest,
they are not absolute. Run as root. Restores kernel.bpf_stats_enabled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_pagecache.probes import ProbeUnavailable  # noqa: E402
from otel_pagecache.probes.core import CoreProbe  # noqa: E402

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
MIB, PAGE = 1 << 20, 4096
PREADS = 20_000


def own_memcg_dir() -> Path:
    """This process's memory cgroup directory (v2, or v1's memory hierarchy)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        # 0::/user.slice/session-1.scope   or   7:memory:/user.slice
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            return Path(f"/sys/fs/cgroup{path}")
        if "memory" in controllers.split(","):
            return Path(f"/sys/fs/cgroup/memory{path}")
    raise RuntimeError("no memory cgroup in /proc/self/cgroup")


def program_stats(probe: CoreProbe) -> dict[str, tuple[int, int]]:
    ids = {}
    for name, fd in probe.program_fds().items():
        for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
            if line.startswith("prog_id:"):
                ids[int(line.split()[1])] = name
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True)
    return {
        ids[p["id"]]: (p.get("run_time_ns", 0), p.get("run_cnt", 0))
        for p in json.loads(out.stdout)
        if p["id"] in ids
    }


def counts(probe: CoreProbe, memcg: int) -> tuple[int, int]:
    reading = probe.read()
    return reading.lookups.get(memcg, 0), reading.misses.get(memcg, 0)


def read_all(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(MIB):
            pass


def measure(kind: str, tmp: Path, memcg: int) -> None:
    try:
        probe = CoreProbe(stalls=False, hook_kinds=(kind,)).start()
    except ProbeUnavailable as e:
        print(f"{kind}: does not load ({e})")
        return
    try:
        if probe.lookup_hook == "none":
            print(f"{kind}: not offered or refused ({'; '.join(probe.lookup_hooks_refused)})")
            return
        cold = tmp / "cold"
        fd = os.open(cold, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        before = counts(probe, memcg)
        read_all(cold)
        middle = counts(probe, memcg)
        read_all(cold)
        after = counts(probe, memcg)
        cold_delta = [m - b for m, b in zip(middle, before, strict=True)]
        warm_delta = [a - m for a, m in zip(after, middle, strict=True)]
        print(
            f"{probe.lookup_hook}: cold read lookups {cold_delta[0]} misses {cold_delta[1]}; "
            f"warm re-read lookups {warm_delta[0]} misses {warm_delta[1]} "
            f"(truth {64 * MIB // PAGE}/{64 * MIB // PAGE}, {64 * MIB // PAGE}/0)"
        )
        page = tmp / "page"
        fd = os.open(page, os.O_RDONLY)
        os.pread(fd, PAGE, 0)
        start = program_stats(probe)
        for _ in range(PREADS):
            os.pread(fd, PAGE, 0)
        end = program_stats(probe)
        os.close(fd)
        for name in probe.attached:
            runtime = end.get(name, (0, 0))[0] - start.get(name, (0, 0))[0]
            events = end.get(name, (0, 0))[1] - start.get(name, (0, 0))[1]
            if events:
                print(f"  {name:<28} {events:>8} events {runtime / events:>9.1f} ns/event")
    finally:
        probe.close()


def main() -> None:
    previous = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
            tmp = Path(d)
            with open(tmp / "cold", "wb") as f:
                f.write(os.urandom(64 * MIB))
                f.flush()
                os.fsync(f.fileno())
            (tmp / "page").write_bytes(os.urandom(PAGE))
            print(f"kernel {os.uname().release}; {PREADS} preads of one cached page per hook")
            # A memcg of our own, so that nobody else's reads are counted.
            parent = own_memcg_dir()
            mine = parent / f"lookup-hooks-{os.getpid()}"
            mine.mkdir()
            try:
                (mine / "cgroup.procs").write_text(str(os.getpid()))
                for kind in ("tracepoint", "fentry", "kprobe"):
                    measure(kind, tmp, mine.stat().st_ino)
            finally:
                (parent / "cgroup.procs").write_text(str(os.getpid()))
                mine.rmdir()
    finally:
        STATS.write_text(previous)


if __name__ == "__main__":
    main()
