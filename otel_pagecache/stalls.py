"""Page-cache stalls timed in BPF → spans, and a duration histogram of all of them.

Every stall record from the probe's ring buffer lands in the
``pagecache.stall.duration`` histogram. It becomes a span only when it
lasted at least the threshold and its container is within its span rate
limit (a token bucket per memcg); stalls that do not make it are counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from .metrics import CGROUP_ID, STALL_DURATION, STALL_SPANS_DROPPED
from .probes.layout import STALL_KINDS, StallEvent

_log = logging.getLogger(__name__)

_EVENT_SIZE = ctypes.sizeof(StallEvent)
STALL_KIND = "pagecache.stall.kind"
SPAN_NAMES = {kind: f"pagecache.stall.{kind}" for kind in STALL_KINDS.values()}
# Seconds: from 50 µs (a short memcg reclaim) to 10 s (a pathological throttle).
DURATION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(slots=True)
class Stall:
    kind: str
    pid: int  # host view
    tid: int
    ns_pid: int  # as the process sees itself (its own PID namespace)
    ns_tid: int
    comm: str
    memcg: int
    start_ns: int  # wall clock
    duration_ns: int
    pages: int
    gfp: int
    order: int
    ratelimit: int
    planned: bool
    # (trace id, span id, trace flags) of the application span the thread was
    # running when it stalled, when its process publishes span slots.
    link: tuple[int, int, int] | None = None


def boot_to_wall_offset_ns() -> int:
    """Add to a CLOCK_BOOTTIME reading (bpf_ktime_get_boot_ns) to get wall-clock ns."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def decode(record: bytes, offset_ns: int) -> Stall | None:
    if len(record) < _EVENT_SIZE:
        return None
    event = StallEvent.from_buffer_copy(record[:_EVENT_SIZE])
    kind = STALL_KINDS.get(event.kind)
    if kind is None:
        return None
    return Stall(
        kind=kind,
        pid=event.pid,
        tid=event.tid,
        ns_pid=event.ns_pid or event.pid,
        ns_tid=event.ns_tid or event.tid,
        comm=event.comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
        memcg=event.memcg,
        start_ns=event.start_ns + offset_ns,
        duration_ns=event.duration_ns,
        pages=event.pages,
        gfp=event.gfp,
        order=event.order,
        ratelimit=event.ratelimit,
        planned=bool(event.planned),
        link=_link(event),
    )


def _link(event: StallEvent) -> tuple[int, int, int] | None:
    slot = event.span
    if not slot.tid or slot.tid != (event.ns_tid or event.tid):
        return None
    trace_id = int.from_bytes(bytes(slot.trace_id), "big")
    span_id = int.from_bytes(bytes(slot.span_id), "big")
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, slot.trace_flags


class TokenBuckets:
    """A token bucket per key (``rate`` per second, ``burst`` deep), bounded in keys."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: dict[object, tuple[float, float]] = {}

    def allow(self, key: object, now: float) -> bool:
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._buckets.clear()  # bounded: forgetting only ever refills buckets
        self._buckets[key] = (tokens, now)
        return allowed


class StallPipeline:
    def __init__(
        self,
        tracer: trace.Tracer,
        meter: Meter,
        threshold_s: float = 0.001,
        spans_per_second: float = 10.0,
        burst: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_unlinked: Callable[[int], None] | None = None,
    ) -> None:
        self._tracer = tracer
        # Told the pid of each stall that came without a link (its process's
        # span slots may not be known yet: correlation.SlotRegistry.request).
        self._on_unlinked = on_unlinked
        self._histogram: Histogram = meter.create_histogram(
            STALL_DURATION.name,
            unit=STALL_DURATION.unit,
            description=STALL_DURATION.description,
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._threshold_ns = int(threshold_s * 1e9)
        self._buckets = TokenBuckets(spans_per_second, burst)
        self._clock = clock
        self._lock = threading.Lock()
        self.spans = 0
        # queue_full / export_failed: spans made but not delivered (collector
        # down or slow), reported by span_delivery.CountedBatchSpanProcessor.
        self.dropped: dict[str, int] = {
            "rate_limited": 0,
            "undecodable": 0,
            "queue_full": 0,
            "export_failed": 0,
        }
        meter.create_observable_counter(
            STALL_SPANS_DROPPED.name,
            callbacks=[self._observe_dropped],
            unit=STALL_SPANS_DROPPED.unit,
            description=STALL_SPANS_DROPPED.description,
        )

    def count_dropped(self, reason: str, count: int) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def _observe_dropped(self, _options: CallbackOptions) -> list[Observation]:
        with self._lock:
            return [Observation(n, {"pagecache.drop.reason": r}) for r, n in self.dropped.items()]

    def handle(self, record: bytes, offset_ns: int | None = None) -> None:
        """One ring-buffer record. Never raises (it runs in the poller thread)."""
        try:
            stall = decode(record, boot_to_wall_offset_ns() if offset_ns is None else offset_ns)
            if stall is None:
                with self._lock:
                    self.dropped["undecodable"] += 1
                return
            self.record(stall)
        except Exception:  # noqa: BLE001
            _log.debug("stall record failed", exc_info=True)

    def record(self, stall: Stall) -> None:
        if stall.link is None and self._on_unlinked is not None:
            self._on_unlinked(stall.pid)
        self._histogram.record(
            stall.duration_ns / 1e9, {CGROUP_ID: stall.memcg, STALL_KIND: stall.kind}
        )
        if stall.duration_ns < self._threshold_ns:
            return
        if not self._buckets.allow(stall.memcg, self._clock()):
            with self._lock:
                self.dropped["rate_limited"] += 1
            return
        attributes: dict[str, object] = {
            CGROUP_ID: stall.memcg,
            STALL_KIND: stall.kind,
            # As the process itself sees them, like the application's own
            # spans; the host's view beside them.
            "process.pid": stall.ns_pid,
            "thread.id": stall.ns_tid,
            "pagecache.host.pid": stall.pid,
            "pagecache.host.thread.id": stall.tid,
            "process.executable.name": stall.comm,
        }
        if stall.kind == "dirty_throttle":
            attributes["pagecache.stall.planned"] = stall.planned
            attributes["pagecache.stall.pages_dirtied"] = stall.pages
            attributes["pagecache.stall.dirty_ratelimit"] = stall.ratelimit
        else:
            attributes["pagecache.stall.pages_reclaimed"] = stall.pages
            attributes["pagecache.stall.order"] = stall.order
            attributes["pagecache.stall.gfp_flags"] = f"{stall.gfp:#x}"
        links = []
        if stall.link is not None:
            trace_id, span_id, flags = stall.link
            linked = trace.SpanContext(
                trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags & 0xFF)
            )
            links.append(trace.Link(linked, {"pagecache.link.reason": "running_on_thread"}))
        span = self._tracer.start_span(
            SPAN_NAMES[stall.kind],
            start_time=stall.start_ns,
            attributes=attributes,
            kind=trace.SpanKind.INTERNAL,
            links=links,
        )
        span.end(end_time=stall.start_ns + stall.duration_ns)
        with self._lock:
            self.spans += 1


class StallPoller:
    """Polls the probe's stall ring buffer in a thread until ``stop()``."""

    def __init__(self, ring, pipeline: StallPipeline, timeout_ms: int = 100, registry=None) -> None:
        self._ring = ring
        self._registry = registry
        self._pipeline = pipeline
        self._timeout_ms = timeout_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otel-pagecache-stalls", daemon=True)
        # The span-slot scan reads other processes' /proc: its own thread, so a
        # slow one never holds up the ring buffer.
        self._scanner = threading.Thread(
            target=self._scan, name="otel-pagecache-span-slots", daemon=True
        )

    def start(self) -> StallPoller:
        self._thread.start()
        if self._registry is not None:
            self._scanner.start()
        return self

    def _scan(self) -> None:
        while not self._stop.is_set():
            try:
                self._registry.run_once(0.5)
            except Exception:  # noqa: BLE001
                _log.debug("span slot scan failed", exc_info=True)
                self._stop.wait(0.5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._ring.poll(self._timeout_ms)
            except Exception:  # noqa: BLE001 - keep polling
                _log.debug("stall ring poll failed", exc_info=True)
                time.sleep(0.5)

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop polling; False if the thread is still inside poll(), in which
        case the ring (and the BPF object it belongs to) must not be freed:
        freeing it under poll() crashes the process (seen under TCG, where a
        flood of stalls kept one poll busy for seconds)."""
        self._stop.set()
        self._thread.join(timeout_s / 2)
        if self._thread.is_alive():
            # Still consuming a flood: make the poll return at its next record.
            with contextlib.suppress(Exception):
                self._ring.abandon()
            self._thread.join(timeout_s / 2)
        if self._thread.is_alive():
            _log.warning(
                "stall poller did not stop within %.1f s; its BPF programs go with the process",
                timeout_s,
            )
            return False
        with contextlib.suppress(Exception):  # what arrived since the last poll, if possible
            self._ring.poll(0)
        self._ring.close()
        return True
