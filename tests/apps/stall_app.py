"""Run under ``opentelemetry-instrument`` by tests/test_correlation.py.

Waits (the node agent looks for span slots every 2 s), then reads the file
given as argv[1] inside span "read-big"; in a memory cgroup with a small
limit that read stalls in memcg reclaim.
"""

import sys
import time

from opentelemetry import trace

tracer = trace.get_tracer("app")
time.sleep(float(sys.argv[2]))
with tracer.start_as_current_span("read-big"), open(sys.argv[1], "rb") as f:
    while f.read(1 << 20):
        pass
