"""Snapshots on fixture trees: own numbers, v2 subtraction, selection, races."""

from __future__ import annotations

import shutil

from otel_pagecache.cgroupfs import MemoryHierarchy
from otel_pagecache.residency import ResidencyReader, Selection, SnapshotSource
from tests.cgroup_trees import write_v1_cgroup, write_v2_cgroup

CID = "7be92808767a667f35c8505cbf40d14e931ef6db5b0210329cf193b15ba9d605"
POD = "kubepods-burstable-pod1c0a2f7e_3f1d_4b8e_9a55_2f0d8f0c7a11.slice"


def _by_path(snapshot):
    return {m.path: m for m in snapshot.memcgs}


def _v2_tree(tmp_path):
    # Hierarchical figures as the kernel would report them: each parent
    # includes its children.
    write_v2_cgroup(tmp_path, "/", {"file": 1000, "active_file": 600, "inactive_file": 400})
    write_v2_cgroup(
        tmp_path,
        "/kubepods.slice",
        {"file": 700, "active_file": 400, "inactive_file": 300, "workingset_refault_file": 9},
        current=5000,
        maximum=1 << 30,
    )
    write_v2_cgroup(
        tmp_path,
        f"/kubepods.slice/{POD}/cri-containerd-{CID}.scope",
        {
            "file": 500,
            "active_file": 300,
            "inactive_file": 200,
            "workingset_refault_file": 4,
            "pgmajfault": 11,
        },
        current=3000,
        maximum=4096 * 1000,
        events_max=2,
        pressure_total=(2_000_000, 500_000),
    )
    # The pod slice between them: hierarchical again.
    write_v2_cgroup(
        tmp_path,
        f"/kubepods.slice/{POD}",
        {"file": 650, "active_file": 380, "inactive_file": 270, "workingset_refault_file": 4},
        current=3100,
    )
    return MemoryHierarchy(2, str(tmp_path))


def test_v2_own_numbers_subtract_live_children(tmp_path):
    snapshot = ResidencyReader(_v2_tree(tmp_path), proc_root=str(tmp_path)).read()
    m = _by_path(snapshot)
    container = m[f"/kubepods.slice/{POD}/cri-containerd-{CID}.scope"]
    pod = m[f"/kubepods.slice/{POD}"]
    assert container.stat["active_file"] == 300 and container.stat["inactive_file"] == 200
    assert pod.stat["file"] == 150 and pod.stat["active_file"] == 80
    assert m["/kubepods.slice"].stat["file"] == 50
    assert m["/"].stat["file"] == 300
    # Own numbers never double count: they add up to the root's hierarchical figure.
    assert sum(s.stat["file"] for s in snapshot.memcgs) == 1000
    assert sum(s.file_lru_bytes for s in snapshot.memcgs) == 1000
    # Counters too; and clamped at zero when a child grew between reads.
    assert pod.stat["refault_file"] == 0
    assert m["/kubepods.slice"].stat["refault_file"] == 5


def test_v2_memcg_as_a_whole(tmp_path):
    snapshot = ResidencyReader(_v2_tree(tmp_path), proc_root=str(tmp_path)).read()
    c = _by_path(snapshot)[f"/kubepods.slice/{POD}/cri-containerd-{CID}.scope"]
    assert c.usage == 3000 and c.limit == 4096 * 1000 and c.limit_hits == 2
    assert c.working_set == 3000 - 200
    assert c.major_faults == 11
    assert c.pressure_us == {"some": 2_000_000, "full": 500_000}
    assert c.identity.kind == "container" and c.identity.container_id == CID
    assert c.identity.pod_uid == "1c0a2f7e-3f1d-4b8e-9a55-2f0d8f0c7a11"
    root = _by_path(snapshot)["/"]
    assert root.usage is None and root.limit is None


def test_v2_clamps_when_children_exceed_parent(tmp_path):
    write_v2_cgroup(tmp_path, "/", {"file": 10, "active_file": 10})
    write_v2_cgroup(tmp_path, "/a", {"file": 50, "active_file": 50})
    snapshot = ResidencyReader(MemoryHierarchy(2, str(tmp_path)), str(tmp_path)).read()
    assert _by_path(snapshot)["/"].stat["file"] == 0


def test_missing_key_means_no_value_not_zero(tmp_path):
    write_v2_cgroup(tmp_path, "/", {"file": 10}, drop=("workingset_activate_file", "file_dirty"))
    snapshot = ResidencyReader(MemoryHierarchy(2, str(tmp_path)), str(tmp_path)).read()
    stat = _by_path(snapshot)["/"].stat
    assert "activate_file" not in stat and "dirty" not in stat
    assert stat["file"] == 10


def test_v1_uses_local_values(tmp_path):
    docker = f"/docker/{CID}"
    write_v1_cgroup(tmp_path, "/", {"cache": 100, "active_file": 60, "total_cache": 900})
    write_v1_cgroup(
        tmp_path, "/docker", {"cache": 0, "total_cache": 800, "total_inactive_file": 300}
    )
    write_v1_cgroup(
        tmp_path,
        docker,
        {
            "cache": 800,
            "active_file": 500,
            "inactive_file": 300,
            "total_cache": 800,
            "total_inactive_file": 300,
            "total_pgmajfault": 6,
            "pgmajfault": 6,
        },
        usage=4096 * 300,
        limit=1 << 30,
        failcnt=4,
    )
    snapshot = ResidencyReader(MemoryHierarchy(1, str(tmp_path)), str(tmp_path)).read()
    m = _by_path(snapshot)
    assert m["/"].stat["file"] == 100
    assert m["/docker"].stat["file"] == 0
    c = m[docker]
    assert (c.stat["active_file"], c.stat["inactive_file"]) == (500, 300)
    assert c.working_set == 4096 * 300 - 300
    assert (c.major_faults, c.limit_hits, c.limit) == (6, 4, 1 << 30)
    assert "tree_inactive_file" not in c.stat
    assert c.identity.runtime == "docker" and c.identity.container_id == CID


def test_selection_include_exclude_containers_only_and_cap(tmp_path):
    write_v1_cgroup(tmp_path, "/", {"cache": 5}, usage=10_000)
    write_v1_cgroup(tmp_path, "/system.slice/sshd.service", {"cache": 50}, usage=500)
    # The cap ranks by usage, not by page cache: these two orders differ.
    for i, (cache, usage) in enumerate(((10, 1000), (30, 100), (20, 2000))):
        write_v1_cgroup(tmp_path, f"/docker/{str(i) * 64}", {"cache": cache}, usage=usage)
    h = MemoryHierarchy(1, str(tmp_path))
    only = ResidencyReader(h, str(tmp_path), Selection(containers_only=True)).read()
    assert sorted(m.path for m in only.memcgs) == [f"/docker/{str(i) * 64}" for i in range(3)]
    capped = ResidencyReader(h, str(tmp_path), Selection(max_cgroups=2)).read()
    assert [(m.path, m.usage) for m in capped.memcgs] == [
        ("/", 10_000),
        (f"/docker/{'2' * 64}", 2000),
    ]
    assert capped.cgroups_discovered == 7
    inc = ResidencyReader(
        h, str(tmp_path), Selection(include=("/docker/*",), exclude=("*/1111*",))
    ).read()
    assert sorted(m.path for m in inc.memcgs) == [f"/docker/{'0' * 64}", f"/docker/{'2' * 64}"]


def test_cgroup_removed_between_listing_and_reading(tmp_path, monkeypatch):
    write_v1_cgroup(tmp_path, "/", {"cache": 5})
    write_v1_cgroup(tmp_path, "/gone", {"cache": 5})
    h = MemoryHierarchy(1, str(tmp_path))
    reader = ResidencyReader(h, str(tmp_path))
    real_entries = reader.tree.entries

    def list_then_delete(now):
        entries = real_entries(now)
        shutil.rmtree(tmp_path / "gone")
        return entries

    monkeypatch.setattr(reader.tree, "entries", list_then_delete)
    snapshot = reader.read()
    assert [m.path for m in snapshot.memcgs] == ["/"]
    assert snapshot.vanished >= 1 and snapshot.read_errors == 0


def test_garbage_files_never_raise(tmp_path):
    write_v2_cgroup(tmp_path, "/", {"file": 5})
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "memory.stat").write_bytes(b"\x00\xff garbage\nfile notanumber\nfile_dirty -3\n")
    (bad / "memory.current").write_bytes(b"\xff\xfe")
    (bad / "memory.max").write_text("maxx\n")
    (bad / "memory.events").write_text("max\n")
    (bad / "memory.pressure").write_text("some total=abc\n")
    snapshot = ResidencyReader(MemoryHierarchy(2, str(tmp_path)), str(tmp_path)).read()
    b = _by_path(snapshot)["/bad"]
    assert b.stat == {} and b.usage is None and b.limit is None and b.limit_hits is None


def test_snapshot_source_reads_once_per_collection():
    calls = []

    def read():
        calls.append(1)
        return object()

    source = SnapshotSource(read, max_age_s=60)
    first = source.current()
    assert source.current() is first and len(calls) == 1
    source = SnapshotSource(read, max_age_s=0)
    source.current()
    source.current()
    assert len(calls) == 3


def test_new_cgroups_found_between_full_walks_and_removed_ones_dropped(tmp_path):
    write_v1_cgroup(tmp_path, "/", {"cache": 1})
    write_v1_cgroup(tmp_path, "/a", {"cache": 2})
    reader = ResidencyReader(MemoryHierarchy(1, str(tmp_path)), str(tmp_path), full_walk_s=3600)
    assert sorted(m.path for m in reader.read().memcgs) == ["/", "/a"]
    # A new child (and grandchild) changes the parent's link count: found in
    # the very next cycle although no full walk is due.
    write_v1_cgroup(tmp_path, "/a/b", {"cache": 3})
    write_v1_cgroup(tmp_path, "/a/b/c", {"cache": 4})
    write_v1_cgroup(tmp_path, "/d", {"cache": 5})
    snapshot = reader.read()
    assert sorted(m.path for m in snapshot.memcgs) == ["/", "/a", "/a/b", "/a/b/c", "/d"]
    assert reader.tree.full_walks == 1 and reader.tree.rescans == 2
    b = {m.path: m for m in snapshot.memcgs}["/a/b"]
    assert b.stat["file"] == 3 and reader.index.path(b.id) == "/a/b"
    shutil.rmtree(tmp_path / "a" / "b")
    assert sorted(m.path for m in reader.read().memcgs) == ["/", "/a", "/d"]
    assert reader.index.id("/a/b/c") is None
    # Same count, different child (churn): the vanished child makes its
    # parent listed again, so the new one is found in the same cycle too.
    shutil.rmtree(tmp_path / "d")
    write_v1_cgroup(tmp_path, "/e", {"cache": 6})
    assert sorted(m.path for m in reader.read().memcgs) == ["/", "/a", "/e"]
    assert reader.tree.full_walks == 1


def test_v2_own_counters_never_go_down(tmp_path):
    write_v2_cgroup(tmp_path, "/", {"file": 1})
    write_v2_cgroup(tmp_path, "/p", {"workingset_refault_file": 50})
    write_v2_cgroup(tmp_path, "/p/c", {"workingset_refault_file": 0})
    reader = ResidencyReader(MemoryHierarchy(2, str(tmp_path)), str(tmp_path))
    assert {m.path: m for m in reader.read().memcgs}["/p"].stat["refault_file"] == 50
    # The child counted 30 between the parent's read and its own.
    write_v2_cgroup(tmp_path, "/p/c", {"workingset_refault_file": 30})
    assert {m.path: m for m in reader.read().memcgs}["/p"].stat["refault_file"] == 50


def test_pause_sandbox_is_never_a_container_even_without_runtime_metadata(tmp_path):
    sandbox_id, app_id = "a" * 64, "b" * 64
    pod = "/kubepods/besteffort/pod1c0a2f7e-3f1d-4b8e-9a55-2f0d8f0c7a11"
    write_v1_cgroup(tmp_path, "/", {"cache": 1})
    for cid, pid in ((sandbox_id, "101"), (app_id, "202")):
        d = write_v1_cgroup(tmp_path, f"/docker/{'c' * 64}{pod}/{cid}", {"cache": 1})
        (d / "cgroup.procs").write_text(f"{pid}\n")
    proc = tmp_path / "proc"
    for pid, comm in (("101", "pause"), ("202", "nginx")):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "comm").write_text(comm + "\n")
    (proc / "meminfo").write_text("Cached: 1 kB\n")
    snapshot = ResidencyReader(MemoryHierarchy(1, str(tmp_path)), str(proc)).read()
    kinds = {m.identity.container_id: m.identity.kind for m in snapshot.memcgs}
    assert kinds.get(app_id) == "container"
    assert sandbox_id not in kinds
    sandbox = [m for m in snapshot.memcgs if m.path.endswith(sandbox_id)][0]
    assert sandbox.identity.kind == "sandbox" and sandbox.identity.container_id is None
