"""Kernel probes for page-cache activity, behind one small interface.

An engine (CO-RE via libbpf today) loads programs on tracepoints and hands
out ``ActivityReading``s: the raw cumulative counts its maps hold, keyed by
memcg id. ``activity.ActivityTracker`` turns those into per-memcg counters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class ActivityReading:
    lookups: dict[int, int] = field(default_factory=dict)  # accessor memcg -> pages
    # The part of ``lookups`` still held in per-CPU slots, not yet in the map.
    lookups_in_slots: dict[int, int] = field(default_factory=dict)
    misses: dict[int, int] = field(default_factory=dict)  # accessor memcg -> pages
    insertions: dict[int, int] = field(default_factory=dict)  # owner memcg -> pages
    dirtied: dict[int, int] = field(default_factory=dict)  # owner memcg -> pages
    removals: dict[tuple[int, str], int] = field(default_factory=dict)  # (owner, reason)
    files: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (owner, dev, ino)
    lost: dict[str, int] = field(default_factory=dict)
    map_entries: dict[str, tuple[int, int]] = field(default_factory=dict)  # (used, capacity)


class ProbeUnavailable(RuntimeError):
    """The engine cannot run here; the message names the cause and the fix."""


class ActivityProbe(Protocol):
    engine: str
    has_lookups: bool

    def read(self) -> ActivityReading: ...

    def forget(self, memcg_ids: Iterable[int], files: bool = True) -> None: ...

    def close(self) -> None: ...
