"""Run ``otel-pagecache`` as a real process for end-to-end tests, stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.pace import scaled


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

    def running(self) -> bool:
        """False once the agent has exited: a wait for it can stop early."""
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM, then wait; returns the exit code (kills and fails on timeout)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        timeout = scaled(timeout)
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


def agent_env(grpc_endpoint: str, **overrides: str) -> dict[str, str]:
    """The agent exporting over plaintext OTLP/gRPC to ``grpc_endpoint`` every 500 ms."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        **overrides,
    }


def stall_agent_env(receiver, **overrides: str) -> dict[str, str]:
    """The agent exporting to ``receiver`` with every stall spanned (threshold 0)."""
    defaults = {
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_PAGECACHE_STALL_THRESHOLD_MS": "0",
        "OTEL_PAGECACHE_STALL_SPANS_PER_SECOND": "1000",
    }
    return agent_env(receiver.grpc_endpoint, **{**defaults, **overrides})


def wait_for_log(agent: AgentProcess, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while text not in agent.log() and time.monotonic() < deadline and agent.running():
        time.sleep(0.1)
    assert text in agent.log(), agent.log()


def limit_memcg(directory: Path, limit: int) -> None:
    """Set a memcg's hard limit, v1 or v2."""
    name = (
        "memory.limit_in_bytes" if (directory / "memory.limit_in_bytes").exists() else "memory.max"
    )
    (directory / name).write_text(str(limit))


def run_instrumented_app(
    app: Path,
    *args: object,
    endpoint: str,
    service: str,
    cgroup: Path | None = None,
    prefix: tuple[str, ...] = (),
    base_env: dict[str, str] | None = None,
    before_span: Callable[[int], None] | None = None,
    **env: str,
) -> None:
    """Run ``app`` under ``opentelemetry-instrument`` (so with the plugin),
    exporting spans and metrics over OTLP/gRPC to ``endpoint``, inside the
    memory cgroup at ``cgroup`` when given; ``env`` overrides the defaults.

    ``before_span(pid)``, when given, is called once the app has started and
    waits on its stdin (``STALL_APP_GATE``, tests/apps/stall_app.py): it
    returns when the test's condition holds, and the app goes on."""
    app_env = {
        **(os.environ if base_env is None else base_env),
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        **env,
    }
    procs = cgroup / "cgroup.procs" if cgroup is not None else None
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    command = [*prefix, str(instrument), sys.executable, str(app), *map(str, args)]
    preexec = (lambda: procs.write_text(str(os.getpid()))) if procs is not None else None
    if before_span is None:
        subprocess.run(command, env=app_env, check=True, timeout=scaled(120), preexec_fn=preexec)
        return
    app_env["STALL_APP_GATE"] = "1"
    with subprocess.Popen(
        command, env=app_env, stdin=subprocess.PIPE, text=True, preexec_fn=preexec
    ) as proc:
        try:
            before_span(proc.pid)
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()
            assert proc.wait(scaled(120)) == 0, f"app exited with {proc.returncode}"
        finally:
            if proc.poll() is None:
                proc.kill()


def stalls_on_span(stalls: list, app_span) -> list:
    """The stall spans of ``app_span``'s thread that lie within it (both are
    tests/peers/otlp_receiver.SpanRecord): the ones its link should name."""
    return [s for s in stalls if during_span(s, app_span)]


def during_span(stall, app_span) -> bool:
    return (
        stall.attributes["thread.id"] == app_span.attributes["thread.id"]
        and app_span.start_time_unix_nano <= stall.start_time_unix_nano
        and stall.end_time_unix_nano <= app_span.end_time_unix_nano
    )
