"""Real network peers for the test suite: an OTLP receiver, rotel-agent, Prometheus, and
the Go-built OpenTelemetry Collector and Jaeger.

Everything here listens on loopback only and uses ephemeral ports, so several test
runs (or several engineers) can share one machine without colliding.

Small helpers shared by the peer modules live here so each peer module stays
focused on the process/server it manages.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TypeVar

from tests.pace import scaled

__all__ = [
    "Blackhole",
    "ClosingListener",
    "GoPeer",
    "GoPeerBuildError",
    "free_port",
    "go_peer_binary",
    "port_accepts",
    "stop_process",
    "tail",
    "wait_for_http_ok",
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


def wait_for_http_ok(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Poll ``url`` until it answers 200 (a peer's readiness endpoint).

    Raises RuntimeError if ``proc`` exits first and TimeoutError on timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not 200 within {timeout:.0f}s")


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


_REPO = Path(__file__).resolve().parents[2]
_Peer = TypeVar("_Peer", bound="GoPeer")


class Managed:
    """A peer used as a context manager: start() on entering, stop() on leaving."""

    def __enter__(self: _Managed) -> _Managed:
        return self.start()  # type: ignore[attr-defined]

    def __exit__(self, *exc_info: object) -> None:
        self.stop()  # type: ignore[attr-defined]


_Managed = TypeVar("_Managed", bound=Managed)


class ClosingListener(Managed):
    """A loopback TCP port that takes each connection, reads the first bytes the
    client sends and closes it: every export attempt reaches it and fails at
    once. ``attempts()`` counts them (those whose first bytes hold ``marker``,
    e.g. ``b"POST /v1/metrics"``), ``connected_at()`` says when they came; after
    ``stop()`` the port refuses connections.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._heads: list[bytes] = []
        self._arrivals: list[float] = []  # time.monotonic() of each accept
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ClosingListener:
        server = socket.create_server((self.host, 0))
        server.settimeout(0.1)  # the accept loop sees stop() within 0.1 s
        self._server = server
        self.port = int(server.getsockname()[1])
        self._thread = threading.Thread(
            target=self._serve, name=f"closing-listener-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _serve(self) -> None:
        assert self._server is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            arrived = time.monotonic()
            with conn:
                conn.settimeout(1.0)
                try:
                    head = conn.recv(4096)
                except OSError:
                    head = b""
            with self._lock:
                self._heads.append(head)
                self._arrivals.append(arrived)

    def connected_at(self) -> list[float]:
        with self._lock:
            return list(self._arrivals)

    def attempts(self, marker: bytes = b"") -> int:
        with self._lock:
            return sum(1 for head in self._heads if marker in head)

    def wait_for_attempts(self, count: int, marker: bytes = b"", timeout: float = 20.0) -> int:
        """Poll until ``attempts(marker) >= count``; AssertionError otherwise."""
        deadline = time.monotonic() + scaled(timeout)
        while (seen := self.attempts(marker)) < count:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{seen} of {count} connections ({marker!r}) to {self.endpoint} "
                    f"within {scaled(timeout):.1f}s"
                )
            time.sleep(0.05)
        return seen

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._server is not None:
            self._server.close()
            self._server = None


class Blackhole:
    """Accepts TCP connections and never reads nor answers."""

    def __init__(self) -> None:
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._held.append(conn)

    def reached(self) -> bool:
        """True once an export attempt has connected."""
        return bool(self._held)

    def close(self) -> None:
        self._server.close()
        for conn in self._held:
            conn.close()


class GoPeerBuildError(RuntimeError):
    """scripts/build-peers failed; the message holds its output."""


@functools.cache
def go_peer_binary(name: str) -> Path:
    """The binary of a Go-built peer (``otelcol`` or ``jaeger``), from
    scripts/build-peers: built on the first call on a fresh machine (minutes),
    reused from its cache after that (``scripts/bootstrap --test`` builds them)."""
    proc = subprocess.run(
        [str(_REPO / "scripts" / "build-peers"), name],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        raise GoPeerBuildError(f"scripts/build-peers {name} failed:\n{proc.stderr[-3000:]}")
    built, path = proc.stdout.split()
    assert built == name, proc.stdout
    return Path(path)


class GoPeer(Managed):
    """A Go-built peer subprocess with its config and log in ``workdir``.

    Subclasses write their config in :meth:`_prepare` with ports picked there
    (the binaries cannot report the ports they bound) and return the command and
    a URL that answers 200 once the peer is ready. A port taken in between makes
    :meth:`start` try again with new ones.
    """

    name = "peer"

    def __init__(self, binary: Path, workdir: Path, startup_timeout: float) -> None:
        self.binary = binary
        self.workdir = workdir
        self.startup_timeout = startup_timeout
        self.log_path = workdir / f"{self.name}.log"
        self.env: dict[str, str] | None = None  # None: ours
        self._proc: subprocess.Popen[bytes] | None = None

    def _prepare(self) -> tuple[list[str], str]:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self: _Peer) -> _Peer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        error = ""
        for _attempt in range(3):
            argv, ready_url = self._prepare()
            with open(self.log_path, "ab") as log:
                log.write(f"$ {' '.join(argv)}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                )
            try:
                wait_for_http_ok(ready_url, self.startup_timeout, self._proc)
                return self
            except (RuntimeError, TimeoutError) as exc:
                error = str(exc)
                self.stop()
                if "address already in use" not in self.log_tail(20):
                    break
        raise RuntimeError(f"{self.name} did not start: {error}\n--- log ---\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM our own PID (the collector flushes its queues), SIGKILL after 10s."""
        stop_process(self._proc, timeout=10.0)
        self._proc = None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)
