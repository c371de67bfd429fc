"""The node agent's per-container series, encoded straight to OTLP protobuf.

Going through the OpenTelemetry SDK cost 20-26 µs per point (aggregation,
then regrouping by container, then the generic encoder): 300 ms a cycle at
1,000 memcgs. Here each memcg's series become one ``ResourceMetrics`` of the
wire format directly, the way Collector receivers and ebpf_exporter build
fresh values every collection:

- what rarely changes is serialized once, with ``opentelemetry-proto``'s
  generated classes, and cached: each memcg's Resource (base + identity),
  the scope, each metric's name/description/unit, each attribute set;
- what changes every cycle (values, timestamps) is framed by hand: a data
  point is a few fixed-width fields (``_point``).

Names, units, kinds and attributes come from ``metrics.MEMCG_METRICS``,
``ACTIVITY_METRICS`` and ``FILE_USAGE``, the same extract functions the
in-process plugin observes through the SDK; ``tests/test_bulk_equivalence.py``
decodes this output with the generated classes and holds it to what the SDK
produced for the same snapshot.

Wire format reference: opentelemetry/proto/metrics/v1/metrics.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource

from .activity import ActivityCounters
from .metrics import (
    ACTIVITY_METRICS,
    CGROUP_STATE,
    FILE_USAGE,
    MEMCG_METRICS,
    SHARED_HITS,
    SHARED_SERVED,
    MetricSpec,
    file_points,
    sample_resource_attributes,
    shared_names,
)
from .residency import MemcgSample, Snapshot
from .sharing import series_points

# gRPC servers refuse messages over 4 MiB by default (the Collector's
# max_recv_msg_size_mib). Requests stay far below it, at 1 MiB: a request in
# flight is held several times over (its body, gRPC's copies), and at 10,000
# memcgs 4 MiB requests left the agent ~7 MiB more RSS than 1 MiB ones, for
# the same CPU (bench/README.md, "Collection").
MAX_REQUEST_BYTES = 1024 * 1024

CUMULATIVE = 2  # AggregationTemporality enum values of metrics.proto
DELTA = 1

_PACK_Q = struct.Struct("<Q").pack
_INT_VALUE = struct.Struct("<Bq").pack  # NumberDataPoint.as_int (6, sfixed64)
_DOUBLE_VALUE = struct.Struct("<Bd").pack  # NumberDataPoint.as_double (4, double)

# Field tags (field number << 3 | wire type).
_T_RM_RESOURCE = b"\x0a"  # ResourceMetrics.resource = 1
_T_RM_SCOPE_METRICS = b"\x12"  # ResourceMetrics.scope_metrics = 2
_T_RM_SCHEMA_URL = b"\x1a"  # ResourceMetrics.schema_url = 3
_T_SM_SCOPE = b"\x0a"  # ScopeMetrics.scope = 1
_T_SM_METRIC = b"\x12"  # ScopeMetrics.metrics = 2
_T_GAUGE = b"\x2a"  # Metric.gauge = 5
_T_SUM = b"\x3a"  # Metric.sum = 7
_T_DATA_POINT = b"\x0a"  # Gauge/Sum.data_points = 1
_T_POINT_ATTR = b"\x3a"  # NumberDataPoint.attributes = 7
_T_START = 0x11  # NumberDataPoint.start_time_unix_nano = 2, fixed64
_T_TIME = 0x19  # NumberDataPoint.time_unix_nano = 3, fixed64
_T_AS_DOUBLE = 0x21  # NumberDataPoint.as_double = 4
_T_AS_INT = 0x31  # NumberDataPoint.as_int = 6, sfixed64
_T_REQUEST_RM = b"\x0a"  # ExportMetricsServiceRequest.resource_metrics = 1

_VARINTS = [bytes([n]) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _VARINTS[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """One length-delimited field."""
    return tag + _varint(len(payload)) + payload


def any_value(value: object) -> AnyValue:
    """As the SDK's OTLP encoder maps attribute values (bool before int)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (tuple, list)):
        # Sequences (container.image.tags) are arrays, as the SDK sends them.
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def key_values(attributes: Mapping[str, object]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def _attributes_bytes(attributes: Mapping[str, object]) -> bytes:
    """Repeated ``attributes`` fields of a data point, serialized."""
    return b"".join(_field(_T_POINT_ATTR, kv.SerializeToString()) for kv in key_values(attributes))


def _value(value: float) -> bytes:
    """A NumberDataPoint's value; ints stay ints (as_int), as the SDK sends them."""
    if type(value) is int:
        return _INT_VALUE(_T_AS_INT, value)
    return _DOUBLE_VALUE(_T_AS_DOUBLE, value)


def _start(start_ns: int) -> bytes:
    return bytes((_T_START,)) + _PACK_Q(start_ns)


def _time(time_ns: int) -> bytes:
    return bytes((_T_TIME,)) + _PACK_Q(time_ns)


Extract = Callable[[object], Iterable[tuple[float, dict]]]


@dataclass(frozen=True)
class _Metric:
    spec: MetricSpec
    extract: Extract
    header: bytes  # name, description, unit fields of Metric
    is_sum: bool
    data_tag: bytes  # Metric.sum or Metric.gauge


def _metric(spec: MetricSpec, extract: Extract) -> _Metric:
    header = (
        _field(b"\x0a", spec.name.encode())
        + _field(b"\x12", spec.description.encode())
        + _field(b"\x1a", spec.unit.encode())
    )
    is_sum = spec.kind == "counter"
    return _Metric(spec, extract, header, is_sum, _T_SUM if is_sum else _T_GAUGE)


_MEMCG = tuple(_metric(spec, extract) for spec, extract in MEMCG_METRICS)
_ACTIVITY = tuple(_metric(spec, extract) for spec, extract, _ in ACTIVITY_METRICS)
_NEEDS_LOOKUPS = tuple(needs for _, _, needs in ACTIVITY_METRICS)
_FILES = _metric(FILE_USAGE, file_points)
_SHARED_HITS = _metric(SHARED_HITS, list)
_SHARED_SERVED = _metric(SHARED_SERVED, list)


class _SharedResource:
    """A ``ResourceMetrics.resource`` field kept as two parts: the base
    Resource's attributes, shared by every memcg, and the memcg's own. Repeated
    fields concatenate, so the two serialized parts are one Resource."""

    __slots__ = ("base", "own")

    def __init__(self, base: bytes, own: bytes) -> None:
        self.base = base
        self.own = own

    def field(self) -> bytes:
        n = len(self.base) + len(self.own)
        return _T_RM_RESOURCE + _varint(n) + self.base + self.own


class _Series:
    """What is kept per memcg (or activity bucket) across cycles."""

    __slots__ = ("key", "resource", "start_ns", "start_part", "previous")

    def __init__(self, key: tuple, resource: bytes | _SharedResource, start_ns: int) -> None:
        self.key = key  # (path, identity attributes): a change restarts the series
        self.resource = resource  # ResourceMetrics.resource field (or its parts)
        self.start_ns = start_ns  # start of every cumulative series of this memcg
        self.start_part = _start(start_ns)  # that start time, encoded
        # Delta temporality only: (metric, attributes) -> (last cumulative value, time).
        self.previous: dict[tuple, tuple[float, int]] = {}


class BulkEncoder:
    """Snapshot -> serialized ``ResourceMetrics``, one per memcg and activity bucket.

    Cumulative counters start when the agent first saw their memcg (a memcg
    id reused by a new cgroup path starts again); with delta temporality each
    point covers the time since the previous cycle, as the SDK converts
    asynchronous counters. Gauges carry no start time, as the SDK sends them.
    """

    def __init__(
        self,
        base_resource: Mapping[str, object],
        scope_name: str,
        scope_version: str,
        schema_url: str = "",
        temporality: int = CUMULATIVE,
    ) -> None:
        self._base = dict(base_resource)
        self._base_attributes = PbResource(attributes=key_values(self._base)).SerializeToString()
        self._schema_url = _field(_T_RM_SCHEMA_URL, schema_url.encode()) if schema_url else b""
        scope = InstrumentationScope(name=scope_name, version=scope_version)
        self._scope = _field(_T_SM_SCOPE, scope.SerializeToString())
        self._delta = temporality == DELTA
        self._sum_tail = bytes((0x10, temporality, 0x18, 1))  # temporality, is_monotonic
        self._series: dict[object, _Series] = {}
        # Point attributes, serialized, of this cycle and the one before: a
        # steady host reuses all of them, while those of files gone from the
        # top files (new inodes under churn) are dropped after one cycle
        # unused, not kept until some large bound.
        self._attrs: dict[tuple, bytes] = {}
        self._attrs_before: dict[tuple, bytes] = {}
        self._time_ns = 0
        self._time_part: bytes | None = None  # this cycle's time_unix_nano, encoded

    # -- caches ---------------------------------------------------------------

    def _resource_for(self, identity: Mapping[str, object]) -> bytes:
        """The ``ResourceMetrics.resource`` field: base Resource + identity.

        Kept per memcg for as long as it lives, so only the identity's part is
        serialized per memcg; the base's (most of the bytes) is shared. When the
        identity overrides a base key the whole Resource is serialized, as the
        SDK merges it."""
        if self._base.keys() & identity.keys():
            merged = {**self._base, **identity}
            resource = PbResource(attributes=key_values(merged)).SerializeToString()
            return _field(_T_RM_RESOURCE, resource)
        return _SharedResource(
            self._base_attributes, PbResource(attributes=key_values(identity)).SerializeToString()
        )

    def _series_for(
        self, key: object, ident: tuple, identity: Callable[[], Mapping], now_ns: int
    ) -> _Series:
        series = self._series.get(key)
        if series is None or series.key != ident:
            series = _Series(ident, self._resource_for(identity()), now_ns)
        return series

    def _attributes(self, extra: dict) -> bytes:
        if not extra:
            return b""
        key = tuple(extra.items())
        found = self._attrs.get(key)
        if found is None:
            found = self._attrs_before.get(key)
            if found is None:
                found = _attributes_bytes(extra)
            self._attrs[key] = found
        return found

    # -- encoding -------------------------------------------------------------

    def encode(self, snapshot: Snapshot, now_ns: int) -> list[bytes]:
        """Every ``ResourceMetrics`` of this snapshot, each serialized (no tag)."""
        return list(self.frames(snapshot, now_ns))

    def frames(self, snapshot: Snapshot, now_ns: int) -> Iterator[bytes]:
        """``encode``, one ``ResourceMetrics`` at a time.

        The series (start times, Resources) are settled before this returns:
        call it under the lock that orders collections. The points are framed
        as the iterator is consumed, so a cycle sending request by request
        holds one request's bytes, not all of them (~19 MiB at 10,000 memcgs).
        With delta temporality framing moves each series' last values, so it
        happens at once, before this returns."""
        work = self._settle(snapshot, now_ns)
        self._attrs_before, self._attrs = self._attrs, {}  # a new cycle
        framed = (self._frame(*item, now_ns) for item in work)
        if self._delta:
            return iter([rm for rm in framed if rm is not None])
        return (rm for rm in framed if rm is not None)

    def _settle(self, snapshot: Snapshot, now_ns: int) -> list[tuple]:
        """(series, memcg or bucket, its activity metrics, its top files) per
        ResourceMetrics; the series of memcgs gone from the snapshot are forgotten."""
        live: dict[object, _Series] = {}
        work: list[tuple] = []
        activity = snapshot.activity
        activity_metrics: tuple[_Metric, ...] = ()
        if activity is not None:
            activity_metrics = tuple(
                m
                for m, needs in zip(_ACTIVITY, _NEEDS_LOOKUPS, strict=True)
                if activity.has_lookups or not needs
            )
        shared = {}
        if activity is not None and activity.shared is not None:
            shared = series_points(activity.shared, shared_names(snapshot.memcgs))
        for sample in snapshot.memcgs:
            # The path and the Identity decide the Resource's attributes (with
            # the id, the key): compared as they are, the attributes are only
            # built for a new series.
            ident = (sample.path, sample.identity)
            series = live[sample.id] = self._series_for(
                sample.id, ident, partial(sample_resource_attributes, sample), now_ns
            )
            files = activity.files.get(sample.id) if activity is not None else None
            work.append((series, sample, activity_metrics, files, shared.get(sample.id)))
        if activity is not None:
            for state, counters in activity.buckets.items():
                key = (CGROUP_STATE, state)
                identity = {CGROUP_STATE: state}
                series = live[key] = self._series_for(key, key, lambda i=identity: i, now_ns)
                work.append((series, counters, activity_metrics, None, shared.get(state)))
        # Memcgs gone from the snapshot are forgotten: bounded by the live set.
        self._series = live
        return work

    def _frame(
        self,
        series: _Series,
        source: MemcgSample | ActivityCounters,
        activity_metrics: tuple[_Metric, ...],
        files: list | None,
        shared: tuple[list, list] | None,
        now_ns: int,
    ) -> bytes | None:
        """One memcg's (or bucket's) ``ResourceMetrics``; None when it has no point."""
        if type(source) is MemcgSample:
            metrics = self._metrics(series, _MEMCG, source, now_ns)
            if source.activity is not None:
                metrics += self._metrics(series, activity_metrics, source.activity, now_ns)
        else:
            metrics = self._metrics(series, activity_metrics, source, now_ns)
        if files:
            metrics += self._metrics(series, (_FILES,), files, now_ns)
        if shared:
            hits, served = shared
            if hits:
                metrics += self._metrics(series, (_SHARED_HITS,), hits, now_ns)
            if served:
                metrics += self._metrics(series, (_SHARED_SERVED,), served, now_ns)
        return self._resource_metrics(series, metrics) if metrics else None

    def _resource_metrics(self, series: _Series, metrics: list[bytes]) -> bytes:
        scope_metrics = _field(_T_RM_SCOPE_METRICS, self._scope + b"".join(metrics))
        resource = series.resource
        if type(resource) is _SharedResource:
            resource = resource.field()
        return resource + scope_metrics + self._schema_url

    def _metrics(
        self,
        series: _Series,
        metrics: Iterable[_Metric],
        source: MemcgSample | ActivityCounters | list,
        now_ns: int,
    ) -> list[bytes]:
        """Each metric with points, serialized as a ScopeMetrics.metrics field.

        The hot loop of the agent (about 11 points per memcg per cycle): the
        framing is inlined rather than built with ``_field``."""
        encoded = []
        time_part = self._time_part
        if time_part is None or self._time_ns != now_ns:
            time_part = self._time_part = _time(now_ns)
            self._time_ns = now_ns
        start_part = series.start_part
        varints = _VARINTS
        delta = self._delta
        int_value, double_value = _INT_VALUE, _DOUBLE_VALUE
        for metric in metrics:
            points = []
            is_sum = metric.is_sum
            for value, extra in metric.extract(source):
                attrs = self._attributes(extra) if extra else b""
                # _value, inlined: ints stay ints (as_int), as the SDK sends them.
                if not is_sum:
                    prefix = attrs + time_part
                elif delta:
                    previous_key = (metric.spec.name, attrs)
                    last_value, last_time = series.previous.get(previous_key, (0, series.start_ns))
                    series.previous[previous_key] = (value, now_ns)
                    prefix = attrs + _start(last_time) + time_part
                    value = value - last_value
                else:
                    prefix = attrs + start_part + time_part
                if type(value) is int:
                    body = prefix + int_value(_T_AS_INT, value)
                else:
                    body = prefix + double_value(_T_AS_DOUBLE, value)
                n = len(body)
                points.append(_T_DATA_POINT + (varints[n] if n < 128 else _varint(n)) + body)
            if not points:
                continue
            payload = points[0] if len(points) == 1 else b"".join(points)
            if is_sum:
                payload += self._sum_tail
            n = len(payload)
            body = metric.header + metric.data_tag + (varints[n] if n < 128 else _varint(n))
            n += len(body)
            encoded.append(_T_SM_METRIC + (varints[n] if n < 128 else _varint(n)) + body + payload)
        return encoded


def requests(
    resource_metrics: Iterable[bytes], head: bytes = b"", limit: int = MAX_REQUEST_BYTES
) -> Iterator[bytes]:
    """Serialized ``ExportMetricsServiceRequest`` bodies, each under ``limit``,
    one at a time (at 10,000 memcgs all of them at once are ~19 MiB more RSS).

    ``head`` (an already serialized request, e.g. the SDK's own metrics) leads
    the first body: concatenated protobuf messages merge, repeated fields
    append. A single ResourceMetrics over the limit still goes, alone.
    ``resource_metrics`` is consumed as it is framed: pass an iterator
    (``BulkEncoder.frames``) and only one request's bytes exist at a time.
    """
    current: list[bytes] = [head] if head else []
    size = len(head)
    for rm in resource_metrics:
        n = len(rm)
        tag = _T_REQUEST_RM + (_VARINTS[n] if n < 128 else _varint(n))
        if current and size + len(tag) + n > limit:
            yield b"".join(current)
            current, size = [], 0
        current += (tag, rm)  # no framed copy of each ResourceMetrics
        size += len(tag) + n
    if current:
        yield b"".join(current)
