"""The stall poller's stop: a poll busy with a flood of records must end, and
a poll that never returns must keep the ring (freeing it under poll() crashed
the agent with SIGSEGV at exit under TCG). The ring here is a stand-in that
behaves as libbpf's ring_buffer__poll does with our sample callbacks: it
consumes records until a callback returns a negative value."""

from __future__ import annotations

import threading
import time

from otel_pagecache.stalls import StallPoller


class FloodingRing:
    """Always has another record ready, as a ring under a stall flood."""

    def __init__(self, never_returns: bool = False) -> None:
        self.never_returns = never_returns
        self.abandoned = False
        self.closed = False
        self.polls = 0
        self.records = 0
        self.release = threading.Event()

    def poll(self, timeout_ms: int) -> None:
        self.polls += 1
        while True:
            if self.never_returns:
                self.release.wait()
                return
            if self.abandoned:  # the sample callback returned -1
                return
            self.records += 1
            time.sleep(0.001)

    def abandon(self) -> None:
        self.abandoned = True

    def close(self) -> None:
        self.closed = True


def _wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_poll_busy_with_a_flood_is_abandoned_and_the_ring_freed():
    ring = FloodingRing()
    poller = StallPoller(ring, pipeline=None).start()
    _wait_until(lambda: ring.records > 0)  # the poll is consuming the flood
    assert poller.stop(timeout_s=0.2) is True
    assert ring.abandoned and ring.closed
    assert ring.records > 0


def test_a_poll_that_never_returns_keeps_its_ring():
    ring = FloodingRing(never_returns=True)
    poller = StallPoller(ring, pipeline=None).start()
    try:
        _wait_until(lambda: ring.polls > 0)  # inside the poll that never returns
        assert poller.stop(timeout_s=0.1) is False
        assert ring.abandoned and not ring.closed
    finally:
        ring.release.set()
