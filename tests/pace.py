"""How much slower than native this test run is, for timeouts and settle sleeps.

1 on a host. In a kernel-matrix guest under qemu's TCG (no KVM), Python runs
about 14 times slower and BCC's clang about 11 times: scripts/vm/kernel-subset
sets OTEL_PAGECACHE_TEST_SLOWDOWN there, and the waits the kernel tests make
(agent start-up, exports, a first snapshot) stretch by it. Assertions on
counts never do.
"""

from __future__ import annotations

import os

SLOWDOWN = max(1.0, float(os.environ.get("OTEL_PAGECACHE_TEST_SLOWDOWN", "1") or 1))


def scaled(seconds: float) -> float:
    return seconds * SLOWDOWN
