"""Shared fixtures: real memory cgroups beneath our own, cold files, test peers."""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_pagecache.cgroupfs import MemoryHierarchy, find_memory_hierarchy, own_cgroup_path
from tests.pace import scaled
from tests.peers.fixtures import *  # noqa: F403 - pytest fixtures for the real peers


def _real_hierarchy() -> MemoryHierarchy | None:
    try:
        return find_memory_hierarchy("/sys/fs/cgroup")
    except Exception:  # noqa: BLE001 - no memory controller: the tests that need one skip
        return None


@pytest.fixture(scope="session")
def real_hierarchy() -> MemoryHierarchy:
    hierarchy = _real_hierarchy()
    if hierarchy is None:
        pytest.skip("no memory controller mounted under /sys/fs/cgroup")
    if os.geteuid() != 0:
        pytest.skip("creating memory cgroups needs root")
    return hierarchy


class MemcgFactory:
    """Creates memory cgroups beneath the test process's own cgroup, and removes them."""

    def __init__(self, hierarchy: MemoryHierarchy) -> None:
        self.hierarchy = hierarchy
        self.parent_path = own_cgroup_path(hierarchy.version)
        self.parent_dir = Path(hierarchy.directory(self.parent_path))
        self.created: list[Path] = []
        self.children: list[subprocess.Popen] = []

    @property
    def children_glob(self) -> str:
        """An --include pattern for every cgroup this factory creates."""
        return f"{self.parent_path.rstrip('/')}/*"

    def create(self, relative: str | None = None) -> tuple[str, Path]:
        """Returns (cgroup path in the hierarchy, directory). ``relative`` may nest."""
        relative = relative or f"otel-pagecache-test-{uuid.uuid4().hex[:8]}"
        directory = self.parent_dir
        for part in relative.strip("/").split("/"):
            if self.hierarchy.version == 2:
                # cgroup v2: a child has the memory controller only if its
                # parent enables it for its children (cgroup.subtree_control).
                _enable_memory_for_children(directory)
            directory = directory / part
            if not directory.exists():
                directory.mkdir()
                self.created.append(directory)
        rel = str(directory.relative_to(self.hierarchy.mountpoint))
        return "/" + rel, directory

    def create_container(self) -> tuple[str, str, Path]:
        """A memcg named as Docker's systemd driver names a container's
        (``docker-<64 hex>.scope``). Returns (container id, cgroup path, directory)."""
        container_id = uuid.uuid4().hex + uuid.uuid4().hex
        path, directory = self.create(f"docker-{container_id}.scope")
        return container_id, path, directory

    def run(self, directory: Path, argv: list[str], timeout: float = 120) -> None:
        """Run ``argv`` inside the cgroup at ``directory`` and wait for it."""
        procs = directory / "cgroup.procs"

        def enter() -> None:
            procs.write_text(str(os.getpid()))

        child = subprocess.Popen(argv, preexec_fn=enter, stdout=subprocess.DEVNULL)
        self.children.append(child)
        assert child.wait(scaled(timeout)) == 0, f"{argv} failed in {directory}"

    def worker(self, directory: Path) -> Worker:
        """A started tests/worker.py, moved into the cgroup at ``directory``."""
        worker = Worker()
        self.children.append(worker.proc)
        worker.warm_up()
        (directory / "cgroup.procs").write_text(str(worker.proc.pid))
        return worker

    def cleanup(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        for directory in reversed(self.created):
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def _enable_memory_for_children(directory: Path) -> None:
    control = directory / "cgroup.subtree_control"
    if "memory" not in control.read_text().split():
        # Refused (EBUSY) in a non-root cgroup that has processes of its own:
        # the tests then fail on the missing memory.* files, naming them.
        with contextlib.suppress(OSError):
            control.write_text("+memory")


class Worker:
    """Drives tests/worker.py: one command at a time, waits for its "ok"."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("worker.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        # The probes' insertion slot is per CPU: a reader that migrates
        # mid-read leaves its pending insertions on the CPU it left (a
        # documented limit, see docs/engines.md "Known limits of the
        # tracepoints"). Pinned, the worker gives the exact figures the tests
        # assert; test_activity.py puts another reader on its CPU on purpose.
        os.sched_setaffinity(self.proc.pid, {min(os.sched_getaffinity(0))})

    def do(self, *command: object, timeout: float = 120) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(" ".join(map(str, command)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.strip() == "ok", f"worker failed on {command}: {line!r}"

    def warm_up(self) -> None:
        # Exercise every code path once while still outside the test cgroup.
        warm = Path(tempfile.mkdtemp()) / "warm"
        self.do("write", warm, 8192)
        for command in ("read", "mmap", "evict"):
            self.do(command, warm)
        warm.unlink()
        warm.parent.rmdir()
        self.do("lock")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.do_exit()

    def do_exit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("exit\n")
        self.proc.stdin.flush()
        self.proc.wait(30)


@pytest.fixture
def memcgs(real_hierarchy: MemoryHierarchy) -> Iterator[MemcgFactory]:
    factory = MemcgFactory(real_hierarchy)
    try:
        yield factory
    finally:
        factory.cleanup()


def make_cold_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes whose pages are not in the page cache.

    Written, fsynced (dirty pages cannot be dropped), then dropped with
    posix_fadvise(DONTNEED) for this file only; never the global drop_caches.
    """
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        remaining = size
        while remaining > 0:
            chunk = block[: min(remaining, len(block))]
            f.write(chunk)
            remaining -= len(chunk)
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return path


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
_MAP_FAILED = ctypes.c_void_p(-1).value


def resident_bytes(path: Path) -> int:
    """How much of ``path`` is in the page cache right now, by mincore(2).

    Mapping the file does not fault its pages in, so this only looks. Page
    cache can vanish on these VMs without memory pressure (the host takes
    memory back), so tests compare exported figures with this at the moment,
    not only with the file size.
    """
    size = path.stat().st_size
    if size == 0:
        return 0
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec) * mmap.PAGESIZE


def cached_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache, with one cached past its end.

    Linux 5.10's generic_file_buffered_read (its no_cached_page path) caches
    a page at the end-of-file index when a read reaches the end of a
    page-aligned file; 6.1's filemap_read does not (the kernel matrix runs
    both). mincore cannot see past the end, so the file is grown by one page (the
    cached page stays: truncate_pagecache only drops pages past the new
    size), looked at, and shrunk back (which drops that page)."""
    size = path.stat().st_size
    if size % mmap.PAGESIZE:
        return resident_bytes(path) // mmap.PAGESIZE
    os.truncate(path, size + mmap.PAGESIZE)
    try:
        return resident_bytes(path) // mmap.PAGESIZE
    finally:
        os.truncate(path, size)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A directory on a disk filesystem (not tmpfs, whose pages are shmem)."""
    d = tmp_path / "data"
    d.mkdir()
    fs_type = subprocess.run(
        ["stat", "-f", "-c", "%T", str(d)], capture_output=True, text=True, check=False
    ).stdout.strip()
    if fs_type == "tmpfs":
        d = Path(__file__).resolve().parent.parent / ".test-data" / uuid.uuid4().hex[:8]
        d.mkdir(parents=True)
    return d


@pytest.fixture
def throttled_fs(tmp_path: Path) -> Iterator[Path]:
    """A small ext4 file system on a loop device we create, whose BDI throttles
    dirtying hard (strict_limit, 1 MiB max_bytes): a fast writer there is put
    to sleep by balance_dirty_pages. Only that loop device's BDI is changed,
    and the device is detached afterwards (its settings go with it)."""
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("needs root and loop devices")
    image = tmp_path / "throttled.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    mount = tmp_path / "mnt"
    mount.mkdir()
    mounted = False
    try:
        subprocess.run(["mount", loop, str(mount)], check=True)
        mounted = True
        st = os.stat(loop)
        bdi = Path(f"/sys/class/bdi/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        if not (bdi / "strict_limit").exists():
            pytest.skip(
                f"{bdi} has no strict_limit/max_bytes (they arrived in Linux 6.2): "
                "this test cannot make one device throttle its writers here"
            )
        (bdi / "strict_limit").write_text("1")
        (bdi / "max_bytes").write_text(str(1 << 20))
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)
