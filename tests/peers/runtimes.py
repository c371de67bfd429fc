"""What the real Docker and Podman peers share: a busybox image, a cgroup parent
beneath the test's own cgroup, and a clean-up that leaves no cgroup or mount behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from tests.peers import Managed

BUSYBOX = Path("/bin/busybox")
# The applets the tests' workloads use, linked as in a busybox image.
APPLETS = ("sh", "dd", "sleep", "cat", "taskset", "true")
CGROUP_MOUNT = Path("/sys/fs/cgroup")


def require(binary: str, package: str) -> str:
    """``binary`` if present; otherwise skip naming the Debian package that
    ``scripts/bootstrap --test`` installs (so CI never skips)."""
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} not found: install the Debian package {package}")
    return binary


def busybox_rootfs(path: Path) -> Path:
    """A tarball of a minimal root filesystem: Debian's static busybox and its applets.

    ``docker import``/``podman import`` turn it into an image without a registry.
    """
    require(str(BUSYBOX), "busybox-static")
    with open(BUSYBOX, "rb") as f:
        head = f.read(4096)
    if b"/lib64/ld-linux" in head or b"/lib/ld-linux" in head:
        pytest.skip("/bin/busybox is dynamically linked: install busybox-static")
    with tarfile.open(path, "w") as tar:
        for directory in ("bin", "proc", "sys", "dev", "tmp", "etc", "data"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return path


def _hierarchies() -> list[Path]:
    # cgroup v2 alone: one hierarchy at the mount point; v1 (or hybrid): one per directory.
    if (CGROUP_MOUNT / "cgroup.procs").exists():
        return [CGROUP_MOUNT]
    return sorted(p for p in CGROUP_MOUNT.iterdir() if (p / "cgroup.procs").exists())


class CgroupParent:
    """A runtime's ``--cgroup-parent`` beneath the test process's own memory cgroup.

    runc creates the same path in every hierarchy (v1 controllers and the v2
    one); in those where this process sits at the root the path is still
    beneath it. ``remove()`` deletes, bottom-up, every directory on that path
    that did not exist before, plus what the runtime left below it.
    """

    def __init__(self, own_memory_path: str, name: str, leaf: str) -> None:
        self.top = f"{own_memory_path.rstrip('/')}/{name}"
        self.path = f"{self.top}/{leaf}"
        parts = [p for p in self.top.split("/") if p]
        prefixes = ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
        self._existed = {
            (h, prefix) for h in _hierarchies() for prefix in prefixes if _dir(h, prefix).exists()
        }
        self._prefixes = prefixes

    def remove(self) -> list[str]:
        """Returns the directories that could not be removed (empty when clean)."""
        left = []
        for hierarchy in _hierarchies():
            top = _dir(hierarchy, self.top)
            if top.exists():
                for root, _dirs, _files in os.walk(top, topdown=False):
                    _rmdir(Path(root), left)
            for prefix in reversed(self._prefixes[:-1]):
                if (hierarchy, prefix) in self._existed:
                    break
                if not _rmdir(_dir(hierarchy, prefix), [], timeout=0):
                    break  # someone else's cgroup lives there now
        return left


def _dir(hierarchy: Path, cgroup_path: str) -> Path:
    return hierarchy / cgroup_path.lstrip("/")


def _rmdir(directory: Path, left: list[str], timeout: float = 10) -> bool:
    # A monitor (podman's conmon) leaves its cgroup a moment after the container.
    deadline = time.monotonic() + timeout
    while True:
        try:
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() >= deadline:
                left.append(str(directory))
                return False
            time.sleep(0.1)


def _wait_for_no_process_naming(text: str, timeout: float) -> None:
    needle = text.encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                busy = needle in (proc / "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            if busy:
                break
        if not busy:
            return
        time.sleep(0.2)


def unmount_below(directory: Path) -> None:
    """Lazily unmount whatever a runtime left mounted under ``directory`` (netns, overlay)."""
    prefix = str(directory.resolve()) + "/"
    targets = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4].replace("\\040", " ")
            if mount_point.startswith(prefix):
                targets.append(mount_point)
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


class RuntimeCli(Managed):
    """A runtime's command line (``docker``/``podman`` share these verbs and flags)."""

    run_flags: tuple[str, ...] = ()
    rm_flags: tuple[str, ...] = ("-f",)

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # Sockets and podman's runroot have short length limits (104 and 50
        # bytes) that pytest's deep tmp_path exceeds: those go here.
        self.short_dir = Path(tempfile.mkdtemp(prefix="opc-", dir="/tmp"))
        self.containers: list[str] = []

    def argv(self, *args: str) -> list[str]:
        raise NotImplementedError

    def describe_failure(self) -> str:
        return ""

    def import_image(self, tarball: Path, reference: str) -> str:
        """The image id of ``tarball`` imported as ``reference``."""
        raise NotImplementedError

    def start(self) -> RuntimeCli:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self

    def stop(self) -> None:
        """Remove the containers, then whatever the runtime left mounted."""
        self.remove_all()
        self.stop_daemon()
        # conmon runs "podman … container cleanup" after the container exits,
        # and that opens the store again: wait until no process names our
        # directories any more, so nothing recreates them after they are gone.
        _wait_for_no_process_naming(str(self.short_dir), timeout=30)
        for directory in (self.workdir, self.short_dir):
            unmount_below(directory)
        shutil.rmtree(self.short_dir, ignore_errors=True)

    def stop_daemon(self) -> None:
        pass

    def attempt(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=120, check=False
        )

    def cli(self, *args: str) -> str:
        done = self.attempt(*args)
        assert done.returncode == 0, (
            f"{' '.join(self.argv(*args))}: {done.stderr}\n{self.describe_failure()}"
        )
        return done.stdout.strip()

    def run(self, image: str, *command: str, name: str, volume: str) -> str:
        """Start a detached container without network; returns its full id."""
        cid = self.cli(
            "run", "-d", "--network", "none", *self.run_flags, "--name", name, "-v", volume,
            image, *command,
        )  # fmt: skip
        self.containers.append(cid)
        return cid

    def exec(self, cid: str, *command: str) -> str:
        return self.cli("exec", cid, *command)

    def remove(self, cid: str) -> None:
        """Remove a container by its id (never by name or "all")."""
        self.cli("rm", *self.rm_flags, cid)
        self.containers.remove(cid)

    def remove_all(self) -> None:
        for cid in list(self.containers):
            self.attempt("rm", *self.rm_flags, cid)
        self.containers.clear()
