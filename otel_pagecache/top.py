"""``otel-pagecache top``: a live per-container table, largest page cache first.

It reads the same snapshots the agent exports, without any backend, so it is
the first thing a person runs on a host.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from .containers import Identity
from .residency import MemcgSample, Snapshot

_CLEAR = "\x1b[H\x1b[2J"


def display_name(identity: Identity, path: str) -> str:
    if identity.pod_name:
        name = f"{identity.namespace or '?'}/{identity.pod_name}"
        return f"{name}/{identity.container_name}" if identity.container_name else name
    if identity.kind == "container" and identity.container_id:
        label = identity.container_name or identity.container_id[:12]
        return f"{identity.runtime or 'container'}:{label}"
    return path


def human_bytes(value: int | float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return "-"


_COLUMNS = (
    "CACHE",
    "ACTIVE",
    "INACTIVE",
    "DIRTY",
    "WBACK",
    "SHMEM",
    "USAGE",
    "LIMIT",
    "REFLT/s",
    "HIT%",
    "MISS/s",
    "EVICT/s",
)


def _rate(now: int | None, then: int | None, elapsed: float) -> str:
    if now is None or then is None or elapsed <= 0:
        return "-"
    return f"{max(0, now - then) / elapsed:.0f}"


def _row(
    sample: MemcgSample, refault_rate: float | None, before: MemcgSample | None, elapsed: float
) -> list[str]:
    s = sample.stat
    a = sample.activity
    b = before.activity if before is not None else None
    hit = "-" if a is None or a.hit_ratio is None else f"{a.hit_ratio * 100:.1f}"
    return [
        human_bytes(sample.file_lru_bytes),
        human_bytes(s.get("active_file")),
        human_bytes(s.get("inactive_file")),
        human_bytes(s.get("dirty")),
        human_bytes(s.get("writeback")),
        human_bytes(s.get("shmem")),
        human_bytes(sample.usage),
        human_bytes(sample.limit) if sample.limit is not None else "max",
        "-" if refault_rate is None else f"{refault_rate:.0f}",
        hit,
        _rate(a and a.misses, b and b.misses, elapsed),
        _rate(a and a.evictions, b and b.evictions, elapsed),
    ]


def render(
    snapshot: Snapshot, previous: Snapshot | None = None, width: int = 120, rows: int = 40
) -> str:
    """The table as text; ``previous`` gives per-second rates."""
    meminfo = snapshot.meminfo
    total_lru = sum(m.file_lru_bytes for m in snapshot.memcgs)
    activity = snapshot.activity
    engine = f"activity: {activity.engine}" if activity else "activity: off"
    lines = [
        f"otel-pagecache top — cgroup v{snapshot.hierarchy_version}, "
        f"{snapshot.cgroups_discovered} memcgs, read in {snapshot.duration_s * 1000:.1f} ms, "
        f"{engine}",
        "node: Cached {} Active(file) {} Inactive(file) {} Dirty {} Writeback {} | "
        "sum of memcg file LRU {}".format(
            human_bytes(meminfo.get("Cached")),
            human_bytes(meminfo.get("Active(file)")),
            human_bytes(meminfo.get("Inactive(file)")),
            human_bytes(meminfo.get("Dirty")),
            human_bytes(meminfo.get("Writeback")),
            human_bytes(total_lru),
        ),
        "",
    ]
    ordered = sorted(snapshot.memcgs, key=lambda m: m.file_lru_bytes, reverse=True)[: max(1, rows)]
    names = [display_name(m.identity, m.path) for m in ordered]
    # Wide enough for "containerd:<12 hex>" always; wider when the terminal allows.
    name_width = max(24, min(max(map(len, names), default=0), width - 9 * len(_COLUMNS) - 2))
    lines.append(f"{'CONTAINER / CGROUP':<{name_width}} " + " ".join(f"{c:>8}" for c in _COLUMNS))
    prev = {m.id: m for m in previous.memcgs} if previous else {}
    elapsed = snapshot.taken_at - previous.taken_at if previous else 0.0
    for sample, name in zip(ordered, names, strict=True):
        rate = None
        before = prev.get(sample.id)
        if before is not None and elapsed > 0:
            now_r, then_r = sample.stat.get("refault_file"), before.stat.get("refault_file")
            if now_r is not None and then_r is not None:
                rate = max(0, now_r - then_r) / elapsed
        if len(name) > name_width:
            name = "…" + name[-(name_width - 1) :]
        cells = _row(sample, rate, before, elapsed)
        lines.append(f"{name:<{name_width}} " + " ".join(f"{c:>8}" for c in cells))
    if len(snapshot.memcgs) > len(ordered):
        lines.append(f"… {len(snapshot.memcgs) - len(ordered)} more")
    return "\n".join(lines) + "\n"


def run_top(
    read: Callable[[], Snapshot],
    interval_s: float = 2.0,
    count: int | None = None,
    out: TextIO = sys.stdout,
    should_stop: Callable[[], bool] = lambda: False,
    previous: Snapshot | None = None,
) -> None:
    shown = 0
    interactive = out.isatty()
    while not should_stop():
        snapshot = read()
        size = shutil.get_terminal_size((120, 40))
        text = render(snapshot, previous, size.columns, max(5, size.lines - 6))
        out.write((_CLEAR if interactive else "") + text)
        out.flush()
        previous = snapshot
        shown += 1
        if count is not None and shown >= count:
            return
        deadline = time.monotonic() + interval_s
        while time.monotonic() < deadline and not should_stop():
            time.sleep(min(0.2, interval_s))
