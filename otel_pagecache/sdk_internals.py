"""The one place that reaches into OpenTelemetry SDK internals.

The in-process plugin must see every span before the application's own span
processors do (to attach thread figures to a copy of it), including spans of
tracers handed out before the plugin loaded. The SDK has no public hook for
that: ``TracerProvider.add_span_processor`` only appends, and tracers hold
the provider's multi-processor itself. So the multi-processor's processor
tuple is rearranged in place, here and nowhere else; and the SDK's private
``_on_ending`` hook, which it calls on every processor before ``on_end``, is
passed on by the wrapper to the processors behind it (``_forward_on_ending``),
so the wrapper itself is a plain span processor of public methods.

Checked on opentelemetry-sdk ``SDK_VERSIONS_CHECKED``, the release
``pyproject.toml`` pins; ``tests/test_sdk_internals.py`` fails on any other
version, or a pin that differs, until it is checked again (and the constant
updated). On an SDK where the internals are gone, ``wrap_span_processors``
returns None and the plugin logs that spans get no figures; nothing raises.

(The node agent uses none: its bulk is encoded from public protobuf types,
and its own metrics go through public SDK readers.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SDK_VERSIONS_CHECKED = ("1.45.2",)


@dataclass
class Wrapped:
    """What ``unwrap_span_processors`` needs to undo a wrap."""

    multi: Any  # the provider's multi span processor, which tracers hold
    wrapper: Any  # the processor now in front
    inner: Any  # a multi span processor holding the processors that were there


def wrap_span_processors(provider: object, make_wrapper: Callable[[Any], Any]) -> Wrapped | None:
    """Put ``make_wrapper(inner)`` in front of ``provider``'s span processors,
    ``inner`` being a multi-processor of the ones already there; None when
    ``provider`` is not an SDK tracer provider this was checked on."""
    multi = getattr(provider, "_active_span_processor", None)
    if multi is None or not isinstance(getattr(multi, "_span_processors", None), tuple):
        return None
    inner = type(multi)()
    inner._span_processors = multi._span_processors  # noqa: SLF001
    wrapper = make_wrapper(inner)
    if not _forward_on_ending(wrapper, inner):
        return None
    multi._span_processors = (wrapper,)  # noqa: SLF001
    return Wrapped(multi, wrapper, inner)


def _forward_on_ending(wrapper: Any, inner: Any) -> bool:
    """The multi-processor calls ``_on_ending(span)`` on each of its processors
    before ``on_end``: the wrapper's goes to the processors behind it. False
    when the wrapper cannot take the hook (it would then break every span end)."""
    ending = getattr(inner, "_on_ending", None)
    if ending is None:
        return True
    try:
        wrapper._on_ending = ending  # noqa: SLF001
    except AttributeError:
        return False
    return True


def unwrap_span_processors(wrapped: Wrapped) -> None:
    """The processors back in place, and any added since behind them."""
    added_since = tuple(
        p
        for p in wrapped.multi._span_processors  # noqa: SLF001
        if p is not wrapped.wrapper
    )
    wrapped.multi._span_processors = (  # noqa: SLF001
        wrapped.inner._span_processors + added_since  # noqa: SLF001
    )
