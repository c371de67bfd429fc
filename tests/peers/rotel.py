"""Run the ``rotel-agent`` collector binary (shipped in the ``rotel`` wheel) as a peer.

Topology in tests: SDK exporter -> rotel OTLP receiver (gRPC or HTTP) -> rotel OTLP
exporter -> our :class:`~tests.peers.otlp_receiver.OtlpReceiver`.

The binary is started in the foreground (no ``--daemon``) so we own its PID and can
stop exactly that process; its stdout/stderr go to a log file whose tail is put in
every error message.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.peers import Managed, free_port, stop_process, tail, wait_for_port

__all__ = ["RotelAgent", "RotelError", "rotel_binary"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RotelError(RuntimeError):
    """rotel-agent failed to start; the message includes its log tail."""


def rotel_binary() -> Path:
    """Path of the ``rotel-agent`` executable inside the installed ``rotel`` package."""
    path = Path(str(importlib.resources.files("rotel") / "rotel-agent"))
    if not path.is_file():
        raise RotelError(f"rotel-agent binary not found at {path}; pip install 'rotel==0.0.1a15'")
    if not os.access(path, os.X_OK):
        # Some installers drop the exec bit from package data.
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class RotelAgent(Managed):
    """A rotel-agent subprocess with OTLP receivers on loopback ephemeral ports.

    ``exporter_endpoint`` is where rotel forwards everything, e.g.
    ``OtlpReceiver.grpc_endpoint`` (``http://127.0.0.1:PORT``) with the default
    ``protocol="grpc"``, or ``OtlpReceiver.http_endpoint`` with ``protocol="http"``.
    """

    def __init__(
        self,
        exporter_endpoint: str,
        *,
        protocol: str = "grpc",
        host: str = "127.0.0.1",
        batch_timeout: str = "50ms",
        compression: str = "gzip",
        exporter_headers: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        workdir: Path | str | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
        self.exporter_endpoint = exporter_endpoint
        self.protocol = protocol
        self.host = host
        self.batch_timeout = batch_timeout
        self.compression = compression
        self.exporter_headers = dict(exporter_headers or {})
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._own_workdir: Path | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # -- command line

    def command(self) -> list[str]:
        """The exact argv used (useful when a test fails and you want to re-run it)."""
        assert self.workdir is not None
        args = [
            str(rotel_binary()),
            "start",
            "--otlp-grpc-endpoint",
            f"{self.host}:{self.grpc_port}",
            "--otlp-http-endpoint",
            f"{self.host}:{self.http_port}",
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            self.exporter_endpoint,
            "--otlp-exporter-protocol",
            self.protocol,
            "--otlp-exporter-compression",
            self.compression,
            # Default batch timeout is 200ms; shorter keeps tests snappy while still
            # exercising the batcher (unlike --disable-batching).
            "--batch-timeout",
            self.batch_timeout,
            # Defaults are a 5s first retry and a 5s request timeout: if the
            # receiver hiccups, retry quickly instead of outliving the test.
            "--otlp-exporter-retry-initial-backoff",
            "100ms",
            "--otlp-exporter-retry-max-backoff",
            "1s",
            "--otlp-exporter-request-timeout",
            "3s",
            # Unused without --daemon, but defaults are shared /tmp paths: keep them
            # private in case a version writes them anyway.
            "--pid-file",
            str(self.workdir / "rotel-agent.pid"),
            "--log-file",
            str(self.workdir / "rotel-agent.daemon.log"),
        ]
        if self.exporter_headers:
            args += [
                "--otlp-exporter-custom-headers",
                ",".join(f"{k}={v}" for k, v in self.exporter_headers.items()),
            ]
        return args + self.extra_args

    # -- lifecycle

    def start(self) -> RotelAgent:
        if self._proc is not None:
            return self
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = self._given_workdir
        else:
            self._own_workdir = Path(tempfile.mkdtemp(prefix="rotel-agent-"))
            self.workdir = self._own_workdir
        self.log_path = self.workdir / "rotel-agent.log"

        # ROTEL_* variables from the caller's environment would silently override
        # defaults we rely on; start from a clean slate for them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        # rotel's logger colours its output; plain text makes the tails readable.
        env["NO_COLOR"] = "1"

        # rotel cannot report an ephemeral port back, so ports are picked here;
        # retry with new ones if another process grabbed them in between.
        last_error = ""
        for _attempt in range(3):
            self.grpc_port = free_port(self.host)
            self.http_port = free_port(self.host)
            with open(self.log_path, "ab") as log:
                log.write(f"$ {' '.join(self.command())}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=env,
                )
            try:
                wait_for_port(self.host, self.grpc_port, self.startup_timeout, self._proc)
                wait_for_port(self.host, self.http_port, self.startup_timeout, self._proc)
                return self
            except (RuntimeError, TimeoutError) as exc:
                last_error = str(exc)
                stop_process(self._proc)
                self._proc = None
                if "address" not in self.log_tail(10).lower():
                    break  # not a port clash: retrying will not help
        message = f"rotel-agent did not start: {last_error}\n--- log tail ---\n{self.log_tail()}"
        self.stop()  # the tail is in the message; drop our private temp dir, if any
        raise RotelError(message)

    def stop(self) -> None:
        """SIGTERM our own PID, SIGKILL after 5s. rotel flushes its batches on TERM."""
        stop_process(self._proc, timeout=5.0)
        self._proc = None
        if self._own_workdir is not None:
            shutil.rmtree(self._own_workdir, ignore_errors=True)
            self._own_workdir = None

    # -- introspection

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def grpc_endpoint(self) -> str:
        """For the SDK gRPC exporter (``insecure=True``)."""
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL; the SDK HTTP exporter appends ``/v1/metrics``."""
        return f"http://{self.host}:{self.http_port}"

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        return _ANSI.sub("", tail(self.log_path, lines))
