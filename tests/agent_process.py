"""Run ``otel-pagecache`` as a real process for end-to-end tests, stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class AgentProcess:
    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.args = args
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"agent-{len(list(log_dir.glob('agent-*')))}.log"
        self.proc: subprocess.Popen | None = None
        self.preexec_fn = None  # e.g. drop privileges before exec

    def start(self) -> AgentProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_pagecache.cli", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec_fn,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM, then wait; returns the exit code (kills and fails on timeout)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"agent ignored SIGTERM for {timeout}s:\n{self.log()}") from None
        finally:
            self._log.close()

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
