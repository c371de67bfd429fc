"""Run under ``opentelemetry-instrument`` by tests/test_correlation.py and
tests/test_pipeline.py.

Opens span "read-big" at once and reads the file given as argv[1] in it; in
a memory cgroup with a small limit that read stalls in memcg reclaim from
its first megabytes. No wait before the span: the node agent must know the
process's span slots from its first stall (the plugin announces them).
With ``STALL_APP_GATE`` set it first waits for a line on stdin: the pipeline
test holds it until the agent has the slots, so what it checks (each link,
through the Collector into Jaeger) does not depend on that race.
"""

import os
import sys

from opentelemetry import trace

tracer = trace.get_tracer("app")
if os.environ.get("STALL_APP_GATE"):
    sys.stdin.readline()  # the test says go (tests/agent_process.run_instrumented_app)
with tracer.start_as_current_span("read-big"), open(sys.argv[1], "rb") as f:
    while f.read(1 << 20):
        pass
