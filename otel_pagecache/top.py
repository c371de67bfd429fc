"""``otel-pagecache top``: a live per-container table, largest page cache first.

It reads the same snapshots the agent exports, without any backend, so it is
the first thing a person runs on a host. On a terminal, ``q`` quits (so does
Ctrl-C) and ``c``/``m``/``e`` sort by cache, misses/s or evictions/s, as
cachetop does; a footer line says so.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import TextIO

from . import sharing
from .containers import Identity
from .residency import MemcgSample, Snapshot

_CLEAR = "\x1b[H\x1b[2J"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Sort key -> (the key that picks it, the column it sorts).
SORT_KEYS = ("cache", "misses", "evictions")
_SORT_BY_KEY = {"c": "cache", "m": "misses", "e": "evictions"}
QUIT_KEYS = ("q", "Q")


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
    "NEED95",  # the what-if curve's 95% working set (docs/whatif.md)
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
    need = a.whatif.working_sets.get(0.95) if a is not None and a.whatif is not None else None
    return [
        human_bytes(sample.file_lru_bytes),
        human_bytes(None if need is None else need * _PAGE_SIZE),
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


def footer(sort: str) -> str:
    return f"q quit (or Ctrl-C) | sort: c cache, m misses/s, e evictions/s | sorted by {sort}"


def _sort_value(sample: MemcgSample, before: MemcgSample | None, sort: str) -> float:
    if sort == "cache":
        return sample.file_lru_bytes
    a, b = sample.activity, before.activity if before is not None else None
    if a is None or b is None:
        return -1.0
    now, then = (a.misses, b.misses) if sort == "misses" else (a.evictions, b.evictions)
    return float(max(0, now - then)) if now is not None and then is not None else -1.0


def render(
    snapshot: Snapshot,
    previous: Snapshot | None = None,
    width: int = 120,
    rows: int = 40,
    sort: str = "cache",
    keys_line: bool = False,
) -> str:
    """The table as text; ``previous`` gives per-second rates; ``sort`` one of SORT_KEYS
    (ties, and rows without activity, fall back to cache size)."""
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
    prev = {m.id: m for m in previous.memcgs} if previous else {}
    ordered = sorted(
        snapshot.memcgs,
        key=lambda m: (_sort_value(m, prev.get(m.id), sort), m.file_lru_bytes),
        reverse=True,
    )[: max(1, rows)]
    names = [display_name(m.identity, m.path) for m in ordered]
    # Wide enough for "containerd:<12 hex>" always; wider when the terminal allows.
    name_width = max(24, min(max(map(len, names), default=0), width - 9 * len(_COLUMNS) - 2))
    lines.append(f"{'CONTAINER / CGROUP':<{name_width}} " + " ".join(f"{c:>8}" for c in _COLUMNS))
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
    # Whose cache each container shown reads, and who reads its cache.
    shown = [(m.id, n) for m, n in zip(ordered, names, strict=True)]
    lines += sharing.top_lines(activity.shared if activity else None, shown)
    if keys_line:
        lines.append(footer(sort))
    return "\n".join(lines) + "\n"


KeyReader = Callable[[float], "str | None"]


@contextlib.contextmanager
def terminal_keys(stream: TextIO = sys.stdin) -> Iterator[KeyReader | None]:
    """A reader of single key presses from a terminal (None when ``stream`` is not one).

    cbreak mode: keys arrive unbuffered and unechoed while Ctrl-C still sends
    SIGINT; the terminal's mode is restored on the way out."""
    try:
        fd = stream.fileno()
        if not os.isatty(fd):
            raise OSError
        saved = termios.tcgetattr(fd)
    except (OSError, ValueError, termios.error):
        yield None
        return

    def read_key(timeout_s: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout_s))
        if not ready:
            return None
        data = os.read(fd, 32)
        return data.decode(errors="replace")[:1] if data else "q"  # EOF: quit

    tty.setcbreak(fd)
    try:
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_top(
    read: Callable[[], Snapshot],
    interval_s: float = 2.0,
    count: int | None = None,
    out: TextIO = sys.stdout,
    should_stop: Callable[[], bool] = lambda: False,
    previous: Snapshot | None = None,
    keys: KeyReader | None = None,
    sort: str = "cache",
) -> None:
    """Screens until ``count``, ``should_stop()``, or a quit key from ``keys``."""
    shown = 0
    interactive = out.isatty()
    snapshot = None
    while not should_stop():
        snapshot = read()
        redraw = False
        while True:
            size = shutil.get_terminal_size((120, 40))
            text = render(
                snapshot,
                previous,
                size.columns,
                max(5, size.lines - 7),
                sort=sort,
                keys_line=keys is not None,
            )
            out.write((_CLEAR if interactive else "") + text)
            out.flush()
            if not redraw:
                shown += 1
            if count is not None and shown >= count:
                return
            # Wait for the next screen; a sort key redraws this one at once.
            deadline = time.monotonic() + interval_s
            key = None
            while time.monotonic() < deadline and not should_stop():
                left = deadline - time.monotonic()
                if keys is None:
                    time.sleep(min(0.2, left))
                    continue
                key = keys(min(0.2, left))
                if key in QUIT_KEYS:
                    return
                if key in _SORT_BY_KEY:
                    sort = _SORT_BY_KEY[key]
                    break
            if key in _SORT_BY_KEY and not should_stop():
                redraw = True
                continue
            break
        previous = snapshot
