"""sharing.SharedHitsTracker: baselines, the top-N names and "other", gone
partners as "dying", and the export points, from raw readings we make."""

from __future__ import annotations

from otel_pagecache.probes import ActivityReading
from otel_pagecache.sharing import (
    DYING,
    OTHER,
    OWNER_CONTAINER_ID,
    OWNER_PATH,
    READER_PATH,
    SharedHitsTracker,
    series_points,
    top_lines,
)


class FakeProbe:
    def __init__(self) -> None:
        self.forgotten: list[tuple[int, int]] = []
        # What the map holds when a pair is deleted: more than the reading
        # said when a reader went on meanwhile.
        self.at_deletion: dict[tuple[int, int], int] = {}

    def forget_shared(self, pairs) -> dict[tuple[int, int], int]:
        self.forgotten += list(pairs)
        return {pair: self.at_deletion.pop(pair) for pair in pairs if pair in self.at_deletion}


def reading(shared: dict[tuple[int, int], int]) -> ActivityReading:
    return ActivityReading(shared=dict(shared))


def test_counts_are_deltas_of_the_raw_counts_on_both_sides():
    tracker = SharedHitsTracker(FakeProbe(), top_pairs=10, mode="extent")
    live = {1, 2, 3}
    tracker.update(reading({(1, 2): 100}), live)
    snap = tracker.update(reading({(1, 2): 250, (3, 2): 7}), live)
    assert snap.hits == {1: {2: 250}, 3: {2: 7}}
    assert snap.served == {2: {1: 250, 3: 7}}
    assert snap.mode == "extent"


def test_partners_past_the_top_n_go_to_other_and_names_stay():
    tracker = SharedHitsTracker(FakeProbe(), top_pairs=2)
    live = {1, 10, 11, 12, 13}
    # One cycle: the two largest get the names.
    snap = tracker.update(reading({(1, 10): 5, (1, 11): 50, (1, 12): 40}), live)
    assert snap.hits[1] == {11: 50, 12: 40, OTHER: 5}
    # Later, 10 grows past them: it stays in "other" (counters only grow).
    snap = tracker.update(reading({(1, 10): 500, (1, 11): 51, (1, 12): 40, (1, 13): 3}), live)
    assert snap.hits[1] == {11: 51, 12: 40, OTHER: 5 + 495 + 3}


def test_a_gone_owner_is_dying_and_its_entries_are_deleted_once_counted():
    probe = FakeProbe()
    tracker = SharedHitsTracker(probe, top_pairs=10)
    tracker.update(reading({(1, 2): 10}), {1, 2})
    # 2 is removed while its pages are cached; 1 reads more of them.
    snap = tracker.update(reading({(1, 2): 30}), {1})
    assert snap.hits == {1: {DYING: 30}}
    assert snap.served == {DYING: {1: 20}}
    assert probe.forgotten == [(1, 2)]
    # The kernel entry starts again from 0 after the deletion.
    snap = tracker.update(reading({(1, 2): 4}), {1})
    assert snap.hits == {1: {DYING: 34}}


def test_what_a_gone_pair_gained_before_its_deletion_is_counted():
    """The entry is read, then deleted: a reader still reading the gone
    owner's pages adds to it in between, and that is not lost."""
    probe = FakeProbe()
    tracker = SharedHitsTracker(probe, top_pairs=10)
    tracker.update(reading({(1, 2): 10}), {1, 2})
    probe.at_deletion[(1, 2)] = 45
    snap = tracker.update(reading({(1, 2): 30}), {1})
    assert snap.hits == {1: {DYING: 45}}
    snap = tracker.update(reading({(1, 2): 4}), {1})
    assert snap.hits == {1: {DYING: 49}}


def test_a_failed_deletion_keeps_the_baseline():
    """Pruning that fails leaves the entries, which keep counting from where
    they were: nothing counted twice."""

    class Refusing(FakeProbe):
        def forget_shared(self, pairs):
            raise OSError("map gone")

    tracker = SharedHitsTracker(Refusing(), top_pairs=10)
    tracker.update(reading({(1, 2): 10}), {1, 2})
    assert tracker.update(reading({(1, 2): 30}), {1}).hits == {1: {DYING: 30}}
    assert tracker.update(reading({(1, 2): 35}), {1}).hits == {1: {DYING: 35}}


def test_points_name_paths_and_container_ids():
    tracker = SharedHitsTracker(FakeProbe(), top_pairs=1)
    snap = tracker.update(reading({(1, 2): 8, (1, 3): 2}), {1, 2, 3})
    names = {1: ("/b", "bbbb"), 2: ("/a", "aaaa"), 3: ("/c", None)}
    points = series_points(snap, names)
    assert points[1][0] == [
        (8, {OWNER_PATH: "/a", OWNER_CONTAINER_ID: "aaaa"}),
        (2, {OWNER_PATH: OTHER}),
    ]
    assert points[2][1] == [(8, {READER_PATH: "/b", "pagecache.reader.container.id": "bbbb"})]
    assert points[3][1] == [(2, {READER_PATH: "/b", "pagecache.reader.container.id": "bbbb"})]


def test_top_lines_say_whose_cache_each_container_reads_and_who_reads_its():
    tracker = SharedHitsTracker(FakeProbe(), top_pairs=10, mode="extent")
    snap = tracker.update(reading({(1, 2): 16384, (3, 2): 5}), {1, 2, 3})
    lines = top_lines(snap, [(2, "docker:aaaa"), (1, "docker:bbbb"), (4, "idle")])
    assert lines == [
        "shared hits (extent mode, pages since start):",
        "docker:aaaa: reads cache of [-]; its cache read by [docker:bbbb 16384, 3 5]",
        "docker:bbbb: reads cache of [docker:aaaa 16384]; its cache read by [-]",
    ]
    assert top_lines(None, [(1, "x")]) == []
