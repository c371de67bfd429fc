"""ActivityTracker's arithmetic, on scripted readings.

A scripted probe stands in for the kernel here because these cases (a
reading that misses a per-CPU slot mid-flush, a map entry re-created) are
races the real probe cannot be made to produce on demand; the real probe is
tested against ground truth in test_activity.py.
"""

from __future__ import annotations

import pytest

from otel_pagecache.activity import ActivityTracker
from otel_pagecache.probes import ActivityReading


class ScriptedProbe:
    engine = "scripted"
    has_lookups = True
    shared_mode = "none"

    def __init__(self, readings, at_deletion=()):
        self.readings = list(readings)
        # What each forget finds in the maps as it deletes (else nothing).
        self.at_deletion = list(at_deletion)
        self.forgotten = []

    def read(self):
        self.last = self.readings.pop(0)
        return self.last

    def forget(self, ids, files=True):
        """What the maps held at the deletion: scripted, else as last read."""
        self.forgotten.append((set(ids), files))
        if self.at_deletion:
            return self.at_deletion.pop(0)
        held = {m: n for m, n in self.last.lookups_in_slots.items() if m in ids}
        return ActivityReading(
            lookups={m: n - held.get(m, 0) for m, n in self.last.lookups.items() if m in ids},
            lookups_in_slots=held,
            removals={k: n for k, n in self.last.removals.items() if k[0] in ids},
        )


def test_a_dip_is_not_a_reset():
    # 150, then 100 (a slot flushed between reading the map and the slots), then 160.
    probe = ScriptedProbe([ActivityReading(lookups={7: v}) for v in (150, 100, 160)])
    tracker = ActivityTracker(probe)
    totals = [tracker.update({7}).memcgs[7].lookups for _ in range(3)]
    assert totals == [150, 150, 160]


def test_snapshots_keep_their_own_figures_for_rates():
    probe = ScriptedProbe([ActivityReading(misses={7: 10}), ActivityReading(misses={7: 25})])
    tracker = ActivityTracker(probe)
    first = tracker.update({7})
    second = tracker.update({7})
    assert (first.memcgs[7].misses, second.memcgs[7].misses) == (10, 25)


def test_gone_memcgs_go_to_dying_and_are_forgotten_once():
    probe = ScriptedProbe(
        [
            ActivityReading(removals={(7, "eviction"): 5}),
            ActivityReading(removals={(7, "eviction"): 9}),  # 7 is gone now
            ActivityReading(removals={(7, "eviction"): 3}),  # entry re-created
        ]
    )
    tracker = ActivityTracker(probe)
    assert tracker.update({7}).memcgs[7].evictions == 5
    second = tracker.update(set())
    assert second.buckets["dying"].evictions == 4
    third = tracker.update(set())
    assert third.buckets["dying"].evictions == 4 + 3
    assert third.forgotten_memcgs == 1
    assert [files for _, files in probe.forgotten] == [True, False]


def test_what_a_gone_memcg_gained_before_its_deletion_is_counted():
    """Its entries are read, then deleted: evictions of its pages in between
    are in the totals the deletion returns, and counted."""
    probe = ScriptedProbe(
        [
            ActivityReading(removals={(7, "eviction"): 5}),
            ActivityReading(removals={(7, "eviction"): 9}),  # 7 is gone
        ],
        at_deletion=[ActivityReading(removals={(7, "eviction"): 14})],
    )
    tracker = ActivityTracker(probe)
    tracker.update({7})
    assert tracker.update(set()).buckets["dying"].evictions == 14 - 5


@pytest.mark.parametrize(
    "at_deletion, later, expected",
    [
        # The slot still holds its 2 after the take: they reach a fresh entry
        # later (with 1 more), and only the 1 is new then.
        (ActivityReading(lookups={7: 10}, lookups_in_slots={7: 2}), {7: 3}, (2, 3)),
        # The slot flushed its 2 into the map before the take: they are in the
        # taken 12, and counted once; the fresh entry's 1 is all new.
        (ActivityReading(lookups={7: 12}), {7: 1}, (2, 3)),
        # It flushed between the take and the reading of the slots: seen in
        # neither then, so counted when the fresh entry shows them.
        (ActivityReading(lookups={7: 10}), {7: 3}, (0, 3)),
    ],
    ids=["slot-after-take", "flushed-before-take", "flushed-during-take"],
)
def test_a_gone_memcgs_lookups_in_per_cpu_slots_count_once(at_deletion, later, expected):
    """7 had 10 lookups in the map and 2 in a per-CPU slot when read, then its
    cgroup went; each order of the slot's flush and the deletion counts them once."""
    probe = ScriptedProbe(
        [
            ActivityReading(lookups={7: 10}),
            ActivityReading(lookups={7: 12}, lookups_in_slots={7: 2}),  # 7 is gone
            ActivityReading(lookups=later),
        ],
        at_deletion=[at_deletion],
    )
    tracker = ActivityTracker(probe)
    tracker.update({7})
    second = tracker.update(set()).buckets["dying"].lookups
    third = tracker.update(set()).buckets["dying"].lookups
    assert (second, third) == expected


def test_hit_ratio_over_the_interval_and_none_without_lookups():
    probe = ScriptedProbe(
        [
            ActivityReading(lookups={7: 100}, misses={7: 100}),
            ActivityReading(lookups={7: 300}, misses={7: 150}),
            ActivityReading(lookups={7: 300}, misses={7: 150}),
        ]
    )
    tracker = ActivityTracker(probe)
    assert tracker.update({7}).memcgs[7].hit_ratio == 0.0
    assert tracker.update({7}).memcgs[7].hit_ratio == 0.75
    assert tracker.update({7}).memcgs[7].hit_ratio is None


def test_path_resolver_survives_odd_file_names_and_keeps_only_what_was_asked(tmp_path):
    from otel_pagecache.activity import FilePathResolver

    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    (cgroup / "cgroup.procs").write_text("42\n")
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "maps").write_bytes(
        b"7f2c4b1e1000-7f2c4b1e3000 r--p 00000000 fe:01 1835056    /data/caf\xe9.bin\n"
        b"7f2c4b1e3000-7f2c4b1e5000 r--p 00000000 fe:01 99    /secret/other\n"
        b"garbage line\n"
    )
    resolver = FilePathResolver(lambda memcg: str(cgroup), proc_root=str(tmp_path / "proc"))
    paths = resolver(7, [(0xFE, 0x01, 1835056)])
    assert paths == {(0xFE, 0x01, 1835056): "/data/caf\ufffd.bin"}
    assert all(k[2] != 99 for cached in resolver._cache.values() for k in cached[1])


class ChurnProbe:
    """A probe over maps that keep every entry until ``forget`` deletes it,
    under steady churn: each reading, 100 new memcgs with page-cache
    insertions, and the previous reading's removed, their pages evicted."""

    engine = "scripted"
    has_lookups = True
    shared_mode = "none"

    def __init__(self, per_cycle: int = 100) -> None:
        self.per_cycle = per_cycle
        self.next_id = 1000
        self.live: set[int] = set()
        self.insertions: dict[int, int] = {}
        self.removals: dict[tuple[int, str], int] = {}

    def churn(self) -> set[int]:
        """Remove the live memcgs, create the next ones; returns the live set."""
        for memcg in self.live:
            self.removals[(memcg, "eviction")] = 16
        self.live = set(range(self.next_id, self.next_id + self.per_cycle))
        self.next_id += self.per_cycle
        self.insertions.update(dict.fromkeys(self.live, 16))
        return self.live

    def read(self):
        return ActivityReading(insertions=dict(self.insertions), removals=dict(self.removals))

    def forget(self, ids, files=True):
        taken = ActivityReading()
        for memcg in ids:
            if memcg in self.insertions:
                taken.insertions[memcg] = self.insertions.pop(memcg)
            if (memcg, "eviction") in self.removals:
                taken.removals[(memcg, "eviction")] = self.removals.pop((memcg, "eviction"))
        return taken


def test_memory_stays_flat_under_churn():
    """Cgroup ids are never reused: whatever the tracker keeps per forgotten
    memcg must be bounded, else 100 memcgs/s grow the agent by ~0.4 MiB a
    minute (issue 15: the set of every forgotten id did)."""
    import tracemalloc

    probe = ChurnProbe()
    tracker = ActivityTracker(probe)

    def churn(cycles: int) -> None:
        for _ in range(cycles):
            tracker.update(probe.churn())

    churn(100)  # 10,000 memcgs: every bound reached
    tracemalloc.start()
    try:
        churn(200)  # what is kept from here on was allocated while traced
        settled = tracemalloc.get_traced_memory()[0]
        churn(200)  # 20,000 more memcgs come and go
        growth = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert growth < 128 * 1024, f"{growth / 1024:.0f} KiB kept for 20,000 removed memcgs"
    assert tracker.update(probe.churn()).forgotten_memcgs == 500 * 100
