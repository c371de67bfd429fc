"""Real network peers for the test suite: an OTLP receiver, rotel-agent and Prometheus.

Everything here listens on loopback only and uses ephemeral ports, so several test
runs (or several engineers) can share one machine without colliding.

Small helpers shared by the peer modules live here so each peer module stays
focused on the process/server it manages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "free_port",
    "port_accepts",
    "stop_process",
    "tail",
    "wait_for_port",
]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago on ``host``.

    Only used for child processes that cannot report the port they bound (rotel,
    Prometheus); in-process servers bind port 0 directly, which has no race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if a TCP connection to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll until ``host:port`` accepts connections.

    Raises RuntimeError if ``proc`` exits first (so a crashed child fails fast
    instead of burning the whole timeout) and TimeoutError on timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode}")
        if port_accepts(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:.1f}s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Stop one child by its own PID: SIGTERM, then SIGKILL after ``timeout``.

    Never signals by name or process group: other engineers' processes share the
    machine.
    """
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait(timeout=timeout)


def tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file, for error messages ('' if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
