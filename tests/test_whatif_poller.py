"""The what-if ring's poller: its period follows the records it finds."""

from __future__ import annotations

import threading

from otel_pagecache.whatif import WhatifPoller


class ScriptedRing:
    """A ring whose consume() returns the scripted counts, then 0."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = list(counts)
        self.consumed = 0
        self.closed = False
        self.drained = threading.Event()

    def consume(self) -> int:
        self.consumed += 1
        if not self.counts:
            self.drained.set()
            return 0
        return self.counts.pop(0)

    def abandon(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_an_idle_ring_is_polled_once_a_second_and_a_busy_one_every_100_ms():
    poller = WhatifPoller(ScriptedRing([]))
    assert poller.period_s == 0.1  # first look soon after start
    assert [poller.next_period(0) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    busy = WhatifPoller.BUSY
    assert [poller.next_period(busy) for _ in range(5)] == [0.5, 0.25, 0.125, 0.1, 0.1]
    # Between a quarter of busy and busy: the period stays.
    assert poller.next_period(busy // 2) == 0.1


def test_a_consume_that_raises_is_logged_and_polling_goes_on():
    class Failing(ScriptedRing):
        def consume(self) -> int:
            if self.consumed == 0:
                self.consumed += 1
                raise OSError("ring gone for a moment")
            return super().consume()

    ring = Failing([])
    poller = WhatifPoller(ring, min_s=0.01, max_s=0.02).start()
    assert ring.drained.wait(5)
    assert poller.stop() is True
    assert ring.closed
