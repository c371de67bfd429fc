#!/usr/bin/env python3
"""docs/kernels.md from a kernel-matrix run: kernel × engine × capability.

    scripts/vm/kernels_table.py [RESULTS_DIR] > docs/kernels.md

RESULTS_DIR (default .vmtest-results) holds one directory per kernel, each
the --out of a `scripts/vmtest run ... scripts/vm/kernel-subset` (what
tests/test_kernel_matrix.py runs): junit.xml and vmtest.txt. A capability
is ✔ when its tests passed, ✗ with the test's own skip reason or failure
message otherwise, "not run" when the run has no such test.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

KERNELS = ("5.10", "6.1", "6.12", "7")
ENGINES = ("core", "bcc")
# (capability, engine or None, test id with {engine} filled in)
CAPABILITIES = [
    ("residency per memcg = memory.stat, over OTLP", None,
     "test_end_to_end::test_otlp_grpc_per_container_resources_match_memory_stat"),
    ("doctor's verdict matches the kernel", None,
     "test_doctor::test_root_gets_the_verdict_this_kernel_deserves"),
    ("lookups, misses, hit ratio (read)", ENGINES,
     "test_activity::test_cold_read_then_warm_read[{engine}]"),
    ("a read sleeping between batches counted once", ENGINES,
     "test_activity::"
     "test_a_cold_read_sharing_its_cpu_with_another_reader_is_counted_once[{engine}]"),
    ("a read moved between CPUs counted once, 4 KiB reads", ENGINES,
     "test_activity::test_a_cold_read_migrating_between_cpus_is_counted_once[{engine}-4k-run0]"),
    ("a read moved between CPUs counted once, 256 KiB reads", ENGINES,
     "test_activity::test_a_cold_read_migrating_between_cpus_is_counted_once[{engine}-256k-run0]"),
    ("a read moved between CPUs counted once, 1 MiB reads", ENGINES,
     "test_activity::test_a_cold_read_migrating_between_cpus_is_counted_once[{engine}-1m-run0]"),
    ("lookups through page faults (mmap)", ENGINES,
     "test_activity::test_mmap_read_counts_lookups_through_faults[{engine}]"),
    ("insertions and dirtied (write)", ENGINES,
     "test_activity::test_writes_insert_and_dirty_but_do_not_miss[{engine}]"),
    ("removals charged to the owner", ENGINES,
     "test_activity::test_removals_are_attributed_to_the_owner_not_the_evictor[{engine}]"),
    ("memcg reclaim counted as eviction", ENGINES,
     "test_activity::test_memcg_reclaim_counts_as_eviction[{engine}]"),
    ("top files (inode, opt-in path)", ENGINES,
     "test_activity::test_top_files_name_the_inode_and_the_path_only_when_asked[{engine}]"),
    ("removed memcg's counts to the dying bucket", ENGINES,
     "test_activity::test_removed_cgroup_counts_go_to_the_dying_bucket[{engine}]"),
    ("agent exports activity; programs detach", ENGINES,
     "test_activity_end_to_end::"
     "test_activity_exported_per_container_and_programs_detached_on_sigterm[{engine}]"),
    ("stall spans under memory.max", ENGINES,
     "test_stalls::test_memcg_reclaim_stalls_become_spans_on_the_containers_resource[{engine}]"),
    ("dirty-throttle spans", ("core",),
     "test_stalls::test_dirty_throttling_becomes_planned_spans"),
    ("stall span links to the app span", ("core",),
     "test_correlation::test_stall_span_links_to_the_application_span[core-own-pid-ns]"),
    ("stall span links to the app span", ("bcc",),
     "test_correlation::test_stall_span_links_to_the_application_span[bcc-host-pids]"),
    ("auto falls back to BCC when CO-RE cannot run", ("bcc",),
     "test_doctor::test_auto_falls_back_to_bcc_when_core_cannot_run"),
    ("what-if page samples from reads", ("core",),
     "test_whatif_sampling::test_small_reads_sample_one_page_in_a_stride_at_one_phase[{engine}]"),
    ("what-if page samples of one-page reads", ENGINES,
     "test_activity::test_small_reads_give_whatif_samples_on_both_engines[{engine}]"),
    ("what-if page samples from faults", ("core",),
     "test_whatif_sampling::test_faults_and_fault_around_sample_each_page_once[{engine}]"),
    ("shared hits name the owning memcg", ("core",),
     "test_sharing::test_one_owner_b_reads_what_a_owns[core]"),
    ("shared hits of two owners, extent mode where exact mode serves", ("core",),
     "test_sharing::test_two_owners_each_half_in_extent_mode_where_exact_mode_serves"),
    ("shared hits of a reader of another's 2 MiB", ENGINES,
     "test_activity::"
     "test_a_reader_of_another_memcgs_pages_has_shared_hits_on_both_engines[{engine}]"),
    ("shared hits over OTLP; a removed owner", ("core",),
     "test_sharing_end_to_end::test_removed_owner_shows_as_dying_or_parent"),
]  # fmt: skip


def _outcomes(junit: Path) -> tuple[dict[str, tuple[str, str]], dict]:
    """test id -> ("pass"|"skip"|"fail", reason); and the doctor's JSON report."""
    outcomes, doctor = {}, {}
    for case in ET.parse(junit).iter("testcase"):
        test_id = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        outcome, reason = "pass", ""
        for child in case:
            if child.tag == "skipped":
                outcome, reason = "skip", child.get("message", "")
            elif child.tag in ("failure", "error"):
                outcome, reason = "fail", child.get("message", "")
            elif child.tag == "properties":
                for prop in child:
                    if prop.get("name") == "doctor":
                        try:
                            doctor = json.loads(prop.get("value") or "{}")
                        except ValueError:
                            doctor = {}
        outcomes[test_id] = (outcome, reason)
    return outcomes, doctor


def _cell(outcome: str, reason: str) -> str:
    if outcome == "pass":
        return "✔"
    reason = reason.removeprefix("Skipped: ").splitlines()[0] if reason else outcome
    reason = reason.replace("|", "\\|")
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return f"✗ {'skipped' if outcome == 'skip' else 'FAILS'}: {reason}"


def _no_result(status: str) -> str:
    if status == "124":
        return "the guest run was killed at its timeout (exit 124) before pytest reported"
    return f"the guest run ended with exit {status} and no JUnit XML"


def _info(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def render(results: Path) -> str:
    runs = {}
    for kernel in KERNELS:
        junit = results / kernel / "junit.xml"
        outcomes, doctor = _outcomes(junit) if junit.exists() else ({}, {})
        runs[kernel] = (outcomes, doctor, _info(results / kernel / "vmtest.txt"))
    lines = [
        "# Kernels the agent is tested on",
        "",
        "Generated by `scripts/vm/kernels_table.py` from a run of the VM kernel matrix",
        "(`tests/test_kernel_matrix.py`: the tests marked `kernel`, in a qemu guest of each",
        "kernel booted by `scripts/vmtest`); do not edit by hand. The host suite covers",
        "Linux 6.18 with the memory controller on cgroup v1; every guest below runs cgroup v2.",
        "",
        "| kernel | Debian package | uname -r | cgroup | run on | boot | whole run |",
        "|---|---|---|---|---|---|---|",
    ]
    for kernel, (_, doctor, info) in runs.items():
        checks = {c["name"]: c for c in doctor.get("checks", [])}
        cgroup = checks.get("cgroups.memory", {}).get("detail", "")
        cgroup = "v2" if "cgroup v2" in cgroup else "v1" if "cgroup v1" in cgroup else "?"
        lines.append(
            f"| {kernel} | {info.get('version', 'not run')} | {info.get('release', '')} | "
            f"{cgroup} | {info.get('date', '')} ({info.get('accel', '')}) | "
            f"{info.get('boot_seconds', '?')} s | {info.get('seconds', '?')} s, "
            f"exit {info.get('status', '?')} |"
        )
    lines += [
        "",
        "**Not tested:** Linux 5.11–5.16 and 6.2–6.11 (no Debian suite serves them; the",
        "agent chooses its hooks by what the running kernel's BTF contains, not by version,",
        "but nothing in these ranges has been run).",
        "",
        "| capability | engine | " + " | ".join(f"{k}" for k in KERNELS) + " |",
        "|---|---|" + "---|" * len(KERNELS),
    ]
    for capability, engines, test in CAPABILITIES:
        for engine in engines or (None,):
            test_id = test.format(engine=engine)
            cells = []
            for kernel in KERNELS:
                outcomes, _, info = runs[kernel]
                if test_id in outcomes:
                    cells.append(_cell(*outcomes[test_id]))
                elif not outcomes and info.get("status"):
                    cells.append(f"✗ no result: {_no_result(info['status'])}")
                else:
                    cells.append("not run")
            label = {"core": "CO-RE", "bcc": "BCC", None: "—"}[engine]
            lines.append(f"| {capability} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "The doctor's report in each guest (`otel-pagecache doctor`):", ""]
    for kernel, (_, doctor, _) in runs.items():
        lines.append(f"- **{kernel}**:")
        for check in doctor.get("checks", []):
            if check["name"].startswith(
                ("engine.", "tracepoint.", "auto", "lookups", "whatif", "shared_hits")
            ):
                detail = check["detail"].replace("|", "\\|")
                lines.append(f"  - `{check['name']}` {check['status']}: {detail}")
        if not doctor:
            lines.append("  - no report (the doctor's test did not run)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(Path(sys.argv[1] if len(sys.argv) > 1 else ".vmtest-results")))
