"""The stop's one deadline (otel_pagecache/stopping.py), in a real process:
a signal is seen while the main thread is stuck inside a C call, and the
process ends at the bound + EXIT_GRACE_S whatever is still running, exit 0.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from otel_pagecache.stopping import EXIT_GRACE_S

BOUND_S = 0.5

# The main thread blocks in libc's sleep(): Python's own signal handlers
# would run only when it returns, 30 s later.
STUCK = textwrap.dedent(
    f"""
    import ctypes, logging, sys
    logging.basicConfig(level="INFO", stream=sys.stderr)
    from otel_pagecache.stopping import guard_exit, stop_on_signals
    stop = stop_on_signals()
    guard_exit(stop, {BOUND_S})
    print("ready", flush=True)
    ctypes.CDLL(None).sleep(30)
    sys.exit(3)
    """
)


def test_a_stop_ends_the_process_at_the_bound_even_inside_a_c_call():
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read()
    assert code == 0, log
    assert "received SIGTERM, stopping" in log, log
    assert "did not finish within its bound" in log and log.rstrip().endswith("stopped"), log
    # The guard is due at BOUND_S + EXIT_GRACE_S - 0.2 s; slack for a loaded machine.
    assert BOUND_S <= elapsed <= BOUND_S + EXIT_GRACE_S + 3, f"{elapsed:.2f} s\n{log}"


def test_the_deadline_counts_from_the_signal():
    from otel_pagecache.stopping import StopRequest

    stop = StopRequest()
    assert not stop.event.is_set()
    before = time.monotonic()
    stop.request("SIGTERM")
    stop.request("SIGINT")  # the first one counts
    assert stop.event.is_set()
    assert before <= stop.deadline(5.0) - 5.0 <= time.monotonic()
    seen = []
    stop.on_request(seen.append)  # after the fact: called at once
    assert seen == [stop.at]
