"""The node agent's own cost on a host where nothing uses the plugin (issue 12).

Two figures, each for this tree and, with ``--baseline TREE``, for another
checkout of the project (a ``git worktree`` of an earlier commit, its BPF
object built in place), in alternating runs so both see the same machine:

- **idle CPU**: the agent (``otel-pagecache run``, default settings, CO-RE,
  exporting over OTLP/gRPC to a loopback receiver) left alone for
  ``--seconds`` after a warm-up; its utime+stime over that window as a
  percentage of one core. Median of ``--runs`` runs.
- **stall programs, ns per event**: then, with ``kernel.bpf_stats_enabled``,
  a reader in a memcg limited to 32 MiB reads a 96 MiB cold file (memcg
  reclaim stalls all through); ``run_time_ns / run_cnt`` of the agent's
  memcg-reclaim begin and end programs over that read. Median of the runs.

Run (root): ``.venv/bin/python bench/idle_cost.py [--baseline /tmp/base]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_pagecache.cgroupfs import find_memory_hierarchy, own_cgroup_path  # noqa: E402
from tests.agent_process import AgentProcess, agent_env, limit_memcg, wait_for_log  # noqa: E402
from tests.conftest import make_cold_file  # noqa: E402
from tests.peers.otlp_receiver import OtlpReceiver  # noqa: E402

MIB = 1 << 20
STALL_PROGRAMS = ("on_memcg_reclaim_begin", "on_memcg_reclaim_end")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        # 4242 (python3) S ... fields 14 and 15 (utime, stime) in clock ticks
        after_comm = f.read().rsplit(")", 1)[1].split()
    return (int(after_comm[11]) + int(after_comm[12])) / TICKS


def stall_program_stats() -> dict[str, tuple[int, int]]:
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True)
    stats: dict[str, tuple[int, int]] = {}
    for prog in json.loads(out.stdout or "[]"):
        name = prog.get("name", "")
        # bpftool shows at most 15 characters of a program's name
        for full in STALL_PROGRAMS:
            if full.startswith(name) and name:
                run_ns, runs = stats.get(full, (0, 0))
                stats[full] = (run_ns + prog.get("run_time_ns", 0), runs + prog.get("run_cnt", 0))
    return stats


def reclaim_read(memcg_dir: Path, cold: Path) -> None:
    """Read ``cold`` from a process inside ``memcg_dir`` (limited to 32 MiB)."""
    procs = memcg_dir / "cgroup.procs"
    subprocess.run(
        [sys.executable, "-c", f"f=open({str(cold)!r},'rb')\nwhile f.read(1<<20): pass"],
        preexec_fn=lambda: procs.write_text(str(os.getpid())),
        check=True,
    )


def one_run(tree: Path | None, seconds: float, tmp: Path, memcg_dir: Path, cold: Path):
    env = agent_env(RECEIVER.grpc_endpoint, OTEL_METRIC_EXPORT_INTERVAL="60000")
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    with AgentProcess(["run"], env, tmp) as agent:
        wait_for_log(agent, "stall spans:", timeout=60)
        time.sleep(5)  # warm-up: the first collection and the BPF load are not idle
        before = cpu_seconds(agent.proc.pid)
        time.sleep(seconds)
        idle = 100 * (cpu_seconds(agent.proc.pid) - before) / seconds
        make_cold_file(cold, 96 * MIB)
        start = stall_program_stats()
        reclaim_read(memcg_dir, cold)
        end = stall_program_stats()
        assert agent.terminate() == 0, agent.log()
    run_ns = sum(end.get(p, (0, 0))[0] - start.get(p, (0, 0))[0] for p in STALL_PROGRAMS)
    runs = sum(end.get(p, (0, 0))[1] - start.get(p, (0, 0))[1] for p in STALL_PROGRAMS)
    return idle, (run_ns / runs if runs else float("nan")), runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another checkout, run alternately")
    args = parser.parse_args()
    hierarchy = find_memory_hierarchy()
    own = Path(hierarchy.directory(own_cgroup_path(hierarchy.version)))
    memcg_dir = own / f"bench-idle-{uuid.uuid4().hex[:8]}"
    memcg_dir.mkdir()
    limit_memcg(memcg_dir, 32 * MIB)
    subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=True)
    trees = {"this tree": None}
    if args.baseline is not None:
        trees = {f"baseline {args.baseline}": args.baseline, **trees}
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in trees}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.runs):
                for name, tree in trees.items():
                    result = one_run(tree, args.seconds, Path(tmp), memcg_dir, Path(tmp) / "cold")
                    results[name].append(result)
                    print(
                        f"  {name}: idle {result[0]:.3f}% of a core, stall programs "
                        f"{result[1]:.0f} ns/event ({result[2]} events)",
                        flush=True,
                    )
    finally:
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=0"], check=False)
        memcg_dir.rmdir()
    print(f"idle {args.seconds:.0f} s, median of {args.runs} runs:")
    for name, rows in results.items():
        print(
            f"  {name}: idle CPU {statistics.median(r[0] for r in rows):.3f}% of one core, "
            f"stall programs {statistics.median(r[1] for r in rows):.0f} ns/event"
        )
    return 0


RECEIVER = OtlpReceiver()

if __name__ == "__main__":
    with RECEIVER:
        sys.exit(main())
