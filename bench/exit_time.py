"""Time from SIGTERM to the end of ``otel-pagecache run`` (issue 15, part 4).

The requirement: the whole process ends within
``OTEL_PAGECACHE_SHUTDOWN_TIMEOUT`` + 1 s of SIGTERM, whatever the receiver
does, on both engines. Each case starts the real agent (OTLP/gRPC metrics and
stall spans, an export every 500 ms), brings the receiver into its state,
waits until an export is in flight, sends SIGTERM and times the wait for the
process's exit:

- ``refused``: nothing ever listens on the endpoint;
- ``blackhole``: a port that accepts connections and never answers;
- ``hang``: a real receiver that takes exports, then stops answering them
  mid-run (the connection stays up, every call waits for its deadline);
- ``gone``: a real receiver that takes exports, then goes away mid-run.

Prints one line per run (the exit code, the time, the agent's own flush
figure) and per case the largest time against the bound; exits 1 if one run
misses it or exits non-zero.

Run (root): ``.venv/bin/python bench/exit_time.py [--engines core bcc]
[--cases ...] [--runs 3] [--timeout 3]``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_pagecache.cgroupfs import find_memory_hierarchy, own_cgroup_path  # noqa: E402
from tests.agent_process import AgentProcess, wait_for_log  # noqa: E402
from tests.peers import Blackhole, free_port  # noqa: E402
from tests.peers.otlp_receiver import OtlpReceiver  # noqa: E402

CASES = ("refused", "blackhole", "hang", "gone")


class Peer:
    """The receiver side of one case: ``endpoint``, ``make_bad()`` (called once
    the agent exports), ``close()``."""

    def __init__(self, case: str) -> None:
        self.case = case
        self._hole: Blackhole | None = None
        self._receiver: OtlpReceiver | None = None
        self._release = threading.Event()
        self._hanging = False
        self.exports = 0
        if case == "refused":
            self.endpoint = f"http://127.0.0.1:{free_port()}"
        elif case == "blackhole":
            self._hole = Blackhole()
            self.endpoint = f"http://127.0.0.1:{self._hole.port}"
        else:
            self._receiver = OtlpReceiver(on_request=self._on_request).start()
            self.endpoint = self._receiver.grpc_endpoint

    def _on_request(self, _received) -> None:
        self.exports += 1
        if self._hanging:
            self._release.wait(60)  # answered only when the case ends

    def ready(self) -> bool:
        """The state the stop should find has been reached."""
        if self._hole is not None:
            return self._hole.reached()
        return self.case == "refused" or self.exports > 0

    def make_bad(self) -> None:
        if self.case == "hang":
            self._hanging = True
        elif self.case == "gone" and self._receiver is not None:
            self._receiver.stop()

    def close(self) -> None:
        self._release.set()
        if self._hole is not None:
            self._hole.close()
        if self._receiver is not None:
            self._receiver.stop()


def log_times(log: str, sent_wall: float) -> dict[str, float]:
    """Seconds from the signal to the agent's log lines: ``seen`` (it received
    the signal), ``stopped`` (its last line); ``flush`` is its own figure."""
    out: dict[str, float] = {}
    for line in log.splitlines():
        stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", line)
        if not stamp:
            continue
        wall = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S"))
        at = wall + int(stamp.group(2)) / 1000 - sent_wall
        if "received SIGTERM" in line:
            out["seen"] = at
        elif re.search(r"INFO otel_pagecache(\.agent)?: stopped", line):
            out["stopped"] = at
        flush = re.search(r"flush took ([0-9.]+) s", line)
        if flush:
            out["flush"] = float(flush.group(1))
        if "did not finish within its bound" in line:
            out["guard"] = at
    return out


def run_once(engine: str, case: str, timeout_s: float, include: str, logs: Path) -> tuple:
    """(exit code, seconds from SIGTERM to exit, the times of ``log_times``, the log's path)."""
    peer = Peer(case)
    env = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": peer.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_PAGECACHE_SHUTDOWN_TIMEOUT": str(timeout_s),
    }
    agent = AgentProcess(["run", "--engine", engine, "--include", include], env, logs)
    try:
        agent.start()
        wait_for_log(agent, "exporters:", timeout=120)
        wait_until(peer.ready, agent.running, 30)
        peer.make_bad()
        # An export is in flight when the stop comes: the loop's next cycle
        # starts within one interval and then waits on the bad receiver.
        time.sleep(1.5)
        started, sent_wall = time.monotonic(), time.time()
        agent.proc.send_signal(signal.SIGTERM)
        code = agent.proc.wait(120)
        elapsed = time.monotonic() - started
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(10)
        peer.close()
    return code, elapsed, log_times(agent.log(), sent_wall), agent.log_path


def wait_until(condition: Callable[[], bool], alive: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if not alive() or time.monotonic() > deadline:
            raise SystemExit("the agent stopped, or never reached the receiver's state")
        time.sleep(0.05)


def _shown(at: dict[str, float], key: str, width: int) -> str:
    return f"{at[key]:>{width}.2f}" if key in at else f"{'-':>{width}}"


def run_case(engine: str, case: str, args: argparse.Namespace, include: str, logs: Path) -> bool:
    """``args.runs`` runs of one case, a line each and one for the case; True if all met."""
    bound = args.timeout + 1
    times, codes, met = [], [], True
    for run in range(1, args.runs + 1):
        code, elapsed, at, log = run_once(engine, case, args.timeout, include, logs)
        times.append(elapsed)
        codes.append(code)
        good = code == 0 and elapsed <= bound
        met &= good
        print(
            f"{engine:6} {case:9} {run:>3} {code:>4} {elapsed:>15.2f} {_shown(at, 'seen', 6)} "
            f"{_shown(at, 'flush', 7)} {_shown(at, 'stopped', 9)}"
            + ("  (exit guard)" if "guard" in at else "")
            + ("" if good else f"  FAIL, log: {log}"),
            flush=True,
        )
    print(
        f"{'ok  ' if met else 'FAIL'} {engine} {case}: largest {max(times):.2f} s "
        f"(bound {bound:g} s), exit codes {sorted(set(codes))}",
        flush=True,
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=["core", "bcc"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="OTEL_PAGECACHE_SHUTDOWN_TIMEOUT, seconds"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (memory cgroups, BPF)", file=sys.stderr)
        return 2
    hierarchy = find_memory_hierarchy("/sys/fs/cgroup")
    include = own_cgroup_path(hierarchy.version).rstrip("/") + f"/exit-{uuid.uuid4().hex[:8]}"
    directory = Path(hierarchy.directory(include))
    directory.mkdir()
    bound = args.timeout + 1
    ok = True
    print(f"machine load {os.getloadavg()[0]:.1f}; bound {bound:g} s (timeout + 1 s)")
    print(
        f"{'engine':6} {'case':9} {'run':>3} {'exit':>4} {'SIGTERM->exit s':>15} "
        f"{'seen s':>6} {'flush s':>7} {'stopped s':>9}  (seconds after the signal; "
        "flush: the agent's own figure; stopped: its last line)"
    )
    try:
        logs = Path(tempfile.mkdtemp(prefix="exit-time-"))  # kept: a failed run names its log
        for engine in args.engines:
            for case in args.cases:
                ok &= run_case(engine, case, args, include, logs)
    finally:
        directory.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
