"""A requested stop (SIGTERM, SIGINT) and the one deadline it sets for the whole process.

``StopRequest`` notes when the first signal came: every step of the stop
(the last export, the span flush, the BPF detach) then shares one clock
started at the signal, not one bound per step. Signals are taken by a thread
of their own (``sigwait``), so a stop is seen at once even while the main
thread is inside a long C call (BCC compiling its program at start-up).

``ExitGuard`` ends the process at the hard limit, ``OTEL_PAGECACHE_SHUTDOWN_TIMEOUT``
plus ``EXIT_GRACE_S`` after the signal, if something the agent cannot
interrupt is still running then (a C call in gRPC or libbpf, the interpreter
waiting at exit): a supervisor that asked for a stop kills what overruns,
and an exit is cleaner than a kill. The kernel detaches the BPF programs of
an exited process either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

_log = logging.getLogger("otel_pagecache")

# What the process may take after the last export's bound: the BPF detach
# (DETACH_S of it) and the interpreter's exit. The guard fires a little
# before the second is up, so that the exit itself fits.
EXIT_GRACE_S = 1.0
DETACH_S = 0.5
_GUARD_MARGIN_S = 0.2
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Set once, by the first SIGTERM/SIGINT (or ``request``)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.at: float | None = None  # time.monotonic() of the first request
        self._lock = threading.Lock()
        self._on_request: list = []

    def request(self, why: str = "a stop") -> None:
        with self._lock:
            if self.at is not None:
                return
            self.at = time.monotonic()
            hooks = list(self._on_request)
        _log.info("received %s, stopping", why)
        for hook in hooks:
            try:
                hook(self.at)
            except Exception:  # noqa: BLE001 - a hook must not keep the stop from being seen
                _log.debug("stop hook failed", exc_info=True)
        self.event.set()

    def on_request(self, hook) -> None:
        """Call ``hook(at)`` when the stop is requested (at once if it was)."""
        with self._lock:
            self._on_request.append(hook)
            at = self.at
        if at is not None:
            hook(at)

    def deadline(self, bound_s: float) -> float:
        """``bound_s`` after the request (after now if none came: an exception)."""
        return (self.at if self.at is not None else time.monotonic()) + bound_s


def stop_on_signals() -> StopRequest:
    """SIGTERM and SIGINT request a stop; call from the main thread before
    any other thread starts (threads inherit the blocked mask, so the
    signal thread is the one that receives them)."""
    stop = StopRequest()

    def handle(signum, _frame) -> None:  # if one reaches a thread not blocking it
        stop.request(signal.Signals(signum).name)

    for signum in _SIGNALS:
        signal.signal(signum, handle)
    if hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigwait"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)

        def wait() -> None:
            while True:
                signum = signal.sigwait(_SIGNALS)
                stop.request(signal.Signals(signum).name)

        threading.Thread(target=wait, name="otel-pagecache-signals", daemon=True).start()
    return stop


class ExitGuard:
    """Ends the process with ``code`` at ``deadline`` (``time.monotonic()``)
    unless it has ended by then."""

    def __init__(self, deadline: float, code: int = 0) -> None:
        self.deadline = deadline
        self._code = code
        self._thread = threading.Thread(target=self._run, name="otel-pagecache-exit", daemon=True)

    def start(self) -> ExitGuard:
        self._thread.start()
        return self

    def _run(self) -> None:
        time.sleep(max(0.0, self.deadline - time.monotonic()))
        _log.warning(
            "the stop did not finish within its bound (OTEL_PAGECACHE_SHUTDOWN_TIMEOUT + %.1f s): "
            "exiting now; the kernel detaches the BPF programs",
            EXIT_GRACE_S,
        )
        _log.info("stopped")
        # What is buffered goes out first; a closed stream cannot be helped.
        for flushable in (sys.stdout, sys.stderr, *logging.getLogger().handlers):
            with contextlib.suppress(Exception):
                flushable.flush()
        os._exit(self._code)


def guard_exit(stop: StopRequest, bound_s: float) -> None:
    """From the moment a stop is requested, the process ends at most
    ``bound_s`` + ``EXIT_GRACE_S`` later."""
    stop.on_request(lambda at: ExitGuard(at + bound_s + EXIT_GRACE_S - _GUARD_MARGIN_S).start())
