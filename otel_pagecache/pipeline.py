"""The node agent's push loop: one collection, one set of OTLP requests, per interval.

Each cycle takes one snapshot and sends, in requests under 1 MiB (``otlp_bulk``):

- the agent's own metrics (node totals, BPF and collection health, stall
  histogram), collected by the SDK through its public pull reader
  (``InMemoryMetricReader``), moved onto per-container Resources where they
  name a memcg (``metric_regrouping.ResourceSplitter``) and encoded by the SDK's public
  OTLP encoder;
- the per-container bulk, encoded from the same snapshot by ``otlp_bulk``.

No queue: a cycle whose export fails drops its points (with one warning a
minute), and the next cycle sends fresh ones; cumulative counters carry the
counts across. An export blocks the loop at most ``export_timeout_s``.
Cycles start on a fixed schedule (one slot per interval); one that overruns
its slot is followed by one export at once, never by a burst.

``shutdown(bound_s)`` stops the loop and makes the last export within
``bound_s``, whatever the collector does (refuses, or accepts and never
answers): every send has a deadline.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics.export import MetricReader

from .otlp_bulk import BulkEncoder, requests
from .otlp_transport import ExportError
from .residency import SnapshotSource

_log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, body: bytes, deadline: float) -> int: ...

    def close(self) -> None: ...


class ConsoleSender:
    """Prints each request as one JSON document, shaped as the SDK's console
    exporter prints ``MetricsData`` (``resource_metrics`` → ``resource`` →
    ``attributes`` as a mapping)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out

    def send(self, body: bytes, deadline: float) -> int:
        request = ExportMetricsServiceRequest.FromString(body)
        document = {"resource_metrics": [_resource_metrics(rm) for rm in request.resource_metrics]}
        out = self._out or sys.stdout
        out.write(json.dumps(document, indent=4) + "\n")
        out.flush()
        return 0

    def close(self) -> None:
        pass


def _attributes(kvs) -> dict:
    out = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def _resource_metrics(rm) -> dict:
    def metric(m) -> dict:
        kind = m.WhichOneof("data")
        data = getattr(m, kind)
        points = [
            {
                "attributes": _attributes(p.attributes),
                "start_time_unix_nano": p.start_time_unix_nano or None,
                "time_unix_nano": p.time_unix_nano,
                "value": getattr(p, p.WhichOneof("value"))
                if kind in ("gauge", "sum")
                else MessageToDict(p),
            }
            for p in data.data_points
        ]
        shaped = {"data_points": points}
        if kind == "sum":
            shaped["aggregation_temporality"] = data.aggregation_temporality
            shaped["is_monotonic"] = data.is_monotonic
        return {"name": m.name, "description": m.description, "unit": m.unit, "data": shaped}

    return {
        "resource": {
            "attributes": _attributes(rm.resource.attributes),
            "schema_url": rm.schema_url,
        },
        "scope_metrics": [
            {
                "scope": {"name": sm.scope.name, "version": sm.scope.version},
                "metrics": [metric(m) for m in sm.metrics],
            }
            for sm in rm.scope_metrics
        ],
    }


class MetricsPipeline:
    def __init__(
        self,
        own: MetricReader,
        split: Callable,
        encoder: BulkEncoder,
        source: SnapshotSource,
        sender: Sender,
        interval_s: float,
        export_timeout_s: float,
        destination: str,
        warn_every_s: float = 60.0,
    ) -> None:
        self._own = own  # an InMemoryMetricReader-like pull reader
        self._split = split
        self._encoder = encoder
        self._source = source
        self._sender = sender
        self._interval_s = interval_s
        self._timeout_s = export_timeout_s
        self._destination = destination
        self._warn_every_s = warn_every_s
        self._lock = threading.Lock()  # one collection at a time (delta state)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0
        self.exports = 0
        self._last_warning = float("-inf")

    def bodies(self) -> list[bytes]:
        """One collection: serialized requests, the agent's own metrics first."""
        return list(self._collect())

    def _collect(self) -> Iterator[bytes]:
        """One collection; the requests are framed one at a time as consumed."""
        with self._lock:
            # The snapshot first, outside the SDK: its callbacks run under a
            # collection timeout (10 s) that reading 10,000 memcgs on a loaded
            # host can exceed; they then reuse this snapshot.
            snapshot = self._source.current()
            # Own metrics right away, while the snapshot is current for their
            # callbacks; the bulk's encoding can take longer than its max age.
            head = self._own_metrics()
            # Series settled here, under the lock; points framed request by
            # request as they are sent (one request's bytes at a time).
            encoded = self._encoder.frames(snapshot, time.time_ns())
        return requests(encoded, head)

    def _own_metrics(self) -> bytes:
        """The SDK's part, serialized; empty (not fatal to the bulk) if it fails."""
        try:
            own = self._own.get_metrics_data()
            if own is None or not own.resource_metrics:
                return b""
            return encode_metrics(self._split(own)).SerializeToString()
        except Exception as e:  # noqa: BLE001 - e.g. the SDK's collection timeout
            _log.warning("the agent's own metrics were not collected this cycle: %s", e)
            _log.debug("own metrics collection", exc_info=True)
            return b""

    def export_once(self, deadline: float | None = None) -> bool:
        """Collect and send; True when every request got through.

        Sending ends by ``deadline`` (``time.monotonic()``), or by
        ``export_timeout_s`` after the collection when there is none."""
        try:
            bodies = self._collect()
            if deadline is None:
                deadline = time.monotonic() + self._timeout_s
        except Exception as e:  # noqa: BLE001 - one bad cycle must not end the loop
            _log.warning("metric collection failed; this cycle is skipped: %s", e)
            _log.debug("metric collection", exc_info=True)
            return False
        try:
            for body in bodies:
                rejected = self._sender.send(body, deadline)
                if rejected:
                    _log.warning("the receiver rejected %d points of this export", rejected)
        except ExportError as e:
            self._failed(str(e))
            return False
        except Exception as e:  # noqa: BLE001 - transport failures of any kind are warnings
            _log.debug("metric export raised", exc_info=True)
            self._failed(f"{type(e).__name__}: {e}")
            return False
        self.exports += 1
        return True

    def _failed(self, why: str) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._last_warning >= self._warn_every_s:
            self._last_warning = now
            _log.warning(
                "metric export via %s failed (%d failures so far): %s; the agent keeps "
                "running and drops the points it cannot send",
                self._destination,
                self.failures,
                why,
            )

    def start(self) -> MetricsPipeline:
        self._thread = threading.Thread(target=self._run, name="otel-pagecache-export", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        # Exports go on a fixed schedule, one slot per interval, not one
        # interval after the previous export ended: a cycle's own time
        # (collection, encoding, a slow receiver's answer) would otherwise
        # add to every gap, and more so on a loaded host. A cycle that
        # overruns its slot is followed by one export at once, and the
        # schedule restarts from it: never a burst of catch-up exports.
        next_slot = time.monotonic() + self._interval_s
        while not self._stop.wait(max(0.0, next_slot - time.monotonic())):
            self.export_once()
            next_slot = max(next_slot + self._interval_s, time.monotonic())

    def shutdown(self, bound_s: float) -> bool:
        """Stop the loop, then one last export within ``bound_s``; True if delivered.

        The collection counts against the bound too (10,000 memcgs on a loaded
        host can take longer), so the last export runs in a daemon thread that
        is abandoned at the bound; so is a loop export still in flight."""
        deadline = time.monotonic() + bound_s
        self._stop.set()
        outcome: list[bool] = []
        last = threading.Thread(
            target=lambda: outcome.append(self.export_once(deadline)),
            name="otel-pagecache-last-export",
            daemon=True,
        )
        last.start()
        last.join(max(0.0, deadline - time.monotonic()))
        delivered = bool(outcome and outcome[0])
        try:
            self._sender.close()
        except Exception:  # noqa: BLE001 - closing is best effort at exit
            _log.debug("closing the metric sender raised", exc_info=True)
        return delivered
