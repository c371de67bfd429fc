"""The agent's own Resource, and the per-container Resources built from it.

Each container's series and spans travel under a Resource of their own: the
agent's base Resource merged with the container's identity (the
``RESOURCE_KEYS`` attributes), which is what an OpenTelemetry Collector's
``k8sattributes`` processor associates on. ``ResourceCache`` builds each of
them once, for the agent's own metrics (``metric_regrouping``) and its stall
spans (``span_export``) alike; ``identity_of`` completes an identity from the
memcg id through the agent's lookup. Public SDK types only.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.sdk.resources import Resource

from . import __version__
from .metrics import CGROUP_ID

SERVICE_NAME = "otel-pagecache"

IdentityLookup = Callable[[object], Mapping[str, object] | None]


def base_resource() -> Resource:
    """The agent's own Resource: ``OTEL_RESOURCE_ATTRIBUTES``/``OTEL_SERVICE_NAME``
    win; otherwise ``service.name=otel-pagecache`` and the host name."""
    detected = Resource.create()
    attrs = dict(detected.attributes)
    if str(attrs.get("service.name", "")).startswith("unknown_service"):
        attrs["service.name"] = SERVICE_NAME
    attrs.setdefault("service.version", __version__)
    attrs.setdefault("host.name", socket.gethostname())
    # Tells the agent's residency series from the in-process plugin's
    # (pagecache.reporter=process on its points) for the same memcg.
    attrs.setdefault("pagecache.reporter", "agent")
    return Resource(attrs, detected.schema_url)


def identity_of(found: Iterable[tuple[str, object]], lookup: IdentityLookup | None) -> tuple:
    """The identity items found on a point or span, completed by ``lookup`` from
    its ``pagecache.cgroup.id``; sorted, so equal identities are equal tuples."""
    identity = dict(found)
    if lookup is not None and CGROUP_ID in identity:
        identity.update(lookup(identity[CGROUP_ID]) or {})
    return tuple(sorted(identity.items()))


class ResourceCache:
    """base Resource + identity → the merged Resource, built once per pair.

    Bounded: past ``max_cached`` entries it starts again (and rebuilds on
    demand), so a host whose containers churn cannot grow it without end; a
    steady host builds none per cycle."""

    def __init__(self, max_cached: int = 20_000) -> None:
        self._max_cached = max_cached
        self._resources: dict[tuple, Resource] = {}

    def get(self, base: Resource, identity: tuple) -> Resource:
        key = (id(base), identity)
        resource = self._resources.get(key)
        if resource is None:
            if len(self._resources) >= self._max_cached:
                self._resources.clear()
            resource = base.merge(Resource(dict(identity))) if identity else base
            self._resources[key] = resource
        return resource
