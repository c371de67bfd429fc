"""Find the memory-controller hierarchy and list its cgroups.

Every function takes the cgroupfs root as a parameter so tests can point it at
a fixture tree. A cgroup's id is the inode number of its directory: that is
``kernfs_node->id``, the same id a BPF program reads from
``mem_cgroup.css.cgroup->kn->id``, so the index built here is what the BPF
layer joins on.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from .config import Settings

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


def find_memory_hierarchy(cgroup_root: str = Settings.cgroup_root) -> MemoryHierarchy:
    """Locate the memory controller below ``cgroup_root``.

    Handles the three layouts found in the wild: unified (cgroup2 at the root),
    legacy (one v1 mount per controller, ``memory`` possibly co-mounted as
    ``memory,…``), and hybrid (v1 controllers plus a cgroup2 tree at
    ``unified/``, as systemd sets up). ``cgroup_root`` may also name the memory
    hierarchy itself.
    """
    try:
        os.stat(cgroup_root)
    except PermissionError as e:
        raise CgroupSetupError(
            f"cannot access cgroup root {cgroup_root!r} ({e.strerror}): run as root or grant "
            "read access to cgroupfs"
        ) from e
    except OSError:
        pass
    if not os.path.isdir(cgroup_root):
        raise CgroupSetupError(
            f"cgroup root {cgroup_root!r} does not exist: mount cgroupfs there "
            f"(cgroup2: 'mount -t cgroup2 none {Settings.cgroup_root}') or pass --cgroup-root"
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


def _subtree(directory: str, rel: str, parent_id: int, budget: int) -> list[CgroupEntry]:
    """Every cgroup below ``directory`` (not itself), parents before children."""
    out: list[CgroupEntry] = []
    stack: list[tuple[str, str, int]] = [(directory, rel, parent_id)]
    while stack and len(out) < budget:
        directory, rel, parent_id = stack.pop()
        try:
            with os.scandir(directory) as it:
                children = [e for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue  # removed while we walked: that's fine
        children.sort(key=lambda e: e.name, reverse=True)
        for child in children:
            child_rel = f"{rel}/{child.name}"
            # On kernfs the directory entry's inode is the cgroup id, so no stat().
            out.append(CgroupEntry(child.inode(), child_rel, parent_id))
            stack.append((child.path, child_rel, child.inode()))
    out.sort(key=lambda e: (e.path.count("/"), e.path))
    return out[:budget]


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
    entries += _subtree(root, "", root_id, max_cgroups - 1)
    return entries


class CgroupTree:
    """The hierarchy's cgroups, kept between collection cycles.

    Listing every cgroup directory costs more than reading the memory files
    of every cgroup. So a full walk happens every ``full_walk_s`` seconds, and
    in between only directories whose link count changed are listed again: on
    kernfs a directory's ``st_nlink`` is 2 + its number of subdirectories, and
    the reader gets it for free from the directory it opens anyway (its
    mtime, by contrast, does not change when a child is created). A child
    created and another removed under the same parent between two cycles
    leave the count unchanged: the reader then rescans the parent because it
    found the removed child gone (see ``ResidencyReader``).
    """

    def __init__(
        self, hierarchy: MemoryHierarchy, full_walk_s: float = 30.0, max_cgroups: int = 100_000
    ) -> None:
        self.hierarchy = hierarchy
        self.full_walk_s = full_walk_s
        self.max_cgroups = max_cgroups
        self._entries: dict[int, CgroupEntry] = {}
        self._nlink: dict[int, int] = {}
        self._last_full = float("-inf")
        self.full_walks = 0
        self.rescans = 0

    def entries(self, now: float) -> list[CgroupEntry]:
        """Current entries, parents before children; walks fully when due."""
        if now - self._last_full >= self.full_walk_s or not self._entries:
            self._entries = {e.id: e for e in walk(self.hierarchy, self.max_cgroups)}
            self._nlink = {}
            self._last_full = now
            self.full_walks += 1
        return list(self._entries.values())

    def current(self) -> list[CgroupEntry]:
        """The entries as they stand, without walking."""
        return list(self._entries.values())

    def link_count_changed(self, entry: CgroupEntry, nlink: int) -> bool:
        """Record ``nlink`` for ``entry``; True if it differs from the last one seen."""
        previous = self._nlink.get(entry.id)
        self._nlink[entry.id] = nlink
        return previous is not None and previous != nlink

    def rescan(self, entry: CgroupEntry) -> list[CgroupEntry]:
        """List ``entry``'s directory again; returns the cgroups new below it."""
        self.rescans += 1
        directory = self.hierarchy.directory(entry.path)
        rel = "" if entry.path == "/" else entry.path
        try:
            with os.scandir(directory) as it:
                present = {e.inode(): e for e in it if e.is_dir(follow_symlinks=False)}
        except OSError:
            self.forget(entry.id)
            return []
        known = {cid for cid, e in self._entries.items() if e.parent_id == entry.id}
        self.forget(*(known - present.keys()))
        new: list[CgroupEntry] = []
        budget = self.max_cgroups - len(self._entries)
        for cid in sorted(present.keys() - known, key=lambda c: present[c].name):
            if budget - len(new) <= 0:
                break
            child = present[cid]
            child_rel = f"{rel}/{child.name}"
            new.append(CgroupEntry(cid, child_rel, entry.id))
            new += _subtree(child.path, child_rel, cid, budget - len(new))
        for e in new:
            self._entries[e.id] = e
        return new

    def forget(self, *cgroup_ids: int) -> None:
        """Drop vanished cgroups and everything below them, in one pass over the
        entries (one pass per cgroup was quadratic under churn)."""
        if not cgroup_ids:
            return
        doomed = set(cgroup_ids)
        for cid, e in self._entries.items():  # parents come first, so one pass suffices
            if e.parent_id in doomed:
                doomed.add(cid)
        for cid in doomed:
            self._entries.pop(cid, None)
            self._nlink.pop(cid, None)


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

    def ids(self) -> Collection[int]:
        """Every known id; a live view, cheap to test membership on."""
        return self._by_id.keys()

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
        if path and not path.startswith("/"):
            continue  # not a cgroup path: garbage, never from the kernel
        if hierarchy_version == 1 and "memory" in controllers.split(","):
            return path or "/"
        if hierarchy_version == 2 and hid == "0" and controllers == "":
            return path or "/"
    return "/"
