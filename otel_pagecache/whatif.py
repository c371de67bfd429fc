"""What-if curves: the hit ratio each memcg would get from any page-cache size.

An LRU cache of S pages hits an access exactly when the access's reuse
distance (the distinct pages touched since the same page's previous access)
is below S (Mattson et al., 1970): a histogram of reuse distances is the
whole miss-ratio curve. SHARDS (Waldspurger et al., FAST'15) builds it from a
spatially sampled stream: a page is sampled or not by its identity, so a
sampled page's every access is seen, and a distance measured among sampled
pages at rate R stands for distance / R pages. The fixed-size variant keeps
at most K pages: when a (K+1)-th comes, the page with the largest hash goes
and the rate drops to match, the histogram's counts rescaled to it.

Here the kernel samples first (bpf/pagecache_whatif.h: one page in 2**shift
of each file, at a hashed phase), and each memcg's ``ShardsCurve`` samples
that stream again by a hash of the page, at the rate its key cap allows.
Distances are counted over a sliding window: a page last seen before the
window is a first access again, and the histogram is kept in time buckets
that leave the curve as they age out. Memory is bounded by the keys: one
global budget (``WhatifTracker``), split among the memcgs with activity,
each at most a per-memcg cap; a memcg with nothing in the window holds no
state at all.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_log = logging.getLogger(__name__)

_M64 = (1 << 64) - 1
_TWO64 = float(1 << 64)
# Stack positions (reuse distance + 1: the smallest LRU that hits the
# access), in pages scaled by 1/rate, land in geometric bins, 32 per doubling
# (2.2% wide), which costs the curve far less than sampling does.
_BINS_PER_DOUBLING = 32
# The scales of the current page cache at which the curve is exported, and
# the targets of the working-set estimate (fractions of the best hit ratio).
SCALES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
TARGETS = (0.9, 0.95, 0.99)


def page_key(mapping: int, page: int) -> int:
    """A page's 64-bit identity hash (splitmix64 of file and index): the key
    the curve keeps, and the hash that samples it (key < threshold)."""
    x = (mapping * 0x9E3779B97F4A7C15 + page + 0x632BE59BD9B4E019) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def expand_sample(first: int, count: int, shift: int, skip: int) -> list[int]:
    """The pages of one BPF record: first, first + 2**shift, ... (count of
    them), less ``skip`` (a page its fault already counted)."""
    stride = 1 << shift
    return [p for p in range(first, first + count * stride, stride) if p != skip]


def _bin(position: float) -> int:
    """The histogram bin of a stack position (pages, >= 1): [2^(b/32), 2^((b+1)/32))."""
    return int(math.log2(position) * _BINS_PER_DOUBLING)


def _bin_upper(index: int) -> float:
    """The end of bin ``index`` (the next bin's start)."""
    return 2.0 ** ((index + 1) / _BINS_PER_DOUBLING)


def _bin_lower(index: int) -> float:
    return 2.0 ** (index / _BINS_PER_DOUBLING)


class _Bucket:
    """The histogram of one slice of the window: bins [base, base + len(bins))."""

    __slots__ = ("start", "base", "bins", "cold", "samples")

    def __init__(self, start: float) -> None:
        self.start = start
        self.base = 0
        self.bins = array("f")  # weight per bin from base, grown on demand
        self.cold = 0.0  # first accesses (in the window)
        self.samples = 0  # sampled accesses counted, unweighted

    def add(self, index: int, weight: float) -> None:
        bins = self.bins
        if not bins:
            self.base = index
            bins.append(0.0)
        elif index < self.base:
            bins[0:0] = array("f", bytes(4 * (self.base - index)))
            self.base = index
        elif index >= self.base + len(bins):
            bins.extend(array("f", bytes(4 * (index + 1 - self.base - len(bins)))))
        bins[index - self.base] += weight

    def scale(self, factor: float) -> None:
        for i, v in enumerate(self.bins):
            if v:
                self.bins[i] = v * factor
        self.cold *= factor


@dataclass(frozen=True)
class Curve:
    """A memcg's curve at one moment: ``hit_ratio(pages)`` for any size."""

    bins: list[float]  # weight per distance bin, all buckets of the window summed
    cold: float
    samples: int  # sampled accesses behind it
    rate: float  # the sampling rate it was built at (pages per page accessed)

    @property
    def total(self) -> float:
        return sum(self.bins) + self.cold

    def hit_ratio(self, pages: float) -> float | None:
        """The hit ratio an LRU of ``pages`` pages would have had (an access hits
        when its stack position is at most ``pages``); None without samples.
        Within a bin the positions are taken as evenly spread."""
        total = self.total
        if total <= 0:
            return None
        if pages <= 0:
            return 0.0
        hits = 0.0
        for index, weight in enumerate(self.bins):
            if not weight:
                continue
            low, high = _bin_lower(index), _bin_upper(index)
            if high < pages:
                hits += weight
            elif low < pages:
                hits += weight * (pages - low) / (high - low)
                break
            else:
                break
        return hits / total

    def best(self) -> float | None:
        """The hit ratio of an unbounded cache: all but the first accesses."""
        total = self.total
        return None if total <= 0 else 1.0 - self.cold / total

    def working_set(self, target: float) -> float | None:
        """The fewest pages reaching ``target`` times the best hit ratio."""
        total, best = self.total, self.best()
        if best is None:
            return None
        goal = target * best * total
        if goal <= 0:
            return 0.0
        hits = 0.0
        for index, weight in enumerate(self.bins):
            if not weight:
                continue
            if hits + weight >= goal:
                low, high = _bin_lower(index), _bin_upper(index)
                return low + (high - low) * (goal - hits) / weight
            hits += weight
        return _bin_upper(len(self.bins) - 1)


class ShardsCurve:
    """Fixed-size SHARDS over a sliding window, for one memcg.

    ``access(key, now)`` takes a page sampled by the kernel at ``base_rate``
    (its ``page_key``); the curve keeps it if key < threshold, at most
    ``max_keys`` keys. Reuse distances are counted with a Fenwick tree over
    access stamps, marking each kept key's latest access.
    """

    def __init__(self, max_keys: int, window_s: float, base_rate: float, buckets: int = 5) -> None:
        self.max_keys = max(1, max_keys)
        self.window_s = window_s
        self.base_rate = base_rate
        self.bucket_s = window_s / buckets
        self.threshold = 1 << 64  # keep key iff key < threshold
        self.last: dict[int, int] = {}  # key -> stamp of its latest access
        self._buckets: list[_Bucket] = []
        self._stamp = 0  # next stamp
        self._oldest = 0  # stamps below it are expired or compacted away
        self._size = 0
        self._alloc(64)  # grown by _compact as keys come: memory follows the keys held
        self.samples = 0  # sampled accesses taken in, over the curve's life
        self.filtered = 0  # sampled accesses the threshold left out

    @property
    def rate(self) -> float:
        return self.base_rate * self.threshold / _TWO64

    def _alloc(self, size: int) -> None:
        self._size = size
        self._tree = array("l", bytes(8 * (size + 1)))
        self._keys: list[int | None] = [None] * size
        self._times = array("d", bytes(8 * size))

    # -- Fenwick tree over stamps 0..size-1 (index + 1 inside) --
    def _add(self, stamp: int, delta: int) -> None:
        tree, i, n = self._tree, stamp + 1, self._size
        while i <= n:
            tree[i] += delta
            i += i & -i

    def _prefix(self, stamp: int) -> int:
        """Marks at stamps <= stamp."""
        tree, i, total = self._tree, stamp + 1, 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    def access(self, key: int, now: float) -> None:
        if key >= self.threshold:
            self.filtered += 1
            return
        self.samples += 1
        self._expire(now)
        bucket = self._bucket(now)
        bucket.samples += 1
        weight = 1.0  # counts are in units of accesses at the current rate
        previous = self.last.get(key)
        if self._stamp >= self._size:
            self._compact()
            previous = self.last.get(key)
        stamp = self._stamp
        if previous is None:
            bucket.cold += weight
            self.last[key] = stamp
        else:
            # Distinct kept keys accessed since: marks after previous.
            distance = len(self.last) - self._prefix(previous)
            bucket.add(_bin(distance / self.rate + 1.0), weight)
            self._add(previous, -1)
            self._keys[previous] = None
            self.last[key] = stamp
        self._add(stamp, 1)
        self._keys[stamp] = key
        self._times[stamp] = now
        self._stamp = stamp + 1
        if len(self.last) > self.max_keys:
            self._shrink(self.max_keys)

    def _bucket(self, now: float) -> _Bucket:
        buckets = self._buckets
        if not buckets or now >= buckets[-1].start + self.bucket_s:
            start = (
                now
                if not buckets
                else buckets[-1].start
                + self.bucket_s * max(1, int((now - buckets[-1].start) // self.bucket_s))
            )
            buckets.append(_Bucket(start))
        return buckets[-1]

    def _expire(self, now: float) -> None:
        """Keys last accessed before the window leave; so do old buckets."""
        horizon = now - self.window_s
        keys, times, i = self._keys, self._times, self._oldest
        while i < self._stamp and times[i] < horizon:
            key = keys[i]
            if key is not None:
                keys[i] = None
                self._add(i, -1)
                del self.last[key]
            i += 1
        self._oldest = i
        while self._buckets and self._buckets[0].start + self.bucket_s <= horizon:
            self._buckets.pop(0)

    def _compact(self) -> None:
        """Renumber the kept keys' latest accesses 0..n-1, in order (stamps
        only grow: this runs once per ~max_keys accesses)."""
        live = [
            (self._keys[i], self._times[i])
            for i in range(self._oldest, self._stamp)
            if self._keys[i] is not None
        ]
        self._alloc(max(64, 2 * len(live) + 16))
        for stamp, (key, t) in enumerate(live):
            self._keys[stamp] = key
            self._times[stamp] = t
            self.last[key] = stamp
        # O(n) Fenwick build: marks at 1..len(live), each node's sum carried
        # up to its parent, over the whole tree (a node past the last mark
        # still carries the marks below it upwards).
        tree, size, marks = self._tree, self._size, len(live)
        for i in range(1, size + 1):
            if i <= marks:
                tree[i] += 1
            parent = i + (i & -i)
            if parent <= size:
                tree[parent] += tree[i]
        self._stamp = len(live)
        self._oldest = 0

    def _shrink(self, keys: int) -> None:
        """Keep at most ``keys`` keys: the largest hashes go, the threshold
        drops to the smallest gone, and the counts so far are rescaled to the
        new rate (fixed-size SHARDS). A tenth of the keys go at once when only
        a few are over, so the search for the largest (no heap kept: it would
        cost ~45 bytes a key) runs once per that many new keys."""
        last = self.last
        excess = len(last) - keys
        if excess <= 0:
            return
        old_rate = self.rate
        doomed = heapq.nlargest(max(excess, len(last) // 10), last)
        for key in doomed:
            stamp = last.pop(key)
            self._keys[stamp] = None
            self._add(stamp, -1)
        self.threshold = doomed[-1]
        factor = self.rate / old_rate if old_rate else 1.0
        if factor < 1.0:
            for bucket in self._buckets:
                bucket.scale(factor)

    def set_max_keys(self, keys: int) -> None:
        self.max_keys = max(1, keys)
        if len(self.last) > self.max_keys:
            self._shrink(self.max_keys)

    def curve(self, now: float | None = None) -> Curve:
        if now is not None:
            self._expire(now)
        bins: list[float] = []
        cold, samples = 0.0, 0
        for bucket in self._buckets:
            end = bucket.base + len(bucket.bins)
            if end > len(bins):
                bins.extend([0.0] * (end - len(bins)))
            for i, v in enumerate(bucket.bins, bucket.base):
                bins[i] += v
            cold += bucket.cold
            samples += bucket.samples
        return Curve(bins, cold, samples, self.rate)

    def idle(self, now: float) -> bool:
        """Nothing left in the window: the memcg needs no state."""
        self._expire(now)
        return not self._buckets and not self.last

    def memory_keys(self) -> int:
        return len(self.last)


@dataclass(frozen=True)
class WhatifPoint:
    """What one memcg's curve says, for export."""

    cache_pages: int  # the memcg's page cache now (active_file + inactive_file)
    hit_ratios: dict[float, float]  # scale -> predicted hit ratio
    working_sets: dict[float, float]  # target -> pages
    samples: int  # sampled accesses behind the curve (cumulative, this memcg)
    calibrated: bool = False


class WhatifTracker:
    """Every memcg's curve, inside one key budget.

    ``take(record)`` is the ring buffer's callback (struct whatif_sample);
    ``points(cache_pages)`` the export's view. Each memcg with activity gets
    ``min(max_keys_per_memcg, max_keys // active)`` keys (at least
    ``min_keys``); a memcg beyond what the budget holds at that minimum is
    not tracked until room frees up, and its samples are counted in
    ``refused``.
    """

    def __init__(
        self,
        window_s: float = 600.0,
        max_keys: int = 100_000,
        max_keys_per_memcg: int = 16_384,
        min_keys: int = 64,
        shift: int = 6,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self.max_keys_per_memcg = max_keys_per_memcg
        self.min_keys = min_keys
        self.base_rate = 1.0 / (1 << shift)
        self.clock = clock
        self.curves: dict[int, ShardsCurve] = {}
        self.samples: dict[int, int] = {}  # memcg -> sampled accesses, cumulative
        self.refused = 0
        self._lock = threading.Lock()

    def _cap(self, active: int) -> int:
        return max(self.min_keys, min(self.max_keys_per_memcg, self.max_keys // max(1, active)))

    def take(self, raw: bytes) -> None:
        """One struct whatif_sample record (never raises)."""
        try:
            from .probes.layout import WhatifSample

            sample = WhatifSample.from_buffer_copy(raw)
            self.add(
                sample.memcg, sample.mapping, sample.first, sample.count, sample.shift, sample.skip
            )
        except Exception:  # noqa: BLE001 - a ring callback must not raise
            _log.debug("what-if sample dropped", exc_info=True)

    def add(
        self,
        memcg: int,
        mapping: int,
        first: int,
        count: int,
        shift: int,
        skip: int,
        now: float | None = None,
    ) -> None:
        now = self.clock() if now is None else now
        with self._lock:
            curve = self.curves.get(memcg)
            if curve is None:
                if (len(self.curves) + 1) * self.min_keys > self.max_keys:
                    self.refused += count
                    return
                curve = self.curves[memcg] = ShardsCurve(
                    self._cap(len(self.curves) + 1), self.window_s, self.base_rate
                )
                self._rebalance()
            stride = 1 << shift
            page = first
            for _ in range(count):
                if page != skip:
                    curve.access(page_key(mapping, page), now)
                page += stride
            self.samples[memcg] = self.samples.get(memcg, 0) + count

    def _rebalance(self) -> None:
        cap = self._cap(len(self.curves))
        for curve in self.curves.values():
            if curve.max_keys != cap:
                curve.set_max_keys(cap)

    def points(
        self, cache_pages: dict[int, int], now: float | None = None
    ) -> dict[int, WhatifPoint]:
        """Each active memcg's curve read at scales of its page cache; memcgs
        with nothing left in the window are dropped."""
        now = self.clock() if now is None else now
        out: dict[int, WhatifPoint] = {}
        with self._lock:
            for memcg in [m for m, c in self.curves.items() if c.idle(now)]:
                del self.curves[memcg]
            if self.curves:
                self._rebalance()
            for memcg, shards in self.curves.items():
                curve = shards.curve(now)
                if curve.total <= 0:
                    continue
                pages = cache_pages.get(memcg, 0)
                out[memcg] = WhatifPoint(
                    cache_pages=pages,
                    hit_ratios={s: curve.hit_ratio(s * pages) or 0.0 for s in SCALES},
                    working_sets={t: curve.working_set(t) or 0.0 for t in TARGETS},
                    samples=self.samples.get(memcg, 0),
                )
        return out

    def curve(self, memcg: int, now: float | None = None) -> Curve | None:
        with self._lock:
            shards = self.curves.get(memcg)
            return None if shards is None else shards.curve(self.clock() if now is None else now)

    def forget(self, memcgs: Iterable[int]) -> None:
        with self._lock:
            for memcg in memcgs:
                self.curves.pop(memcg, None)
                self.samples.pop(memcg, None)


class WhatifPoller:
    """Consumes the probe's what-if ring buffer on a timer until ``stop()``.

    The kernel submits the samples without a wakeup (a wakeup per record cost
    microseconds per read event), so the ring is emptied on a timer whose
    period follows the traffic: ``BUSY`` records or more in one consume
    halve it (down to ``min_s``), fewer than a quarter of that double it (up
    to ``max_s``). An idle host so wakes the thread once a second, not ten
    times; a busy one every 100 ms, when ~1,600 records of the ring's ~21,000
    wait at 1,000,000 page accesses a second with one page in 64 sampled (9,
    one in 512, is the default)."""

    BUSY = 2000  # records per consume: ~10% of the ring

    def __init__(self, ring, min_s: float = 0.1, max_s: float = 1.0) -> None:
        self._ring = ring
        self._min_s, self._max_s = min_s, max_s
        self.period_s = min_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otel-pagecache-whatif", daemon=True)

    def start(self) -> WhatifPoller:
        self._thread.start()
        return self

    def next_period(self, consumed: int) -> float:
        """The wait before the next consume, after one that took ``consumed`` records."""
        if consumed >= self.BUSY:
            self.period_s = max(self._min_s, self.period_s / 2)
        elif consumed < self.BUSY // 4:
            self.period_s = min(self._max_s, self.period_s * 2)
        return self.period_s

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                consumed = self._ring.consume() or 0
            except Exception:  # noqa: BLE001 - keep consuming
                _log.debug("what-if ring consume failed", exc_info=True)
                consumed = 0
            self.next_period(consumed)

    def stop(self, timeout_s: float = 2.0) -> bool:
        """False if the thread is still inside poll(): the ring (and the BPF
        object) must then not be freed (see stalls.StallPoller.stop)."""
        self._stop.set()
        self._thread.join(timeout_s / 2)
        if self._thread.is_alive():
            try:
                self._ring.abandon()
            except Exception:  # noqa: BLE001
                _log.debug("what-if ring abandon failed", exc_info=True)
            self._thread.join(timeout_s / 2)
        if self._thread.is_alive():
            return False
        try:
            self._ring.close()
        except Exception:  # noqa: BLE001
            _log.debug("what-if ring close failed", exc_info=True)
        return True


class WhatifRun:
    """The curve as the agent runs it: the probe's samples into a tracker, and
    each snapshot's memcgs annotated with their point (``annotate``).

    Calibration (``calibrate=True``, off by default): the kernel's lists are
    not one LRU (active/inactive with refault activation, or MGLRU's
    generations), and favour frequency more than an LRU does. Calibrated,
    each memcg's curve is shifted so that its point at scale 1 equals the hit
    ratio the kernel really gave over the window (from the exact lookups and
    misses the lookup programs count), clamped to [0, the best]; the series
    then carry ``pagecache.whatif.calibrated=true``.
    """

    def __init__(self, tracker: WhatifTracker, probe=None, calibrate: bool = False) -> None:
        self.tracker = tracker
        self.calibrate = calibrate
        self.poller: WhatifPoller | None = None
        # memcg -> [(time, lookups, misses)] cumulative, within the window
        self._history: dict[int, list[tuple[float, int, int]]] = {}
        if probe is not None:
            self.poller = WhatifPoller(probe.whatif_ring(tracker.take)).start()

    def annotate(self, snapshot, page_size: int) -> None:
        """Set ``sample.activity.whatif`` for each memcg of ``snapshot`` with a curve."""
        now = self.tracker.clock()
        cache = {s.id: s.file_lru_bytes // page_size for s in snapshot.memcgs}
        points = self.tracker.points(cache, now)
        horizon = now - self.tracker.window_s
        live = set()
        for sample in snapshot.memcgs:
            counters = sample.activity
            if counters is None:
                continue
            live.add(sample.id)
            history = self._history.setdefault(sample.id, [])
            history.append((now, counters.lookups, counters.misses))
            while len(history) > 1 and history[1][0] <= horizon:
                history.pop(0)
            point = points.get(sample.id)
            if point is None:
                continue
            if self.calibrate:
                point = self._calibrated(point, history, sample.id, now)
            counters.whatif = point
        for memcg in [m for m in self._history if m not in live]:
            del self._history[memcg]

    def _calibrated(self, point: WhatifPoint, history, memcg: int, now: float) -> WhatifPoint:
        (_, lookups0, misses0), (_, lookups1, misses1) = history[0], history[-1]
        lookups = lookups1 - lookups0
        if lookups <= 0:
            return point
        measured = max(0.0, 1.0 - (misses1 - misses0) / lookups)
        curve = self.tracker.curve(memcg, now)
        best = curve.best() if curve is not None else None
        if best is None:
            return point
        shift = measured - point.hit_ratios[1.0]
        ratios = {s: min(best, max(0.0, h + shift)) for s, h in point.hit_ratios.items()}
        return WhatifPoint(point.cache_pages, ratios, point.working_sets, point.samples, True)

    def stop(self, timeout_s: float = 2.0) -> bool:
        return self.poller is None or self.poller.stop(timeout_s)


def start_whatif(settings, probe) -> WhatifRun | None:
    """The curve for ``probe``, or None (logged) when it is off or cannot run."""
    if not settings.whatif:
        _log.info("what-if curve: off, as asked")
        return None
    if probe is None:
        return None  # no activity engine: the agent said so, and why, already
    if not probe.has_whatif:
        _log.info("what-if curve: off (it rides on the lookup hooks, which do not run here)")
        return None
    tracker = WhatifTracker(
        window_s=settings.whatif_window_s,
        max_keys=settings.whatif_max_keys,
        max_keys_per_memcg=settings.whatif_max_keys_per_memcg,
        shift=settings.whatif_sample_shift,
    )
    try:
        run = WhatifRun(tracker, probe, calibrate=settings.whatif_calibrate)
        probe.set_whatif(settings.whatif_sample_shift, settings.whatif_max_pages_per_event)
    except Exception as e:  # noqa: BLE001 - the rest of the agent runs without the curve
        _log.warning("what-if curve unavailable: %s", e)
        return None
    _log.info(
        "what-if curve: one page in %d sampled, window %.0f s, %d keys (%d per memcg)",
        1 << settings.whatif_sample_shift,
        settings.whatif_window_s,
        settings.whatif_max_keys,
        settings.whatif_max_keys_per_memcg,
    )
    return run
