"""The bulk encoder under churn (otlp_bulk.BulkEncoder): what it keeps from
cycle to cycle is bounded by what the last cycles exported, not by every
file or memcg ever seen (issue 15: the soak's RSS must stay flat)."""

from __future__ import annotations

import tracemalloc

from otel_pagecache.activity import FileUsage
from otel_pagecache.otlp_bulk import BulkEncoder
from tests.collection_snapshot import fixed_snapshot


def test_attributes_of_files_gone_from_the_top_files_are_not_kept():
    encoder = BulkEncoder({"service.name": "t"}, "otel_pagecache", "t")
    inode = 1_000_000

    def cycle() -> None:
        nonlocal inode
        snapshot = fixed_snapshot()
        # A hundred new files a cycle, as churning memcgs each writing their own.
        snapshot.activity.files[300] = [FileUsage(8, 1, inode + i, 4096) for i in range(100)]
        inode += 100
        assert encoder.encode(snapshot, 1_700_000_000_000_000_000)

    for _ in range(10):
        cycle()
    tracemalloc.start()
    try:
        for _ in range(10):
            cycle()  # what is kept from here on was allocated while traced
        settled = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            cycle()  # 10,000 more files come and go
        growth = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert growth < 64 * 1024, f"{growth / 1024:.0f} KiB kept for 10,000 files gone"
