"""An application run under ``opentelemetry-instrument`` by tests/test_instrumentor.py.

Span "read-cold" reads the cold file given as argv[1] on the main thread;
span "handed-off" starts on the main thread and ends on another one.
"""

import sys
import threading

from opentelemetry import trace

tracer = trace.get_tracer("app")

with tracer.start_as_current_span("read-cold"), open(sys.argv[1], "rb") as f:
    while f.read(1 << 20):
        pass

span = tracer.start_span("handed-off")
worker = threading.Thread(target=span.end)
worker.start()
worker.join()
