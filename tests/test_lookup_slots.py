"""read_lookups: a slot flushed while the map is read is neither lost nor
counted twice. The map and slots here are stand-ins that replay what the
BPF side does (bpf/pagecache_bookkeeping.h count_lookups): a flush moves a
slot's count into the map and bumps its ``flushes``."""

from __future__ import annotations

from otel_pagecache.probes.layout import LookupSlot
from otel_pagecache.probes.lookup_slots import read_lookups


class Cpu:
    """One CPU's slot and the shared map, with a flush that can be scheduled
    to happen during the next map read."""

    def __init__(self) -> None:
        self.map: dict[int, int] = {7: 100}
        self.slot = LookupSlot(memcg=7, lookups=40, flushes=0)
        self.flush_during_reads = 0

    def flush_to(self, memcg: int) -> None:
        self.map[self.slot.memcg] = self.map.get(self.slot.memcg, 0) + self.slot.lookups
        self.slot = LookupSlot(memcg=memcg, lookups=1, flushes=self.slot.flushes + 1)

    def read_map(self) -> dict[int, int]:
        seen = dict(self.map)  # the map as read, before the flush lands
        if self.flush_during_reads:
            self.flush_during_reads -= 1
            self.flush_to(9)
        return seen

    def read_slots(self) -> list[LookupSlot]:
        return [LookupSlot.from_buffer_copy(self.slot)]


def test_a_quiet_read_is_map_plus_slots():
    cpu = Cpu()
    lookups, held = read_lookups(cpu.read_map, cpu.read_slots)
    assert lookups == {7: 140} and held == {7: 40}


def test_a_flush_during_the_map_read_is_read_again():
    cpu = Cpu()
    cpu.flush_during_reads = 1
    lookups, held = read_lookups(cpu.read_map, cpu.read_slots)
    assert lookups == {7: 140, 9: 1} and held == {9: 1}


def test_flushes_during_every_try_leave_the_last_reading():
    cpu = Cpu()
    cpu.flush_during_reads = 10
    lookups, _ = read_lookups(cpu.read_map, cpu.read_slots, tries=3)
    # The third try missed what its flush moved (memcg 9's one lookup): seen
    # in the next reading, as the tracker never lets a count go back.
    assert lookups[7] == 140 and lookups[9] == 2
