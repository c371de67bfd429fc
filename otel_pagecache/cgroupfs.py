"""Find the memory-controller hierarchy and list its cgroups.

Every function takes the cgroupfs root as a parameter so tests can point it at
a fixture tree. A cgroup's id is the inode number of its directory: that is
``kernfs_node->id``, the same id a BPF program reads from
``mem_cgroup.css.cgroup->kn->id``, so the index built here is what the BPF
layer joins on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"

# The files that tell the two hierarchy versions apart at a directory.
_V2_MARKER = "cgroup.controllers"
_V1_MEMORY_MARKER = "memory.usage_in_bytes"


class CgroupSetupError(RuntimeError):
    """The memory controller cannot be used; the message names cause and fix."""


@dataclass(frozen=True)
class MemoryHierarchy:
    """Where the memory controller lives: ``version`` 1 or 2, and its mount directory."""

    version: int
    mountpoint: str

    def directory(self, path: str) -> str:
        """Absolute directory of a cgroup given its hierarchy path (``/`` is the root)."""
        return self.mountpoint if path == "/" else self.mountpoint + path


@dataclass(frozen=True, slots=True)
class CgroupEntry:
    id: int
    path: str
    parent_id: int | None


def _read_small(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(4096)
    except OSError:
        return None


def _v2_has_memory(directory: str) -> bool | None:
    """True/False when ``directory`` is a cgroup2 root, None when it is not one."""
    controllers = _read_small(os.path.join(directory, _V2_MARKER))
    if controllers is None:
        return None
    return "memory" in controllers.split()


def find_memory_hierarchy(cgroup_root: str = DEFAULT_CGROUP_ROOT) -> MemoryHierarchy:
    """Locate the memory controller below ``cgroup_root``.

    Handles the three layouts found in the wild: unified (cgroup2 at the root),
    legacy (one v1 mount per controller, ``memory`` possibly co-mounted as
    ``memory,…``), and hybrid (v1 controllers plus a cgroup2 tree at
    ``unified/``, as systemd sets up). ``cgroup_root`` may also name the memory
    hierarchy itself.
    """
    if not os.path.isdir(cgroup_root):
        raise CgroupSetupError(
            f"cgroup root {cgroup_root!r} does not exist: mount cgroupfs there "
            "(cgroup2: 'mount -t cgroup2 none /sys/fs/cgroup') or pass --cgroup-root"
        )
    root_v2 = _v2_has_memory(cgroup_root)
    if root_v2:
        return MemoryHierarchy(2, cgroup_root)
    if os.path.exists(os.path.join(cgroup_root, _V1_MEMORY_MARKER)):
        return MemoryHierarchy(1, cgroup_root)
    for candidate in _v1_memory_candidates(cgroup_root):
        if os.path.exists(os.path.join(candidate, _V1_MEMORY_MARKER)):
            return MemoryHierarchy(1, candidate)
    unified = os.path.join(cgroup_root, "unified")
    if _v2_has_memory(unified):
        return MemoryHierarchy(2, unified)
    if root_v2 is False:
        raise CgroupSetupError(
            f"cgroup2 is mounted at {cgroup_root} but the memory controller is not enabled "
            "there: boot with 'cgroup_enable=memory' or enable it in the parent's "
            "cgroup.subtree_control"
        )
    raise CgroupSetupError(
        f"no memory controller found under {cgroup_root} (neither cgroup2 with 'memory' in "
        "cgroup.controllers nor a v1 'memory' mount): mount the memory controller or pass "
        "--cgroup-root pointing at it"
    )


def _v1_memory_candidates(cgroup_root: str) -> Iterable[str]:
    # A v1 mount can carry several controllers, named e.g. "cpu,memory";
    # systemd adds a symlink named after each one, but not every init does.
    yield os.path.join(cgroup_root, "memory")
    try:
        names = sorted(os.listdir(cgroup_root))
    except OSError:
        return
    for name in names:
        if name != "memory" and "memory" in name.split(","):
            yield os.path.join(cgroup_root, name)


def walk(hierarchy: MemoryHierarchy, max_cgroups: int = 100_000) -> list[CgroupEntry]:
    """Every cgroup of the hierarchy, parents before children.

    Cgroups appear and vanish while we walk; a directory that disappears is
    simply not listed. ``max_cgroups`` bounds the work on a runaway host.
    """
    root = hierarchy.mountpoint
    try:
        root_id = os.stat(root).st_ino
    except OSError:
        return []
    entries = [CgroupEntry(root_id, "/", None)]
    stack: list[tuple[str, str, int]] = [(root, "", root_id)]
    while stack and len(entries) < max_cgroups:
        directory, rel, parent_id = stack.pop()
        try:
            with os.scandir(directory) as it:
                children = [e for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        children.sort(key=lambda e: e.name, reverse=True)
        for child in children:
            child_rel = f"{rel}/{child.name}"
            # On kernfs the directory entry's inode is the cgroup id, so no stat().
            entries.append(CgroupEntry(child.inode(), child_rel, parent_id))
            stack.append((child.path, child_rel, child.inode()))
    entries.sort(key=lambda e: (e.path.count("/") if e.path != "/" else 0, e.path))
    return entries[:max_cgroups]


class CgroupIndex:
    """Both directions between cgroup id and path, rebuilt from each walk."""

    def __init__(self) -> None:
        self._by_id: dict[int, str] = {}
        self._by_path: dict[str, int] = {}

    def update(self, entries: Iterable[CgroupEntry]) -> None:
        by_id = {e.id: e.path for e in entries}
        self._by_id = by_id
        self._by_path = {path: cid for cid, path in by_id.items()}

    def path(self, cgroup_id: int) -> str | None:
        return self._by_id.get(cgroup_id)

    def id(self, path: str) -> int | None:
        return self._by_path.get(path)

    def __len__(self) -> int:
        return len(self._by_id)


def own_cgroup_path(hierarchy_version: int, proc_root: str = "/proc", pid: str = "self") -> str:
    """The path of ``pid``'s cgroup in the memory hierarchy (``/`` when unknown)."""
    text = _read_small(os.path.join(proc_root, pid, "cgroup")) or ""
    for line in text.splitlines():
        # v1: "4:memory:/process_api/86f57206afb296fade57dae22a6acfe5"; v2: "0::/user.slice"
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hierarchy_version == 1 and "memory" in controllers.split(","):
            return path or "/"
        if hierarchy_version == 2 and hid == "0" and controllers == "":
            return path or "/"
    return "/"
