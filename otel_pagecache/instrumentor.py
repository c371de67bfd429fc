"""The in-process plugin: ``opentelemetry-instrument python app.py`` picks it up.

Unprivileged and without BPF, it
  (a) names the process's own container (from ``/proc/self/cgroup``) on what it reports;
  (b) exports the process's own memcg residency under the node agent's metric
      names, marked ``pagecache.reporter=process`` (the agent's carry
      ``pagecache.reporter=agent`` on their Resource); it reads no other cgroup;
  (c) puts on every span what its thread cost the page cache while the span
      ran: ``pagecache.thread.read_bytes`` (bytes the thread caused to be read
      from storage: its cache misses) and ``pagecache.thread.major_faults``,
      plus ``thread.id``. A span that ends on another thread than it started
      on gets no thread figures rather than wrong ones.

Thread figures come from one ``getrusage(RUSAGE_THREAD)`` call at start and
at end: ``ru_majflt``, and ``ru_inblock``, which Linux computes from the same
task I/O accounting as ``read_bytes`` in ``/proc/thread-self/io`` (in
512-byte units). A span is read-only once ended, so the figures are attached
on the way to the exporter: the plugin wraps the tracer provider's span
processor and hands the processors behind it a copy of the span with them.

Settings (environment, in ``config.SETTINGS``): ``OTEL_PAGECACHE_PROCESS_RESIDENCY``,
``OTEL_PAGECACHE_SPAN_FIGURES``, ``OTEL_PAGECACHE_SPAN_SLOTS`` (default true); a bad
value warns and the default applies: the plugin never stops the application.
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=pagecache`` turns the whole plugin off.

``opentelemetry-instrument`` sets up the SDK through a configurator, which
``opentelemetry-distro`` (a dependency of this package) provides. Without
one the tracer provider stays the API's no-op proxy and nothing is recorded:
the plugin says so once on stderr, with the fix.
"""

from __future__ import annotations

import atexit
import logging
import os
import resource
import sys
import threading
from collections.abc import Collection, Iterator
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.metrics import CallbackOptions, Observation

from . import __version__
from .cgroupfs import CgroupEntry, find_memory_hierarchy, own_cgroup_path
from .config import plugin_flag, plugin_value
from .containers import Identity, identify_process
from .correlation import SpanSlots
from .memstat import read_memcg
from .metrics import MEMCG_METRICS, SCOPE_NAME, MetricSpec
from .residency import MemcgSample, make_sample, own_stats
from .sdk_internals import Wrapped, unwrap_span_processors, wrap_span_processors
from .span_copy import copy_span

_log = logging.getLogger(__name__)

REPORTER = "pagecache.reporter"
READ_BYTES = "pagecache.thread.read_bytes"
MAJOR_FAULTS = "pagecache.thread.major_faults"
THREAD_ID = "thread.id"


def is_sdk_tracer_provider(provider: object) -> bool:
    from opentelemetry.sdk.trace import TracerProvider

    return isinstance(provider, TracerProvider)


def thread_figures() -> tuple[int, int]:
    """(bytes read from storage, major faults) of the calling thread so far."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_inblock * 512, usage.ru_majflt


class ThreadFiguresProcessor:
    """Wraps the span processors of a tracer provider; see the module docstring.

    On start it notes the thread and its figures and (with ``slots``) makes
    the span the one its thread's slot names; on end it computes the figures
    and hands the processors behind it a copy of the span with them, and with
    ``process.pid`` and the process's container identity.
    """

    MAX_OPEN_SPANS = 100_000

    def __init__(
        self, inner: Any, slots: SpanSlots | None = None, identity: dict | None = None
    ) -> None:
        self.inner = inner
        # span id -> (thread, bytes, faults), in start order.
        self._starts: dict[int, tuple[int, int, int]] = {}
        self._slots = slots
        # thread id -> the span contexts it runs, innermost last; the slot
        # of a thread names the top of its stack.
        self._stacks: dict[int, list[Any]] = {}
        self._span_attributes = {"process.pid": os.getpid(), **(identity or {})}

    # No lock on these paths: each step is one dict or list operation, atomic
    # under the GIL, and a span's entries are touched by its own start and end.
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        try:
            tid = threading.get_native_id()
            context = span.context
            read_bytes, faults = thread_figures()
            starts = self._starts
            starts[context.span_id] = (tid, read_bytes, faults)
            if len(starts) > self.MAX_OPEN_SPANS:
                # Spans that never end must not stop new ones from getting figures.
                starts.pop(next(iter(starts)), None)
            if self._slots is not None:
                stack = self._stacks.get(tid)
                if stack is None:
                    stack = self._stacks[tid] = []
                stack.append(context)
                if len(stack) > 256:  # spans that never end: keep the innermost
                    del stack[0]
                self._slots.set(tid, context.trace_id, context.span_id, int(context.trace_flags))
        except Exception:  # noqa: BLE001 - never break the application's tracing
            _log.debug("page-cache figures at span start failed", exc_info=True)
        self.inner.on_start(span, parent_context=parent_context)

    def _point_slot(self, tid: int, stack: list[Any]) -> None:
        """Make ``tid``'s slot name the top of its stack (or nothing)."""
        if stack:
            top = stack[-1]
            self._slots.set(tid, top.trace_id, top.span_id, int(top.trace_flags))
        else:
            self._slots.clear(tid)
            self._stacks.pop(tid, None)

    def on_end(self, span: Any) -> None:
        try:
            span = self._with_figures(span)
        except Exception:  # noqa: BLE001
            _log.debug("page-cache figures at span end failed", exc_info=True)
        self.inner.on_end(span)

    def _with_figures(self, span: Any) -> Any:
        context = span.context
        start = self._starts.pop(context.span_id, None)
        if start is None:
            return span
        thread, read_bytes, faults = start
        if self._slots is not None:
            # Off the stack of the thread that started it, wherever it ends.
            stack = self._stacks.get(thread)
            if stack and context in stack:
                stack.remove(context)
                self._point_slot(thread, stack)
        # Ended spans are read-only: the additions travel on a copy.
        attributes = dict(span.attributes or {})
        attributes.update(self._span_attributes)
        if threading.get_native_id() == thread:
            now_bytes, now_faults = thread_figures()
            attributes[READ_BYTES] = now_bytes - read_bytes
            attributes[MAJOR_FAULTS] = now_faults - faults
            attributes[THREAD_ID] = thread
        # else: ended on another thread: no figures rather than wrong ones
        return copy_span(span, attributes)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class ProcessResidency:
    """The process's own memcg, under the node agent's metric names."""

    def __init__(
        self,
        meter: metrics.Meter,
        identity: Identity,
        directory: str,
        version: int,
        cgroup_path: str,
    ) -> None:
        self._identity = identity
        self._directory = directory
        self._version = version
        self._path = cgroup_path
        self.enabled = True
        base = dict(identity.resource_attributes())
        base[REPORTER] = "process"
        base["pagecache.cgroup.path"] = cgroup_path
        self._attrs = base
        for spec, extract in MEMCG_METRICS:
            self._register(meter, spec, extract)

    def _register(self, meter: metrics.Meter, spec: MetricSpec, extract) -> None:
        def callback(_options: CallbackOptions) -> Iterator[Observation]:
            if not self.enabled:
                return
            try:
                sample = self._sample()
                if sample is None:
                    return
                for value, extra in extract(sample):
                    yield Observation(value, {**self._attrs, **extra})
            except Exception:  # noqa: BLE001 - callbacks never raise
                _log.debug("process residency for %s failed", spec.name, exc_info=True)

        create = (
            meter.create_observable_gauge
            if spec.kind == "gauge"
            else meter.create_observable_counter
        )
        create(spec.name, callbacks=[callback], unit=spec.unit, description=spec.description)

    def _sample(self) -> MemcgSample | None:
        reading = read_memcg(self._directory, self._version)
        if not reading.present:
            return None
        own = CgroupEntry(0, self._path, None)
        tree_stats = None
        if self._version == 2:
            # v2 figures include children: subtract those of our own subtree
            # (never any other cgroup's) to report this memcg's own pages.
            readings = {0: reading}
            entries = [own]
            for number, child in enumerate(_child_dirs(self._directory), start=1):
                readings[number] = read_memcg(child, 2)
                entries.append(CgroupEntry(number, f"{self._path}/{number}", 0))
            tree_stats = {0: dict(reading.stat)}
            own_stats(readings, entries)
        return make_sample(own, self._identity, reading, tree_stats)


def _child_dirs(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


class PageCacheInstrumentor(BaseInstrumentor):
    """``opentelemetry-instrument`` entry point ``pagecache``."""

    _processor: ThreadFiguresProcessor | None = None
    _wrapped: Wrapped | None = None
    _residency: ProcessResidency | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        given = kwargs.get("tracer_provider")
        if plugin_flag("sdk_disabled"):
            pass  # turned off on purpose: nothing to add figures to, nothing to warn about
        elif given is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            # No SDK yet: the application may still set one up as it starts.
            _NoOpProviderWatch(self).start()
        elif plugin_flag("span_figures"):
            self._wrap_span_processor(given or trace.get_tracer_provider())
        if plugin_flag("process_residency"):
            self._start_residency(kwargs.get("meter_provider") or metrics.get_meter_provider())

    def _wrap_span_processor(self, provider: Any) -> None:
        if not is_sdk_tracer_provider(provider):
            _log.info("no SDK tracer provider: spans get no page-cache figures")
            return
        slots = None
        if plugin_flag("span_slots"):
            try:
                slots = SpanSlots()
            except OSError as e:
                _log.info("no span slots for stall links: %s", e)
        # Tracers already handed out hold the provider's multi-processor, so
        # its processors move behind ours in place (sdk_internals). Processors
        # added later still work (they get spans without the figures).
        identity = self._identity_attributes()
        self._wrapped = wrap_span_processors(
            provider, lambda inner: ThreadFiguresProcessor(inner, slots, identity)
        )
        if self._wrapped is None:
            _log.info("this SDK's span processors cannot be wrapped: spans get no figures")
            if slots is not None:
                slots.close()
            return
        self._processor = self._wrapped.wrapper

    @staticmethod
    def _identity_attributes() -> dict:
        try:
            with open("/proc/self/cgroup") as f:
                return dict(identify_process(f.read()).resource_attributes())
        except OSError:
            return {}

    def _start_residency(self, provider: metrics.MeterProvider) -> None:
        proc_cgroup = ""
        try:
            with open("/proc/self/cgroup") as f:
                proc_cgroup = f.read()
        except OSError:
            return
        try:
            hierarchy = find_memory_hierarchy(str(plugin_value("cgroup_root")))
        except Exception as e:  # noqa: BLE001 - no memory controller: nothing to report
            _log.info("no process residency: %s", e)
            return
        path = own_cgroup_path(hierarchy.version)
        if self._residency is not None:
            self._residency.enabled = True
            return
        meter = provider.get_meter(SCOPE_NAME, __version__)
        self._residency = ProcessResidency(
            meter,
            identify_process(proc_cgroup),
            hierarchy.directory(path),
            hierarchy.version,
            path,
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._wrapped is not None and self._processor is not None:
            unwrap_span_processors(self._wrapped)
            if self._processor._slots is not None:  # noqa: SLF001
                self._processor._slots.close()  # noqa: SLF001 - the registry goes too
            self._processor = None
            self._wrapped = None
        if self._residency is not None:
            # Instruments cannot be removed from a meter; they fall silent.
            self._residency.enabled = False


NO_OP_PROVIDER_WARNING = (
    "otel-pagecache: the tracer provider is still OpenTelemetry's no-op proxy, so this "
    "application records no spans and the pagecache plugin adds nothing to them. Fix: "
    "pip install opentelemetry-distro into the environment that runs the application "
    "(otel-pagecache depends on it; check OTEL_PYTHON_CONFIGURATOR), or set a TracerProvider "
    "from opentelemetry-sdk in the application."
)


class _NoOpProviderWatch:
    """Looks once the application has started (after ``DELAY_S``, or at exit if sooner):
    an SDK tracer provider set meanwhile gets the figures; still the proxy: one line on
    stderr, with the fix."""

    DELAY_S = 5.0

    def __init__(self, instrumentor: PageCacheInstrumentor) -> None:
        self._instrumentor = instrumentor
        self._done = threading.Event()
        self._timer = threading.Timer(self.DELAY_S, self.check)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()
        atexit.register(self.check)

    def check(self) -> None:
        if self._done.is_set():
            return
        self._done.set()
        self._timer.cancel()
        try:
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider):
                sys.stderr.write(NO_OP_PROVIDER_WARNING + "\n")
                sys.stderr.flush()
            elif plugin_flag("span_figures"):
                self._instrumentor._wrap_span_processor(provider)  # noqa: SLF001
        except Exception:  # noqa: BLE001 - never break the application
            _log.debug("tracer provider check failed", exc_info=True)
