"""Rate-limited logs for failures that repeat: one record per message a minute.

The OpenTelemetry exporters log every failed attempt; with a collector down
that is a warning per retry, forever. ``RateLimitFilter``, installed on the
command line's log handler, lets one through per (logger, message template)
and period, which says the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable


class RateLimitFilter(logging.Filter):
    """Lets one record per (logger, message template) through every ``period_s``,
    for loggers under ``prefixes`` (the others pass untouched)."""

    def __init__(self, period_s: float = 60.0, prefixes: Iterable[str] = ("opentelemetry",)):
        super().__init__()
        self._period_s = period_s
        self._prefixes = tuple(prefixes)
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period_s:
                return False
            if len(self._last) > 1000:  # bounded: forget old templates
                self._last.clear()
            self._last[key] = now
        return True
