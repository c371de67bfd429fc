"""Run a real Prometheus server (Debian package ``prometheus``) scraping given targets.

Each instance gets its own config, TSDB directory and loopback port under a private
directory, so it never touches (or depends on) a system Prometheus on :9090.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.peers import Managed, free_port, stop_process, tail, wait_for_http_ok

__all__ = [
    "PROMETHEUS_PACKAGE",
    "PrometheusError",
    "PrometheusNotInstalled",
    "PrometheusServer",
    "prometheus_binary",
]

PROMETHEUS_PACKAGE = "prometheus"
_DEFAULT_BINARY = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """Prometheus failed to start or a query failed; includes the log tail."""


class PrometheusNotInstalled(PrometheusError):
    """The ``prometheus`` binary is not on this machine."""


def prometheus_binary() -> Path:
    """Locate the binary: ``$PROMETHEUS_BIN``, ``/usr/bin/prometheus``, then ``$PATH``."""
    candidates = (os.environ.get("PROMETHEUS_BIN"), _DEFAULT_BINARY, shutil.which("prometheus"))
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise PrometheusNotInstalled(
        "prometheus binary not found: install the Debian package "
        f"'{PROMETHEUS_PACKAGE}' (DEBIAN_FRONTEND=noninteractive apt-get install -y "
        f"--no-install-recommends {PROMETHEUS_PACKAGE})"
    )


_FAST_RELOAD_FLAG = "--scrape.discovery-reload-interval=100ms"


@functools.cache
def _fast_reload_flags(binary: str) -> tuple[str, ...]:
    """The hidden flag that makes the scrape manager apply new targets within 100ms.

    By default it polls every 5s, on top of the discovery manager's own (fixed) 5s
    throttle, so the first scrape could take ~10s. Probed, because the flag is hidden
    and absent from older releases: kingpin rejects unknown flags before ``--version``.
    """
    probe = subprocess.run(
        [binary, _FAST_RELOAD_FLAG, "--version"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return (_FAST_RELOAD_FLAG,) if probe.returncode == 0 else ()


def _render_config(targets: Sequence[str], scrape_interval: str, job_name: str) -> str:
    # Hand-written YAML (JSON is valid YAML) so no PyYAML dependency is needed.
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {"job_name": job_name, "static_configs": [{"targets": list(targets)}]},
        ],
    }
    return json.dumps(config, indent=2) + "\n"


class PrometheusServer(Managed):
    """A Prometheus subprocess on ``127.0.0.1:<free port>`` scraping ``targets``."""

    def __init__(
        self,
        targets: str | Sequence[str],
        *,
        scrape_interval: str = "1s",
        job_name: str = "peer",
        host: str = "127.0.0.1",
        workdir: Path | str | None = None,
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.scrape_interval = scrape_interval
        self.job_name = job_name
        self.host = host
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._own_workdir: Path | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        assert self.workdir is not None
        return [
            str(prometheus_binary()),
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--web.listen-address={self.host}:{self.port}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            # Debian's defaults point at /etc/prometheus/console*; keep everything
            # inside our directory so a missing/odd system install cannot interfere.
            f"--web.console.templates={self.workdir}",
            f"--web.console.libraries={self.workdir}",
            "--storage.tsdb.retention.time=1h",
            *_fast_reload_flags(str(prometheus_binary())),
            *self.extra_args,
        ]

    # -- lifecycle

    def start(self) -> PrometheusServer:
        if self._proc is not None:
            return self
        prometheus_binary()  # fail early with the package name
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = self._given_workdir
        else:
            self._own_workdir = Path(tempfile.mkdtemp(prefix="prometheus-peer-"))
            self.workdir = self._own_workdir
        (self.workdir / "prometheus.yml").write_text(
            _render_config(self.targets, self.scrape_interval, self.job_name)
        )
        self.log_path = self.workdir / "prometheus.log"

        # Prometheus cannot report an ephemeral port, so pick one and retry with
        # another if it was taken in between.
        last_error = ""
        for _attempt in range(3):
            self.port = free_port(self.host)
            with open(self.log_path, "ab") as log:
                log.write(f"$ {' '.join(self.command())}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                )
            try:
                self._wait_ready()
                return self
            except PrometheusError as exc:
                last_error = str(exc)
                stop_process(self._proc)
                self._proc = None
                if "address already in use" not in self.log_tail(10).lower():
                    break
        message = f"prometheus did not start: {last_error}\n--- log tail ---\n{self.log_tail()}"
        self.stop()  # the tail is in the message; drop our private temp dir, if any
        raise PrometheusError(message)

    def _wait_ready(self) -> None:
        # /-/ready turns 200 only after the TSDB is open and the config is loaded.
        assert self._proc is not None
        try:
            wait_for_http_ok(f"{self.url}/-/ready", self.startup_timeout, self._proc)
        except (RuntimeError, TimeoutError) as exc:
            raise PrometheusError(f"prometheus: {exc}") from exc

    def stop(self) -> None:
        """SIGTERM our own PID (Prometheus shuts down cleanly), SIGKILL after 10s."""
        stop_process(self._proc, timeout=10.0)
        self._proc = None
        if self._own_workdir is not None:
            shutil.rmtree(self._own_workdir, ignore_errors=True)
            self._own_workdir = None

    # -- HTTP API

    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                payload = json.load(resp)
        except urllib.error.HTTPError as exc:
            # Bad PromQL answers 400 with a JSON error body: surface it.
            body = exc.read().decode(errors="replace")
            raise PrometheusError(f"GET {url} -> {exc.code}: {body}") from exc
        if payload.get("status") != "success":
            raise PrometheusError(f"GET {url} -> {payload}")
        return payload["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result`` (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        data = self._api("/api/v1/query", {"query": promql})
        result = data.get("result", [])
        # Scalar/string results are a single [t, v] pair, not a list of series.
        if data.get("resultType") in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return list(result)

    def targets_health(self) -> list[dict[str, Any]]:
        """Active targets with their health and last scrape error (for diagnostics)."""
        data = self._api("/api/v1/targets", {"state": "active"})
        return [
            {
                "scrapeUrl": t.get("scrapeUrl"),
                "health": t.get("health"),
                "lastError": t.get("lastError"),
            }
            for t in data.get("activeTargets", [])
        ]

    def wait_for_series(self, promql: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll ``query(promql)`` until it returns at least one series.

        Prometheus 2.x hands targets from service discovery to the scrape manager on
        a fixed 5s throttle, so the first sample lands ~5-6s after start even with a
        1s scrape_interval; later samples follow every scrape_interval.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() >= deadline:
                try:
                    targets = self.targets_health()
                except PrometheusError as exc:
                    targets = [{"error": str(exc)}]
                raise AssertionError(
                    f"no series for {promql!r} after {timeout:.1f}s; targets: {targets}"
                    f"\n--- prometheus log tail ---\n{self.log_tail(15)}"
                )
            time.sleep(0.25)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines) if self.log_path is not None else ""
