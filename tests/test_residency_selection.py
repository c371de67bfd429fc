"""Selection before reading: globs, containers only and the cap by usage decide
which memcgs have their ``memory.stat`` read; the cap says when it drops some."""

from __future__ import annotations

import logging
import os
import shutil
import sys

import pytest

from otel_pagecache import residency
from otel_pagecache.cgroupfs import MemoryHierarchy
from otel_pagecache.doctor import INFO, OK, cap_check
from otel_pagecache.residency import ResidencyReader
from otel_pagecache.selection import CAP_SETTING, CapWarnings, Selection, largest
from tests.cgroup_trees import write_v1_cgroup, write_v2_cgroup

CIDS = [str(i) * 64 for i in range(4)]
POD = "kubepods-burstable-pod1c0a2f7e_3f1d_4b8e_9a55_2f0d8f0c7a11.slice"


def _v1_tree(tmp_path):
    write_v1_cgroup(tmp_path, "/", {"cache": 5}, usage=100_000)
    write_v1_cgroup(tmp_path, "/system.slice", {"cache": 1}, usage=9000)
    write_v1_cgroup(tmp_path, "/system.slice/sshd.service", {"cache": 50}, usage=500)
    write_v1_cgroup(tmp_path, "/docker", {"cache": 1}, usage=50_000)
    for cid, usage in zip(CIDS, (1000, 100, 2000, 300), strict=True):
        write_v1_cgroup(tmp_path, f"/docker/{cid}", {"cache": usage // 10}, usage=usage)
    return MemoryHierarchy(1, str(tmp_path))


@pytest.fixture
def stat_reads(monkeypatch):
    """The directories whose memory.stat the reader read (read_memcg's calls)."""
    seen: list[str] = []
    real = residency.read_memcg

    def recording(directory, *args, **kwargs):
        seen.append(directory)
        return real(directory, *args, **kwargs)

    monkeypatch.setattr(residency, "read_memcg", recording)
    return seen


@pytest.mark.parametrize(
    ("selection", "exported"),
    [
        (Selection(max_cgroups=3), ["/", "/docker", "/system.slice"]),
        (
            Selection(containers_only=True, max_cgroups=2),
            [f"/docker/{CIDS[0]}", f"/docker/{CIDS[2]}"],
        ),
        (
            Selection(include=("/docker/*",), exclude=(f"*/{CIDS[1]}",)),
            [f"/docker/{CIDS[i]}" for i in (0, 2, 3)],
        ),
        (Selection(include=("/system.slice*",)), ["/system.slice", "/system.slice/sshd.service"]),
    ],
)
def test_memory_stat_is_read_only_for_what_is_exported(tmp_path, stat_reads, selection, exported):
    h = _v1_tree(tmp_path)
    snapshot = ResidencyReader(h, str(tmp_path), selection).read()
    assert [m.path for m in snapshot.memcgs] == exported
    assert sorted(stat_reads) == sorted(h.directory(p) for p in exported)
    assert snapshot.cgroups_discovered == 8


def test_v2_cap_keeps_the_top_of_the_tree_and_still_subtracts_dropped_children(tmp_path):
    write_v2_cgroup(tmp_path, "/", {"file": 1000})
    write_v2_cgroup(tmp_path, "/kubepods.slice", {"file": 700}, current=5000)
    write_v2_cgroup(tmp_path, f"/kubepods.slice/{POD}", {"file": 650}, current=3100)
    container = f"/kubepods.slice/{POD}/cri-containerd-{CIDS[1]}.scope"
    write_v2_cgroup(tmp_path, container, {"file": 500}, current=3000)
    h = MemoryHierarchy(2, str(tmp_path))
    snapshot = ResidencyReader(h, str(tmp_path), Selection(max_cgroups=3)).read()
    by_path = {m.path: m for m in snapshot.memcgs}
    # The root has no memory.current: it ranks first, it holds everything.
    assert sorted(by_path) == ["/", "/kubepods.slice", f"/kubepods.slice/{POD}"]
    # The dropped container's pages are still subtracted from its pod's own.
    assert by_path[f"/kubepods.slice/{POD}"].stat["file"] == 150
    assert by_path["/kubepods.slice"].stat["file"] == 50


def test_largest_keeps_order_and_ranks_unknown_sizes_first():
    sizes = {"a": 5, "b": None, "c": 9, "d": 1, "e": 9}
    assert largest(list(sizes), sizes.get, 3) == ["b", "c", "e"]
    assert largest(list(sizes), sizes.get, 10) == list(sizes)


def test_cap_warns_once_when_it_starts_dropping_and_once_when_it_stops(tmp_path, caplog):
    h = _v1_tree(tmp_path)
    reader = ResidencyReader(h, str(tmp_path), Selection(include=("/docker/*",), max_cgroups=2))
    caplog.set_level(logging.WARNING, logger="otel_pagecache")
    for _ in range(3):
        assert len(reader.read().memcgs) == 2
    starts = [r.getMessage() for r in caplog.records]
    assert len(starts) == 1, starts
    assert "cap of 2" in starts[0] and "drops 2" in starts[0] and CAP_SETTING in starts[0]
    assert reader.cap_warnings.dropped == 2
    caplog.clear()
    shutil.rmtree(tmp_path / "docker" / CIDS[1])
    assert len(reader.read().memcgs) == 2  # 3 left: still one dropped, no new line
    assert caplog.records == []
    shutil.rmtree(tmp_path / "docker" / CIDS[3])
    for _ in range(2):
        assert len(reader.read().memcgs) == 2
    stops = [r.getMessage() for r in caplog.records]
    assert len(stops) == 1, stops
    assert "no longer drops" in stops[0] and "cap of 2" in stops[0] and "dropped 1" in stops[0]
    assert reader.cap_warnings.dropped == 0


def test_doctor_line_says_whether_the_cap_drops_memcgs():
    cap = CapWarnings(100, log=None)
    cap.update(90)
    ok = cap_check(120, cap)
    assert ok.status == OK and "none dropped" in ok.detail
    cap.update(130)
    warn = cap_check(140, cap)
    assert warn.status == INFO  # a chosen bound, not a broken feature: the verdict stands
    assert "140 memcgs" in warn.detail and "drops 30" in warn.detail and "cap 100" in warn.detail
    assert f"{CAP_SETTING}=130" in warn.fix


def test_cap_on_real_memcgs_keeps_the_largest_by_usage(real_hierarchy, memcgs, tmp_path, caplog):
    """Three real memcgs beneath this test's cgroup, one holding 8 MiB of page
    cache: a cap of one keeps that one, and says that it dropped two."""
    group, _ = memcgs.create()
    name = group.rsplit("/", 1)[1]
    created = [memcgs.create(f"{name}/m{i}")[1] for i in range(3)]
    big = created[1]
    data = tmp_path / "charged"
    writer = f"open({str(data)!r}, 'wb').write(b'x' * (8 << 20))"
    memcgs.run(big, [sys.executable, "-c", writer])
    selection = Selection(include=(f"{group}/*",), max_cgroups=1)
    reader = ResidencyReader(real_hierarchy, selection=selection)
    caplog.set_level(logging.WARNING, logger="otel_pagecache")
    snapshot = reader.read()
    rel = "/" + os.path.relpath(big, real_hierarchy.mountpoint)
    assert [m.path for m in snapshot.memcgs] == [rel]
    assert snapshot.memcgs[0].usage >= 4 << 20  # the host may shed some page cache
    [line] = [r.getMessage() for r in caplog.records]
    assert "cap of 1" in line and "drops 2" in line and CAP_SETTING in line
    data.unlink()


def test_under_the_cap_each_directory_is_opened_once(tmp_path, stat_reads, monkeypatch):
    """No size pass when the selection admits no more than the cap: the
    admitted are read in one pass, the others only sized for their link count."""
    h = _v1_tree(tmp_path)
    sized: list[tuple[str, bool]] = []
    real = residency.read_size

    def recording(directory, version, stats=None, usage=True):
        sized.append((directory, usage))
        return real(directory, version, stats, usage)

    monkeypatch.setattr(residency, "read_size", recording)
    selection = Selection(include=("/docker/*",), max_cgroups=4)
    snapshot = ResidencyReader(h, str(tmp_path), selection).read()
    assert len(snapshot.memcgs) == 4
    assert sorted(stat_reads) == sorted(h.directory(f"/docker/{c}") for c in CIDS)
    assert len(sized) == 4 and not any(usage for _, usage in sized)  # the four not admitted
    sized.clear()
    stat_reads.clear()
    selection.max_cgroups = 3  # now above it: a size pass over the admitted first
    snapshot = ResidencyReader(h, str(tmp_path), selection).read()
    assert sum(usage for _, usage in sized) == 4 and len(stat_reads) == 3
