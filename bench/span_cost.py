"""Cost per span of the in-process plugin's thread figures.

Times start+end of N spans through the real SDK (a TracerProvider whose
processor hands spans to an exporter that drops them): alone, with the
plugin's ThreadFiguresProcessor wrapped around the provider's processor, and
with it also keeping the per-thread span slots the stall links read;
alternating rounds, medians. Run: ``.venv/bin/python bench/span_cost.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_pagecache.correlation import SpanSlots  # noqa: E402
from otel_pagecache.instrumentor import ThreadFiguresProcessor, thread_figures  # noqa: E402
from otel_pagecache.sdk_internals import wrap_span_processors  # noqa: E402


class DropExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def provider(with_figures: bool, slots: SpanSlots | None = None):
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(DropExporter()))
    if with_figures:  # as the plugin does it
        wrap_span_processors(tp, lambda inner: ThreadFiguresProcessor(inner, slots))
    return tp.get_tracer("bench")


def per_span_us(tracer, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        tracer.start_span("s").end()
    return (time.perf_counter() - start) / n * 1e6


def main() -> int:
    n, rounds = 20000, 7
    slots = SpanSlots()
    plain, figures, linked = provider(False), provider(True), provider(True, slots)
    for tracer in (plain, figures, linked):
        per_span_us(tracer, 1000)
    a, b, c = [], [], []
    for _ in range(rounds):
        a.append(per_span_us(plain, n))
        b.append(per_span_us(figures, n))
        c.append(per_span_us(linked, n))
    slots.close()
    start = time.perf_counter()
    for _ in range(n):
        thread_figures()
    rusage = (time.perf_counter() - start) / n * 1e6
    base, with_figures = statistics.median(a), statistics.median(b)
    with_slots = statistics.median(c)
    print(f"span start+end, median of {rounds} alternating rounds of {n}:")
    print(f"  SDK alone:                       {base:6.2f} µs/span")
    print(
        f"  + thread figures                 {with_figures:6.2f} µs/span"
        f"  (+{with_figures - base:.2f} µs)"
    )
    print(
        f"  + thread figures and span slots  {with_slots:6.2f} µs/span"
        f"  (+{with_slots - base:.2f} µs)"
    )
    print(f"  one getrusage(RUSAGE_THREAD): {rusage:.2f} µs (two per span)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
