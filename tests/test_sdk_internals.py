"""The SDK internals the in-process plugin relies on, on the SDK installed here.

Checked on opentelemetry-sdk 1.45.2 (``sdk_internals.SDK_VERSIONS_CHECKED``).
Another version fails ``test_installed_sdk_is_a_checked_version`` on purpose:
run this file against it, then add it to the constant.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider

from otel_pagecache.sdk_internals import (
    SDK_VERSIONS_CHECKED,
    unwrap_span_processors,
    wrap_span_processors,
)


class Front:
    """A wrapper as the plugin's: not an SDK ``SpanProcessor``, so it has no
    ``_on_ending`` of its own for the SDK to call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.ended: list[str] = []

    def on_start(self, span, parent_context=None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span) -> None:
        self.ended.append(span.name)
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Ending(SpanProcessor):
    def __init__(self) -> None:
        self.ending: list[str] = []

    def _on_ending(self, span) -> None:  # the SDK's private hook, before on_end
        self.ending.append(span.name)


def test_installed_sdk_is_a_checked_version():
    assert version("opentelemetry-sdk") in SDK_VERSIONS_CHECKED


def test_pyproject_admits_only_checked_sdk_versions():
    """pyproject.toml pins the SDK to the versions checked here (with the
    ``opentelemetry-*==0.66b2`` betas it allows no other anyway)."""
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    pins = re.findall(r'"opentelemetry-sdk([^"]*)"', text)
    assert pins, "pyproject.toml no longer names opentelemetry-sdk"
    for pin in pins:
        assert pin.startswith("=="), f"opentelemetry-sdk{pin}: pin a checked version"
        assert pin[2:] in SDK_VERSIONS_CHECKED, f"opentelemetry-sdk{pin} is not checked"


def test_the_sdks_on_ending_hook_reaches_the_processors_behind_the_wrapper():
    provider = TracerProvider()
    behind = Ending()
    provider.add_span_processor(behind)
    wrapped = wrap_span_processors(provider, Front)
    assert wrapped is not None
    with provider.get_tracer("t").start_as_current_span("one"):
        pass
    assert behind.ending == ["one"] and wrapped.wrapper.ended == ["one"]


def test_wrapping_sees_spans_of_tracers_handed_out_before_and_unwrapping_restores():
    provider = TracerProvider()
    before = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(before))
    tracer = provider.get_tracer("early")  # handed out before the plugin loads
    wrapped = wrap_span_processors(provider, Front)
    assert wrapped is not None
    later = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(later))
    with tracer.start_as_current_span("one"):
        pass
    assert wrapped.wrapper.ended == ["one"]
    assert [s.name for s in before.get_finished_spans()] == ["one"]
    assert [s.name for s in later.get_finished_spans()] == ["one"]
    unwrap_span_processors(wrapped)
    with tracer.start_as_current_span("two"):
        pass
    assert wrapped.wrapper.ended == ["one"]
    assert [s.name for s in before.get_finished_spans()] == ["one", "two"]
    assert [s.name for s in later.get_finished_spans()] == ["one", "two"]


def test_a_provider_without_the_internals_is_left_alone():
    assert wrap_span_processors(NoOpTracerProvider(), Front) is None
