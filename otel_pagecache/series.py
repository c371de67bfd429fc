"""Forget the SDK's state for series whose memcg is gone.

The OpenTelemetry SDK keeps one aggregation per attribute set of an
asynchronous instrument for the life of the MeterProvider (it needs the last
value for delta conversion), and counts them against the cardinality limit.
Under container churn that state grows until new containers land in the
``otel.metric.overflow`` series. There is no public API to expire series, so
this reaches into SDK internals, defensively: if they change, pruning stops
(logged once) and the SDK's cardinality limit still bounds memory.
``tests/test_series.py`` fails when the internals move.
"""

from __future__ import annotations

import logging
from collections.abc import Container

_log = logging.getLogger(__name__)


def _is_observable(instrument: object) -> bool:
    return type(instrument).__name__.startswith("_Observable")


class SeriesPruner:
    def __init__(self, meter_provider: object, key: str) -> None:
        self._provider = meter_provider
        self._key = key
        self._broken = False

    def prune(self, live: Container, live_files: Container | None = None) -> int:
        """Drop series whose ``key`` attribute is not in ``live``, and file series
        (``file.inode``) not in ``live_files`` (tuples of key, inode, device);
        returns how many were dropped."""
        if self._broken:
            return 0
        try:
            return self._prune(live, live_files)
        except Exception:  # noqa: BLE001 - SDK internals changed; degrade, don't fail
            self._broken = True
            _log.warning("cannot prune stale series with this SDK version", exc_info=True)
            return 0

    def _stale(self, attributes: dict, live: Container, live_files: Container | None) -> bool:
        if self._key not in attributes:
            return False
        if attributes[self._key] not in live:
            return True
        if live_files is not None and "file.inode" in attributes:
            file_key = (
                attributes[self._key],
                attributes["file.inode"],
                attributes.get("pagecache.file.device"),
            )
            return file_key not in live_files
        return False

    def _prune(self, live: Container, live_files: Container | None) -> int:
        consumer = self._provider._measurement_consumer  # noqa: SLF001
        removed = 0
        for storage in consumer._reader_storages.values():  # noqa: SLF001
            for instrument, matches in list(
                storage._instrument_view_instrument_matches.items()  # noqa: SLF001
            ):
                # Only observable instruments: their series describe memcgs
                # that exist now. A synchronous one (the stall histogram) holds
                # what happened, still to be exported even if the memcg is gone.
                if not _is_observable(instrument):
                    continue
                for match in matches:
                    with match._lock:  # noqa: SLF001
                        table = match._attributes_aggregation  # noqa: SLF001
                        stale = [
                            k
                            for k, aggregation in table.items()
                            if self._stale(
                                aggregation._attributes or {},  # noqa: SLF001
                                live,
                                live_files,
                            )
                        ]
                        for k in stale:
                            del table[k]
                        removed += len(stale)
        return removed
