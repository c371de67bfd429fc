"""Finding the memory controller and listing cgroups: fixture trees and this kernel."""

from __future__ import annotations

import os

import pytest

from otel_pagecache.cgroupfs import (
    CgroupIndex,
    CgroupSetupError,
    MemoryHierarchy,
    find_memory_hierarchy,
    own_cgroup_path,
    walk,
)
from tests.cgroup_trees import make_hybrid_root, write_v1_cgroup, write_v2_cgroup


def test_unified_v2_root(tmp_path):
    write_v2_cgroup(tmp_path, "/", {})
    assert find_memory_hierarchy(str(tmp_path)) == MemoryHierarchy(2, str(tmp_path))


def test_v2_without_memory_controller_says_how_to_fix(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu io pids\n")
    with pytest.raises(CgroupSetupError, match="memory controller is not enabled"):
        find_memory_hierarchy(str(tmp_path))


def test_hybrid_layout_finds_v1_memory(tmp_path):
    root, memory = make_hybrid_root(tmp_path)
    write_v1_cgroup(memory, "/", {})
    assert find_memory_hierarchy(str(root)) == MemoryHierarchy(1, str(memory))


def test_v1_comounted_memory_controller(tmp_path):
    root = tmp_path / "cg"
    write_v1_cgroup(root / "cpuset,memory", "/", {})
    assert find_memory_hierarchy(str(root)) == MemoryHierarchy(1, str(root / "cpuset,memory"))


def test_hybrid_with_memory_on_unified(tmp_path):
    root = tmp_path / "cg"
    (root / "cpu").mkdir(parents=True)
    write_v2_cgroup(root / "unified", "/", {})
    assert find_memory_hierarchy(str(root)) == MemoryHierarchy(2, str(root / "unified"))


def test_missing_root_and_no_controller(tmp_path):
    with pytest.raises(CgroupSetupError, match="does not exist"):
        find_memory_hierarchy(str(tmp_path / "nope"))
    with pytest.raises(CgroupSetupError, match="no memory controller"):
        find_memory_hierarchy(str(tmp_path))


def test_walk_ids_are_directory_inodes_both_ways(tmp_path):
    write_v2_cgroup(tmp_path, "/", {})
    write_v2_cgroup(tmp_path, "/a", {})
    write_v2_cgroup(tmp_path, "/a/b", {})
    write_v2_cgroup(tmp_path, "/c", {})
    entries = walk(MemoryHierarchy(2, str(tmp_path)))
    assert [e.path for e in entries] == ["/", "/a", "/c", "/a/b"]
    by_path = {e.path: e for e in entries}
    assert by_path["/a/b"].id == os.stat(tmp_path / "a" / "b").st_ino
    assert by_path["/a/b"].parent_id == by_path["/a"].id
    assert by_path["/"].parent_id is None
    index = CgroupIndex()
    index.update(entries)
    assert index.path(by_path["/c"].id) == "/c"
    assert index.id("/a/b") == by_path["/a/b"].id
    assert index.path(123456789) is None and len(index) == 4


def test_walk_of_vanished_root_is_empty(tmp_path):
    assert walk(MemoryHierarchy(2, str(tmp_path / "gone"))) == []


def test_own_cgroup_path_from_proc(tmp_path):
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(
        "9:name=systemd:/\n4:memory:/process_api/86f57206afb296fade57dae22a6acfe5\n0::/\n"
    )
    assert (
        own_cgroup_path(1, str(tmp_path / "proc"))
        == "/process_api/86f57206afb296fade57dae22a6acfe5"
    )
    assert own_cgroup_path(2, str(tmp_path / "proc")) == "/"
    (proc / "cgroup").write_text("0::/user.slice/user-0.slice/session-3.scope\n")
    assert own_cgroup_path(2, str(tmp_path / "proc")) == "/user.slice/user-0.slice/session-3.scope"


def test_real_kernel_ids_match_stat(real_hierarchy):
    """On this kernel: walked ids are the cgroup directories' inode numbers."""
    entries = walk(real_hierarchy)
    assert entries and entries[0].path == "/"
    own = own_cgroup_path(real_hierarchy.version)
    match = [e for e in entries if e.path == own]
    assert match, f"own cgroup {own} not listed"
    assert match[0].id == os.stat(real_hierarchy.directory(own)).st_ino
