"""Build cgroupfs fixture trees (v1, v2, hybrid) in a temporary directory.

The memory controller is on cgroup v1 on our machines, so cgroup v2 is tested
on these trees only. Files start from real kernel files (see
fixtures/README.md): same keys in the same order, with the figures a test sets.
"""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
V2_STAT_TEMPLATE = (FIXTURES / "cgroupv2" / "memory.stat").read_text()
V1_STAT_TEMPLATE = (FIXTURES / "cgroupv1" / "memory.stat").read_text()
PRESSURE_TEMPLATE = (FIXTURES / "cgroupv2" / "memory.pressure").read_text()
V1_UNLIMITED = "9223372036854771712"


def stat_text(template: str, values: dict[str, int], drop: tuple[str, ...] = ()) -> str:
    """The template with ``values`` substituted by key; ``drop`` removes keys."""
    out = []
    for line in template.splitlines():
        key = line.partition(" ")[0]
        if key in drop:
            continue
        out.append(f"{key} {values.get(key, 0)}")
    return "\n".join(out) + "\n"


def _cgroup_dir(root: Path, path: str) -> Path:
    d = root if path == "/" else root / path.lstrip("/")
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_v2_cgroup(
    root: Path,
    path: str,
    stat: dict[str, int],
    current: int | None = None,
    maximum: int | str = "max",
    events_max: int = 0,
    pressure_total: tuple[int, int] | None = (0, 0),
    drop: tuple[str, ...] = (),
) -> Path:
    d = _cgroup_dir(root, path)
    (d / "memory.stat").write_text(stat_text(V2_STAT_TEMPLATE, stat, drop))
    if path != "/":  # the v2 root has no memory.current / memory.max
        (d / "memory.current").write_text(f"{current if current is not None else 0}\n")
        (d / "memory.max").write_text(f"{maximum}\n")
        events = f"low 0\nhigh 0\nmax {events_max}\noom 0\noom_kill 0\noom_group_kill 0\n"
        (d / "memory.events").write_text(events)
        (d / "memory.events.local").write_text(events)
    if pressure_total is not None:
        some, full = pressure_total
        (d / "memory.pressure").write_text(
            PRESSURE_TEMPLATE.replace("total=0", f"total={some}", 1).replace(
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=0",
                f"full avg10=0.00 avg60=0.00 avg300=0.00 total={full}",
            )
        )
    (d / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    return d


def write_v1_cgroup(
    root: Path,
    path: str,
    stat: dict[str, int],
    usage: int = 0,
    limit: int | str = V1_UNLIMITED,
    failcnt: int = 0,
) -> Path:
    d = _cgroup_dir(root, path)
    (d / "memory.stat").write_text(stat_text(V1_STAT_TEMPLATE, stat))
    (d / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (d / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (d / "memory.failcnt").write_text(f"{failcnt}\n")
    return d


def make_hybrid_root(tmp: Path) -> tuple[Path, Path]:
    """A systemd hybrid layout: v1 controllers plus cgroup2 (no memory) at unified/.

    Returns (cgroup root, v1 memory mount)."""
    root = tmp / "sys-fs-cgroup"
    for controller in ("cpu,cpuacct", "pids", "memory"):
        (root / controller).mkdir(parents=True)
    os.symlink("cpu,cpuacct", root / "cpu")
    unified = root / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("\n")
    return root, root / "memory"
