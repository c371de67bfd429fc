"""Cost of naming containers from the runtimes' files, per collection cycle.

Builds a node tree in a temporary directory with N Docker containers (copies
of the real ``config.v2.json`` in tests/fixtures/runtimes/, each with its own
id and name) and N podman containers in one ``containers.json``, then measures
CPU time per collection cycle over the 2N cgroup paths:

- identify only: the path parse alone (cached), the baseline;
- steady: ``Enricher.enrich`` between refreshes, as most cycles are: no file
  is touched;
- refresh: a cycle at the refresh boundary (every 10 s by default): each file
  is opened and fstat'ed, none parsed again (nothing changed);
- cold: a fresh Enricher: every file read and parsed, as on the agent's first
  cycle (or if there were no cache).

Run: ``.venv/bin/python bench/container_metadata.py [N ...]`` (default 100 1000).
Prints a table with ratios to the baseline. Needs no root.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_pagecache.containers import Enricher, identify  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "runtimes"
ROUNDS = 7


def build_node(root: Path, n: int) -> list[str]:
    """The node tree, and the cgroup paths of its 2n containers."""
    docker = json.loads((FIXTURES / "docker-config.v2.json").read_text())
    podman_entry = json.loads((FIXTURES / "podman-containers.json").read_text())[0]
    paths, entries = [], []
    for i in range(n):
        cid = f"{i:064x}"
        docker.update(ID=cid, Name=f"/web-{i}")
        config = root / "docker" / "containers" / cid / "config.v2.json"
        config.parent.mkdir(parents=True)
        config.write_text(json.dumps(docker))
        paths.append(f"/docker/{cid}")
        pid = f"{i + n:064x}"
        entries.append({**podman_entry, "id": pid, "names": [f"job-{i}"]})
        paths.append(f"/libpod_parent/libpod-{pid}")
    storage = root / "storage" / "overlay-containers"
    storage.mkdir(parents=True)
    (storage / "containers.json").write_text(json.dumps(entries))
    return paths


def enricher(root: Path) -> Enricher:
    return Enricher(
        pod_log_root=str(root / "pods"),
        containerd_state_root=str(root / "containerd"),
        crio_state_root=str(root / "run"),
        docker_root=str(root / "docker"),
        storage_root=str(root / "storage"),
    )


def cycle_cpu(run) -> float:
    """Median CPU seconds of ``run()`` over ROUNDS rounds."""
    samples = []
    for _ in range(ROUNDS):
        started = time.thread_time()
        run()
        samples.append(time.thread_time() - started)
    return statistics.median(samples)


def measure(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="opc-bench-") as tmp:
        root = Path(tmp)
        paths = build_node(root, n)
        identities = [identify(p) for p in paths]
        warm = enricher(root)
        now = [0.0]
        warm._clock = lambda: now[0]
        for identity in identities:
            assert warm.enrich(identity).name, "the bench tree must name every container"

        def steady() -> None:
            for identity in identities:
                warm.enrich(identity)

        def refresh() -> None:
            now[0] += 10.0
            steady()

        def cold() -> None:
            fresh = enricher(root)
            for identity in identities:
                fresh.enrich(identity)

        return {
            "identify only": cycle_cpu(lambda: [identify(p) for p in paths]),
            "steady": cycle_cpu(steady),
            "refresh": cycle_cpu(refresh),
            "cold": cycle_cpu(cold),
        }


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [100, 1000]
    print("CPU time per collection cycle (median of 7), ratio to identify-only")
    print(f"{'containers':>10} {'case':<14} {'ms/cycle':>9} {'us/container':>13} {'ratio':>7}")
    for n in sizes:
        figures = measure(n)
        base = figures["identify only"]
        for case, seconds in figures.items():
            print(
                f"{2 * n:>10} {case:<14} {seconds * 1e3:>9.2f} "
                f"{seconds * 1e6 / (2 * n):>13.2f} {seconds / base:>7.1f}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
