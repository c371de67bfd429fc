"""One fixed snapshot with every kind of series the agent exports.

Shared by the output-equivalence tests (OTLP and Prometheus) and by the
script that captured the SDK-based output they compare against
(``tests/fixtures/collection_sdk_*``): change it and both fixtures must be
captured again, which the SDK path no longer exists to do.
"""

from __future__ import annotations

from otel_pagecache.activity import (
    DYING,
    UNATTRIBUTED,
    ActivityCounters,
    ActivitySnapshot,
    FileUsage,
)
from otel_pagecache.containers import Identity
from otel_pagecache.residency import MemcgSample, Snapshot

CID = "7be92808767a667f35c8505cbf40d14e931ef6db5b0210329cf193b15ba9d605"
POD_CID = "f45298cd514d1930c4fe3afc4412e59547f7e3148fddd22ca33cefce046eb830"
POD_UID = "dd1bf9d1-241d-47f5-8e25-12de83135812"


def _sample(memcg_id, path, identity, stat, **kw) -> MemcgSample:
    fields = dict(usage=None, limit=None, working_set=None, major_faults=None, limit_hits=None)
    fields.update(kw)
    return MemcgSample(
        id=memcg_id,
        path=path,
        identity=identity,
        stat=stat,
        pressure_us=fields.pop("pressure_us", {}),
        **fields,
    )


def fixed_snapshot(scale: int = 1) -> Snapshot:
    """Root, a slice, a docker container, a k8s pod container; ``scale`` steps
    every value so a second collection tells cumulative from gauge."""
    s = scale
    root = _sample(
        1, "/", Identity(kind="system"), {"active_file": 5000 * s, "inactive_file": 4000}
    )
    slice_ = _sample(
        20,
        "/system.slice",
        Identity(kind="system"),
        {"active_file": 4096, "inactive_file": 4096 * s, "shmem": 8192},
        usage=1 << 20,
        working_set=(1 << 20) - 4096,
        major_faults=7 * s,
    )
    docker = _sample(
        300,
        f"/system.slice/docker-{CID}.scope",
        Identity(kind="container", container_id=CID, runtime="docker"),
        {
            "active_file": 4096 * s,
            "inactive_file": 4096,
            "dirty": 4096,
            "writeback": 0,
            "mapped": 12288,
            "refault_file": 3 * s,
            "activate_file": 1 * s,
        },
        usage=65536 * s,
        limit=1 << 30,
        working_set=65536 - 4096,
        major_faults=2 * s,
        limit_hits=5 * s,
        pressure_us={"some": 1_500_000 * s, "full": 250_000 * s},
    )
    pod = _sample(
        4000,
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
        f"{POD_UID.replace('-', '_')}.slice/cri-containerd-{POD_CID}.scope",
        Identity(
            kind="container",
            container_id=POD_CID,
            runtime="containerd",
            pod_uid=POD_UID,
            qos_class="besteffort",
            namespace="default",
            pod_name="web-0",
            container_name="nginx",
        ),
        {"active_file": 1 << 20, "inactive_file": 2 << 20, "refault_file": 0},
        usage=8 << 20,
        limit=64 << 20,
        working_set=6 << 20,
        major_faults=0,
        limit_hits=0,
    )
    memcgs = [root, slice_, docker, pod]
    activity = ActivitySnapshot(
        engine="core",
        has_lookups=True,
        memcgs={
            300: ActivityCounters(
                lookups=100 * s,
                misses=10 * s,
                insertions=12 * s,
                dirtied=3 * s,
                evictions=4 * s,
                invalidations=1 * s,
                hit_ratio=0.9,
            ),
            4000: ActivityCounters(lookups=5 * s, misses=5 * s, insertions=5 * s),
            20: ActivityCounters(),
        },
        buckets={
            DYING: ActivityCounters(insertions=2 * s, evictions=9 * s),
            UNATTRIBUTED: ActivityCounters(lookups=1 * s, misses=1 * s, hit_ratio=0.0),
        },
        files={
            300: [
                FileUsage(8, 1, 1234, 8192 * s, "/var/lib/app/data.db"),
                FileUsage(8, 1, 99, 4096),
            ],
            4000: [FileUsage(0, 45, 7, 1 << 20)],
        },
        lost={"lookups": 2 * s, "removals": 0},
        map_entries={"memcg_counts": (4, 1024), "file_pages": (3, 0)},
        forgotten_memcgs=1 * s,
    )
    for sample in memcgs:
        sample.activity = activity.memcgs.get(sample.id)
    return Snapshot(
        taken_at=1_700_000_000.0,
        hierarchy_version=2,
        memcgs=memcgs,
        meminfo={
            "Cached": 100 * 1024,
            "Active(file)": 60 * 1024 * s,
            "Inactive(file)": 40 * 1024,
            "Dirty": 4096,
            "Writeback": 0,
            "Shmem": 8192,
        },
        cgroups_discovered=6,
        read_errors=1,
        vanished=2 * s,
        duration_s=0.0125,
        activity=activity,
    )
