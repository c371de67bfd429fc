"""Copies of ended spans with other attributes or another Resource.

An ended SDK span is read-only, so what is added after its end travels on a
copy made through ``ReadableSpan``'s public constructor: the in-process
plugin's thread figures (``instrumentor``) and the agent's per-container
Resource on stall spans (``span_export``). Kept apart from both so the
plugin, which runs inside every instrumented application, imports nothing
of the agent's export path.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan


def copy_span(
    span: ReadableSpan, attributes: dict, resource: Resource | None = None
) -> ReadableSpan:
    """An ended span with other attributes (and Resource): ended spans are read-only."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=resource if resource is not None else span.resource,
        attributes=attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
