"""A small service with one slow endpoint, to see page-cache cost on a span.

Run it under the OpenTelemetry agent, no code change needed for the
page-cache figures:

    OTEL_SERVICE_NAME=report-service OTEL_TRACES_EXPORTER=console \\
        .venv/bin/opentelemetry-instrument .venv/bin/python examples/app/report_service.py

It serves "GET /report" twice: first with the report file cold (its pages
dropped from the cache, as after a deploy or an eviction by a neighbour),
then warm. The first span carries pagecache.thread.read_bytes of about the
report's size, the second about 0: the slow request paid for cache misses.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from opentelemetry import trace

tracer = trace.get_tracer("report-service")


def get_report(path: str) -> int:
    """The request handler: reads the whole report."""
    with tracer.start_as_current_span("GET /report") as span:
        started = time.perf_counter()
        total = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
        span.set_attribute("report.bytes", total)
        span.set_attribute("report.seconds", time.perf_counter() - started)
        return total


def make_report(size: int) -> str:
    fd, path = tempfile.mkstemp(prefix="report-", dir=os.environ.get("REPORT_DIR"))
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    return path


def drop_from_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> int:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 32 << 20
    path = make_report(size)
    try:
        drop_from_cache(path)
        get_report(path)  # cold: every page read from storage
        get_report(path)  # warm: served from the page cache
    finally:
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
