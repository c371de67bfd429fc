"""A real Docker daemon (Debian's docker.io) with private directories, for one test.

Started as ``dockerd --iptables=false --bridge=none --exec-opt
native.cgroupdriver=cgroupfs --data-root D --exec-root E -H unix://SOCK``: it
touches no host network setting and no other daemon's state, and its containers'
memcgs sit beneath the test's own cgroup (``--cgroup-parent``). Debian's
binaries are used by path: a different docker client may be first on PATH.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.peers.runtimes import RuntimeCli, require

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"


class DockerDaemon(RuntimeCli):
    def __init__(self, workdir: Path, cgroup_parent: str) -> None:
        require(DOCKERD, "docker.io")
        require(DOCKER, "docker.io")
        super().__init__(workdir)
        self.data_root = workdir / "data-root"
        # containerd's sockets live under the exec root.
        self.exec_root = self.short_dir / "exec"
        self.socket = self.short_dir / "docker.sock"
        self.cgroup_parent = cgroup_parent
        self.log_path = workdir / "dockerd.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> DockerDaemon:
        super().start()
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [
                DOCKERD,
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--cgroup-parent",
                self.cgroup_parent,
                "--data-root",
                str(self.data_root),
                "--exec-root",
                str(self.exec_root),
                "--pidfile",
                str(self.workdir / "dockerd.pid"),
                "-H",
                f"unix://{self.socket}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.socket.exists() and self.attempt("info").returncode == 0:
                return self
            time.sleep(0.2)
        output = self.log()
        self.stop()  # no __exit__ runs when __enter__ fails
        raise AssertionError(f"dockerd not ready after {timeout}s:\n{output}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def describe_failure(self) -> str:
        return self.log()

    def argv(self, *args: str) -> list[str]:
        return [DOCKER, "-H", f"unix://{self.socket}", *args]

    def import_image(self, tarball: Path, reference: str) -> str:
        """The image id (``sha256:…``) of ``tarball`` imported as ``reference``."""
        return self.cli("import", str(tarball), reference)

    def stop_daemon(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # dockerd stops the containerd it started itself on SIGTERM.
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self._log.close()
            self.proc = None
