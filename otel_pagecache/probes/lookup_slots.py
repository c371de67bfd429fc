"""Lookups = the pagecache_lookups map + what the per-CPU slots still hold.

The hot path counts into a per-CPU slot and flushes it into the map only when
another memcg reads on that CPU (bpf/pagecache_bookkeeping.h). A flush that
falls between reading the map and reading the slots would be seen in
neither, so each slot counts its flushes: the map is read between two reads
of the slots, and again if any slot flushed meanwhile. After a few tries
(a host whose CPUs switch memcgs all the time) the last reading stands; what
it missed is seen in the next one, as the tracker never lets a count go
back (activity.ActivityTracker).
"""

from __future__ import annotations

from collections.abc import Callable

from .layout import LookupSlot

TRIES = 3


def read_lookups(
    read_map: Callable[[], dict[int, int]],
    read_slots: Callable[[], list[LookupSlot]],
    tries: int = TRIES,
) -> tuple[dict[int, int], dict[int, int]]:
    """(lookups by memcg, the part of them held in slots), consistent if
    the slots flushed nothing while the map was read, within ``tries``."""
    before = [s.flushes for s in read_slots()]
    for _ in range(tries):
        table = read_map()
        slots = read_slots()
        after = [s.flushes for s in slots]
        if after == before:
            break
        before = after
    held = held_lookups(slots)
    for memcg, pages in held.items():
        table[memcg] = table.get(memcg, 0) + pages
    return table, held


def held_lookups(slots: list[LookupSlot]) -> dict[int, int]:
    """Lookups the slots hold, by memcg: they reach the map at a later flush."""
    held: dict[int, int] = {}
    for slot in slots:
        if slot.lookups:
            held[slot.memcg] = held.get(slot.memcg, 0) + slot.lookups
    return held
