"""Real podman (Debian's podman 4.3 with runc) with a private store, for one test.

Every call carries ``--root``/``--runroot``/``--tmpdir`` of the test's own, so
nothing depends on (or changes) the host's containers/storage; vfs is the
storage driver because it works on any backing filesystem (overlay on overlay
does not), which also puts containers.json at ``<root>/vfs-containers/``.
crun refuses the hybrid cgroup layout of these machines, hence runc; the
ulimits are needed for runc to start the container here.
"""

from __future__ import annotations

from pathlib import Path

from tests.peers.runtimes import RuntimeCli, require

PODMAN = "/usr/bin/podman"
RUNC = "/usr/sbin/runc"


class Podman(RuntimeCli):
    # -t 0: no grace period for the stop signal (sleep ignores SIGTERM as PID 1).
    rm_flags = ("-f", "-t", "0")

    def __init__(self, workdir: Path, cgroup_parent: str, storage_driver: str = "vfs") -> None:
        """``storage_driver="overlay"`` (on a disk filesystem, not overlay):
        every container of an image shares the lower layers' inodes
        (tests/test_sharing_image_layer.py)."""
        require(PODMAN, "podman")
        require(RUNC, "runc")
        super().__init__(workdir)
        self.root = workdir / "root"  # the graphroot: what the agent reads
        self.runroot = self.short_dir / "run"
        self.cgroup_parent = cgroup_parent
        self.run_flags = (
            "--cgroup-parent",
            cgroup_parent,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
        )
        self.base = [
            PODMAN,
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--tmpdir",
            str(workdir / "tmp"),
            "--storage-driver",
            storage_driver,
            "--runtime",
            RUNC,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]

    def argv(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def import_image(self, tarball: Path, reference: str) -> str:
        """The image id (64 hex, as podman prints it) of ``tarball`` imported as ``reference``."""
        out = self.cli("import", "--quiet", str(tarball), reference)
        return out.splitlines()[-1].removeprefix("sha256:")
