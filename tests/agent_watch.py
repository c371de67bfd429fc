"""Watching a running agent from outside: its RSS, its BPF objects, the
figures it exported. Shared by the fault tests, the soak test and bench/soak.py."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from tests.peers.otlp_receiver import Point

# Lines that must never appear in the agent's log in normal operation.
ERROR_MARKERS = ("Traceback", "ERROR", "Exception", "CRITICAL")


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(m in line for m in ERROR_MARKERS)]


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def bpf_objects_of(pid: int) -> dict[str, set[int]]:
    """Ids of the BPF programs, maps and links ``pid`` holds file descriptors to
    (from /proc/<pid>/fdinfo: prog_id, map_id, link_id)."""
    held: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    fd_dir = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return held
    for fd in fds:
        try:
            text = Path(fd_dir, fd).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            kind = {"prog_id": "prog", "map_id": "map", "link_id": "link"}.get(key.strip())
            if kind and value.strip().isdigit():
                held[kind].add(int(value))
    return held


def live_bpf_ids() -> dict[str, set[int]]:
    """Every BPF program, map and link id the kernel has now."""
    out = {}
    for kind in ("prog", "map", "link"):
        listed = subprocess.run(
            ["bpftool", "-j", kind, "show"], capture_output=True, text=True, check=True
        ).stdout
        out[kind] = {entry["id"] for entry in json.loads(listed or "[]")}
    return out


def own_points(points: Iterable[Point], metric: str) -> list[Point]:
    """The agent's own points of ``metric`` (on its base Resource), oldest first."""
    found = [p for p in points if p.metric == metric and "pagecache.cgroup.id" not in p.resource]
    return sorted(found, key=lambda p: p.time_unix_nano)


def latest_total(points: Iterable[Point], metric: str, **attributes: object) -> int | float:
    """Sum over the series of ``metric`` matching ``attributes``, at its latest time."""
    matching = [
        p
        for p in own_points(points, metric)
        if all(p.attributes.get(k) == v for k, v in attributes.items())
    ]
    if not matching:
        return 0
    newest = matching[-1].time_unix_nano
    return sum(p.value for p in matching if p.time_unix_nano == newest)


def cgroup_paths(points: Iterable[Point]) -> set[str]:
    """Paths of the memcgs the points describe (their Resource)."""
    return {
        str(p.resource["pagecache.cgroup.path"])
        for p in points
        if "pagecache.cgroup.path" in p.resource
    }
