"""The push loop's schedule (pipeline.MetricsPipeline): exports one interval
apart whatever a cycle costs, and a cycle that overruns its slot is followed
by one export, not a burst (issue 15: exports came every 11.9 s instead of
1 s when each cycle's own time was added to the interval).
"""

from __future__ import annotations

import time

from otel_pagecache.pipeline import MetricsPipeline


def _pipeline(interval_s: float, durations: list[float]) -> tuple[MetricsPipeline, list[float]]:
    pipeline = MetricsPipeline(
        own=None,
        split=None,
        encoder=None,
        source=None,
        sender=None,
        interval_s=interval_s,
        export_timeout_s=10,
        destination="test",
    )
    starts: list[float] = []

    def export_once(deadline=None) -> bool:
        starts.append(time.monotonic())
        time.sleep(durations[min(len(starts), len(durations)) - 1])
        return True

    pipeline.export_once = export_once  # type: ignore[method-assign]
    return pipeline, starts


def _run(pipeline: MetricsPipeline, starts: list[float], exports: int) -> list[float]:
    pipeline.start()
    deadline = time.monotonic() + 30
    while len(starts) < exports and time.monotonic() < deadline:
        time.sleep(0.01)
    pipeline._stop.set()
    return [b - a for a, b in zip(starts, starts[1:], strict=False)][: exports - 1]


def test_a_cycles_own_time_does_not_add_to_the_interval():
    # Each cycle takes 60% of the interval: exports still one interval apart.
    pipeline, starts = _pipeline(0.25, [0.15])
    gaps = _run(pipeline, starts, 8)
    assert max(gaps) < 0.25 + 0.08, gaps
    assert sum(gaps) / len(gaps) < 0.25 + 0.03, gaps


def test_an_overrun_is_followed_by_one_export_not_a_burst():
    # The second cycle takes four intervals: the third export starts when it
    # ends, and the fourth one interval after that (no catch-up).
    pipeline, starts = _pipeline(0.2, [0.02, 0.8, 0.02, 0.02, 0.02])
    gaps = _run(pipeline, starts, 5)
    assert 0.8 <= gaps[1] < 0.8 + 0.1, gaps
    assert all(0.2 - 0.02 <= gap < 0.2 + 0.08 for gap in gaps[2:]), gaps
