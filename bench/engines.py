"""CO-RE vs BCC, side by side in one run.

1. Start-up to first export and peak RSS: a real ``otel-pagecache run
   --engine X`` exporting OTLP/gRPC every 500 ms to a loopback receiver; time
   from spawn to the first metrics request, VmHWM/VmRSS three seconds later.
2. Per-event cost of each engine's programs (kernel.bpf_stats_enabled=1,
   run_time_ns / run_cnt), both loaded at once under the same workload
   (bench/bpf_cost.py's), so each event runs both.
3. The cached-pread slowdown (bench/pread_loop.c): no programs, CO-RE, BCC,
   alternating rounds, medians.

Run as root: ``.venv/bin/python bench/engines.py``. Needs gcc, and BCC
(python3-bpfcc, any kernel headers) for the BCC half.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bpf_cost  # noqa: E402 - bench/ is on sys.path when run as a script

from otel_pagecache.probes.bcc import BccProbe  # noqa: E402
from otel_pagecache.probes.core import CoreProbe  # noqa: E402
from tests.peers.otlp_receiver import OtlpReceiver  # noqa: E402


def startup(engine: str) -> tuple[float, int, int]:
    receiver = OtlpReceiver().start()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_pagecache.cli", "run", "--engine", engine],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not receiver.metrics_requests():
            if time.monotonic() - started > 60 or proc.poll() is not None:
                raise RuntimeError(f"{engine}: no export")
            time.sleep(0.01)
        first = time.monotonic() - started
        time.sleep(3)
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        )
        return first, int(status["VmHWM"].split()[0]), int(status["VmRSS"].split()[0])
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
        receiver.stop()


def per_event() -> None:
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    original = stats.read_text().strip()
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        tmp_path = Path(tmp)
        _, loop = bpf_cost.build(tmp_path)
        core, bcc = CoreProbe(stalls=False).start(), BccProbe(stalls=False).start()
        try:
            stats.write_text("1")
            before = _all_stats()
            bpf_cost.workload(tmp_path, loop)
            after = _all_stats()
        finally:
            stats.write_text(original)
            core.close()
            bcc.close()
    print("per-event cost, both engines attached (ns per event)")
    print(f"{'program':<28} {'events':>9} {'core ns':>8} {'bcc ns':>8}")
    for ours, theirs in bpf_cost.BCC_NAMES.items():
        row = []
        for name in (ours, theirs):
            (t1, c1), (t0, c0) = after.get(name, (0, 0)), before.get(name, (0, 0))
            row.append(((t1 - t0) / (c1 - c0), c1 - c0) if c1 > c0 else (float("nan"), 0))
        print(f"{ours:<28} {row[0][1]:>9} {row[0][0]:>8.1f} {row[1][0]:>8.1f}")


def _all_stats() -> dict[str, tuple[int, int]]:
    import json

    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True).stdout
    return {
        p.get("name", ""): (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in json.loads(out)
    }


def pread(rounds: int = 5) -> None:
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        tmp_path = Path(tmp)
        _, loop = bpf_cost.build(tmp_path)
        medians = bpf_cost.pread_medians(
            loop,
            tmp_path,
            {
                "none": None,
                "core": lambda: CoreProbe(stalls=False).start(),
                "bcc": lambda: BccProbe().start(),
            },
            rounds,
        )
    bpf_cost.print_pread(medians, rounds)


def main() -> int:
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    print(f"{'engine':<7} {'first export s':>15} {'peak RSS MiB':>13} {'RSS MiB':>8}")
    figures = {}
    for engine in ("core", "bcc"):
        first, hwm, rss = startup(engine)
        figures[engine] = (first, hwm)
        print(f"{engine:<7} {first:>15.2f} {hwm / 1024:>13.1f} {rss / 1024:>8.1f}")
    print(
        f"bcc / core: start-up x{figures['bcc'][0] / figures['core'][0]:.1f}, "
        f"peak RSS x{figures['bcc'][1] / figures['core'][1]:.1f}"
    )
    per_event()
    pread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
