"""The per-container series for Prometheus: a ``prometheus_client`` collector.

Prometheus pulls, so there is no route to push the bulk into the SDK's
Prometheus reader without the SDK aggregating it (the cost ``otlp_bulk``
avoids). This collector builds the families from the same snapshot at scrape
time, named exactly as the OpenTelemetry Prometheus exporter names them
(the specification's compatibility rules, as implemented by
``opentelemetry-exporter-prometheus``'s ``_mapping``):

- name: characters outside ``[a-zA-Z0-9:]`` become ``_``; the unit, mapped
  (``By`` → ``bytes``, ``s`` → ``seconds``, ``1`` and ``{annotations}`` →
  nothing), is appended; counters get ``_total``;
- labels: the memcg's identity (Prometheus has no per-series Resource), the
  point's attributes, and ``otel_scope_name``/``_version``/``_schema_url``;
  keys with characters outside ``[a-zA-Z0-9]`` → ``_``.

One difference, on purpose (issue 10, label hygiene): a series carries only
its own labels. The SDK's exporter backfills every label any series of the
family has with ``""`` (``pagecache_cgroup_state=""`` on every memcg's
activity series); an empty label is the same as an absent one to Prometheus,
so no query changes.

The agent's own metrics and ``target_info`` still come from the SDK's
``PrometheusMetricReader`` on the same registry.
``tests/test_bulk_equivalence.py`` holds this output to what the SDK's exporter
produced for the same snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

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
from .residency import SnapshotSource
from .sharing import series_points

_NAME = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL = re.compile(r"[^a-zA-Z0-9]+")
_ANNOTATION = re.compile(r"{.*}")
_UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "1": "",
    "%": "percent",
}


def metric_name(name: str) -> str:
    if name and name[0].isdigit():
        name = "_" + name[1:]
    return _NAME.sub("_", name)


def label_name(key: str) -> str:
    if key and key[0].isdigit():
        key = "_" + key[1:]
    return _LABEL.sub("_", key)


def unit_suffix(unit: str) -> str:
    unit = _ANNOTATION.sub("", unit)
    if unit in _UNITS:
        return _UNITS[unit]
    return _NAME.sub("_", unit).strip("_")


def label_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _labels(attributes: Mapping[str, object]) -> dict[str, str]:
    return {label_name(k): label_value(v) for k, v in attributes.items() if v != ""}


class _Family:
    """A family whose samples each carry their own label set."""

    def __init__(self, spec: MetricSpec) -> None:
        unit = unit_suffix(spec.unit)
        factory = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
        self.metric: Metric = factory(
            metric_name(spec.name), spec.description, labels=(), unit=unit
        )
        self.sample_name = self.metric.name + ("_total" if spec.kind == "counter" else "")

    def add(self, labels: dict[str, str], value: float) -> None:
        self.metric.samples.append(Sample(self.sample_name, labels, float(value)))


class BulkCollector:
    """``collect()`` yields every per-container family from the current snapshot."""

    def __init__(self, source: SnapshotSource, scope_name: str, scope_version: str) -> None:
        self._source = source
        self._scope = _labels({"otel_scope_name": scope_name, "otel_scope_version": scope_version})
        self._scope["otel_scope_schema_url"] = ""  # as the SDK exporter writes it
        self._identities: dict[tuple, dict[str, str]] = {}

    def _identity(self, sample) -> dict[str, str]:
        attrs = sample_resource_attributes(sample)
        key = tuple(attrs.items())
        found = self._identities.get(key)
        if found is None:
            if len(self._identities) > 50_000:
                self._identities.clear()
            found = self._identities[key] = {**_labels(attrs), **self._scope}
        return found

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source.current()
        activity = snapshot.activity
        memcgs = [(s, self._identity(s)) for s in snapshot.memcgs]
        for spec, extract in MEMCG_METRICS:
            family = _Family(spec)
            for sample, identity in memcgs:
                for value, extra in extract(sample):
                    family.add({**identity, **_labels(extra)} if extra else identity, value)
            if family.metric.samples:
                yield family.metric
        if activity is None:
            return
        for spec, extract, needs_lookups in ACTIVITY_METRICS:
            if needs_lookups and not activity.has_lookups:
                continue
            family = _Family(spec)
            for sample, identity in memcgs:
                if sample.activity is not None:
                    for value, extra in extract(sample.activity):
                        family.add({**identity, **_labels(extra)} if extra else identity, value)
            for state, counters in activity.buckets.items():
                bucket = {label_name(CGROUP_STATE): state, **self._scope}
                for value, extra in extract(counters):
                    family.add({**bucket, **_labels(extra)}, value)
            if family.metric.samples:
                yield family.metric
        family = _Family(FILE_USAGE)
        for sample, identity in memcgs:
            files = activity.files.get(sample.id)
            if files:
                for value, extra in file_points(files):
                    family.add({**identity, **_labels(extra)}, value)
        if family.metric.samples:
            yield family.metric
        if activity.shared is None:
            return
        shared = series_points(activity.shared, shared_names(snapshot.memcgs))
        identities = {sample.id: identity for sample, identity in memcgs}
        for side, spec in enumerate((SHARED_HITS, SHARED_SERVED)):
            family = _Family(spec)
            for key, sides in shared.items():
                identity = identities.get(key) if isinstance(key, int) else None
                if identity is None:
                    if isinstance(key, int):
                        continue  # not exported this cycle
                    identity = {label_name(CGROUP_STATE): key, **self._scope}
                for value, extra in sides[side]:
                    family.add({**identity, **_labels(extra)}, value)
            if family.metric.samples:
                yield family.metric
