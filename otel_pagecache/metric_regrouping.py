"""The agent's own SDK metrics regrouped onto per-container Resources.

The agent's own metrics go through the SDK; those that name a memcg (the
stall histogram's points carry only ``pagecache.cgroup.id``: attribute sets
of one key are far cheaper for the SDK to aggregate than sets of ten) are
moved by ``ResourceSplitter`` onto the Resource of that memcg's container
(``container_resources``), so they land beside the per-container bulk that
``otlp_bulk`` encodes. Public SDK types only.
"""

from __future__ import annotations

import dataclasses

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)

from .container_resources import IdentityLookup, ResourceCache, identity_of
from .metrics import RESOURCE_KEYS


class ResourceSplitter:
    """Regroups one MetricsData into a ResourceMetrics per identity.

    A point's identity is the ``RESOURCE_KEYS`` attributes it carries, plus
    whatever ``lookup`` returns for its cgroup id; those attributes leave the
    point for its Resource. Resources are cached per identity, so a steady
    host builds none per cycle.
    """

    def __init__(
        self,
        resource_keys: frozenset[str] = RESOURCE_KEYS,
        lookup: IdentityLookup | None = None,
        max_cached: int = 20_000,
    ) -> None:
        self._keys = resource_keys
        self._lookup = lookup
        self._resources = ResourceCache(max_cached)

    def split(self, data: MetricsData) -> MetricsData:
        keys, lookup = self._keys, self._lookup
        # Identity per distinct set of identity items on points, for this call.
        idents: dict[tuple, tuple] = {}
        # (resource, identity) -> {scope id -> (scope, resource, {metric name -> (metric, points)})}
        groups: dict[tuple, dict] = {}
        for rm in data.resource_metrics:
            rid = id(rm.resource)
            for sm in rm.scope_metrics:
                sid = id(sm)
                for metric in sm.metrics:
                    name = metric.name
                    for point in getattr(metric.data, "data_points", ()):
                        attrs = point.attributes
                        found = tuple(i for i in attrs.items() if i[0] in keys) if attrs else ()
                        if not found:
                            ident: tuple = ()
                            moved = point
                        else:
                            ident = idents.get(found)
                            if ident is None:
                                ident = idents[found] = identity_of(found, lookup)
                            rest = (
                                {k: v for k, v in attrs.items() if k not in keys}
                                if len(found) != len(attrs)
                                else {}
                            )
                            moved = _with_attributes(point, rest)
                        scopes = groups.get((rid, ident))
                        if scopes is None:
                            scopes = groups[(rid, ident)] = {}
                        entry = scopes.get(sid)
                        if entry is None:
                            entry = scopes[sid] = (sm, rm.resource, {})
                        bucket = entry[2].get(name)
                        if bucket is None:
                            bucket = entry[2][name] = (metric, [])
                        bucket[1].append(moved)
        resource_metrics = []
        for (_, ident), scopes in groups.items():
            base = next(iter(scopes.values()))[1]
            scope_metrics = [
                ScopeMetrics(
                    sm.scope,
                    [_with_points(m, pts) for m, pts in metrics.values()],
                    sm.schema_url,
                )
                for sm, _, metrics in scopes.values()
            ]
            resource_metrics.append(
                ResourceMetrics(self._resources.get(base, ident), scope_metrics, base.schema_url)
            )
        return MetricsData(resource_metrics)


def _with_points(metric: Metric, points: list) -> Metric:
    """A copy of a metric with other points; direct construction, as below."""
    data = metric.data
    if isinstance(data, Gauge):
        data = Gauge(points)
    elif isinstance(data, Sum):
        data = Sum(points, data.aggregation_temporality, data.is_monotonic)
    else:
        data = dataclasses.replace(data, data_points=points)
    return Metric(metric.name, metric.description, metric.unit, data)


def _with_attributes(point, attributes: dict):
    """A copy of a data point with other attributes; direct construction is
    several times cheaper than dataclasses.replace on the hot path."""
    if isinstance(point, NumberDataPoint):
        return NumberDataPoint(
            attributes,
            point.start_time_unix_nano,
            point.time_unix_nano,
            point.value,
            point.exemplars,
        )
    return dataclasses.replace(point, attributes=attributes)
