"""``otel-pagecache doctor``: what works on this host, what does not, and the fix.

Every check reads only; the one that loads the BPF object detaches it at
once. Exit status 0 when the full feature set works, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from dataclasses import asdict, dataclass

from .cgroupfs import CgroupSetupError, find_memory_hierarchy
from .config import Settings
from .probes import effective_capabilities, missing_bpf_capabilities
from .selection import CAP_SETTING, CapWarnings

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"

# Capability bits (include/uapi/linux/capability.h).
CAPABILITIES = {
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}
TRACEPOINTS = (
    "filemap:mm_filemap_add_to_page_cache",
    "filemap:mm_filemap_delete_from_page_cache",
    "filemap:mm_filemap_get_pages",
    "filemap:mm_filemap_fault",
    "filemap:mm_filemap_map_pages",
    "writeback:writeback_dirty_folio",
    "vmscan:mm_vmscan_memcg_reclaim_begin",
    "vmscan:mm_vmscan_memcg_reclaim_end",
    "vmscan:mm_vmscan_direct_reclaim_begin",
    "vmscan:mm_vmscan_direct_reclaim_end",
    "writeback:balance_dirty_pages",
    "task:task_rename",
)
# What each tracepoint feeds, for the "what will work" lines.
FEEDS = {
    "filemap:mm_filemap_add_to_page_cache": "insertions, misses, pagecache.file.usage",
    "filemap:mm_filemap_delete_from_page_cache": "removals (eviction/invalidation)",
    "filemap:mm_filemap_get_pages": "lookups and hit ratio (read)",
    "filemap:mm_filemap_fault": "lookups (page faults)",
    "filemap:mm_filemap_map_pages": "lookups (fault-around)",
    "writeback:writeback_dirty_folio": "dirtied",
    "vmscan:mm_vmscan_memcg_reclaim_begin": "pagecache.stall.memcg_reclaim spans",
    "vmscan:mm_vmscan_memcg_reclaim_end": "pagecache.stall.memcg_reclaim spans",
    "vmscan:mm_vmscan_direct_reclaim_begin": "pagecache.stall.direct_reclaim spans",
    "vmscan:mm_vmscan_direct_reclaim_end": "pagecache.stall.direct_reclaim spans",
    "writeback:balance_dirty_pages": "pagecache.stall.dirty_throttle spans",
    "task:task_rename": "stall spans linked from a process's first stall (plugin announces)",
}


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def lockdown_mode(path: str = "/sys/kernel/security/lockdown") -> str | None:
    """ "none", "integrity", "confidentiality", or None when securityfs is not mounted.

    Sample: ``[none] integrity confidentiality``."""
    text = _read(path)
    if text is None:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def run_checks(settings: Settings) -> list[Check]:
    checks = [Check("kernel", INFO, f"{platform.release()} ({platform.machine()})")]
    checks += _check_btf_lockdown_tracefs()
    checks += _check_capabilities(settings.proc_root)
    checks += _check_cgroups(settings)
    checks += _check_engines(settings)
    bcc = _check_bcc()
    checks.append(bcc)
    core_ok = any(c.name == "engine.core" and c.status == OK for c in checks)
    if core_ok:
        checks.append(Check("auto", OK, "auto picks core (BTF present and the object loads)"))
    elif bcc.status == OK:
        checks.append(Check("auto", OK, "auto picks bcc (the CO-RE engine cannot run here)"))
    else:
        checks.append(
            Check("auto", FAIL, "auto runs residency only: no activity engine can run here")
        )
    return checks


def _check_bcc() -> Check:
    """The BCC engine: importable, headers found, compiles and loads here?"""
    from .probes import ProbeUnavailable
    from .probes.bcc import BccProbe, bcc_available
    from .probes.kheaders import find_headers

    if not bcc_available():
        return Check(
            "engine.bcc",
            INFO,
            "BCC's Python module is not importable in this Python (CO-RE does not need it)",
            "apt-get install python3-bpfcc, and use Debian's /usr/bin/python3",
        )
    headers = find_headers()
    where = (
        f"headers for {headers.version}"
        + ("" if headers.matches else f" (running {platform.release()}: layouts from BTF)")
        if headers
        else "no kernel headers"
    )
    if headers is not None:
        headers.cleanup()
    missing = missing_bpf_capabilities()
    if missing:
        return Check(
            "engine.bcc",
            WARN,
            f"{where}; cannot load without CAP_BPF and CAP_PERFMON",
            "run as root, or grant CAP_BPF and CAP_PERFMON (see the capabilities lines)",
        )
    if headers is None:
        return Check(
            "engine.bcc",
            WARN,
            "no kernel headers for BCC to compile against",
            "apt-get install linux-headers-$(uname -r) (with BTF any version works), "
            "or set BCC_KERNEL_SOURCE",
        )
    try:
        probe = BccProbe().start()
    except ProbeUnavailable as e:
        return Check(
            "engine.bcc",
            WARN,
            f"{where}; {e}",
            "otel-pagecache --log-level debug doctor shows BCC's own output; "
            "the CO-RE engine (engine.core) does not need BCC",
        )
    layout, attribution, hook = probe.layout, probe.attribution, probe.lookup_hook
    whatif, shared_mode = probe.has_whatif, probe.shared_mode
    refused = probe.lookup_hooks_refused
    probe.close()
    detail = f"compiles and loads ({where}); layouts from {layout}, counts by {attribution}"
    if hook == "none":
        # BCC takes lookups from the 6.12 tracepoints, else from kprobes on the
        # read and fault functions; CO-RE also has fentry.
        detail += "; no lookups with BCC on this kernel" + (
            f" (refused: {'; '.join(refused)})" if refused else ""
        )
    elif hook != "tracepoint":
        detail += f"; lookups from {hook}"
    if whatif:
        detail += "; what-if samples"
    if shared_mode != "none":
        detail += f"; shared hits ({shared_mode} mode)"
    return Check("engine.bcc", OK, detail)


def _check_btf_lockdown_tracefs() -> list[Check]:
    out = []
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        out.append(Check("btf", OK, "/sys/kernel/btf/vmlinux present"))
    else:
        out.append(
            Check(
                "btf",
                FAIL,
                "no /sys/kernel/btf/vmlinux: the CO-RE engine cannot run",
                "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels "
                "since 2021 are)",
            )
        )
    mode = lockdown_mode()
    if mode is None:
        out.append(
            Check(
                "lockdown",
                INFO,
                "unknown (securityfs not mounted)",
                "mount -t securityfs securityfs /sys/kernel/security to see it",
            )
        )
    elif mode == "confidentiality":
        out.append(
            Check(
                "lockdown",
                FAIL,
                "confidentiality: BPF programs may not read kernel memory",
                "boot with lockdown=integrity or none",
            )
        )
    else:
        out.append(Check("lockdown", OK, mode))
    out.append(_check_tracefs())
    return out


def tracefs_mounts(proc_root: str = "/proc") -> list[str]:
    """Where tracefs is mounted, from mountinfo.

    Sample: ``45 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw``."""
    found = []
    for line in (_read(os.path.join(proc_root, "self", "mountinfo")) or "").splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[:1] == ["tracefs"]:
            parts = fields[0].split()
            if len(parts) > 4:
                found.append(parts[4])
    return found


def _check_tracefs(proc_root: str = "/proc") -> Check:
    """Mounted and readable, mounted but unreadable (mode 0700 and not root), or absent."""
    mounts = [m for m in tracefs_mounts(proc_root) if m.endswith("tracing")]
    for mount in mounts:
        if os.access(os.path.join(mount, "events"), os.R_OK | os.X_OK):
            return Check("tracefs", OK, f"mounted at {mount}")
    if mounts:
        return Check(
            "tracefs",
            INFO,
            f"mounted at {mounts[0]} but unreadable by this user; "
            "the CO-RE engine's tp_btf programs do not need it",
            "run as root (BCC's tracepoint-only mode and tracepoint lists need it)",
        )
    return Check(
        "tracefs",
        INFO,
        "not mounted; the CO-RE engine's tp_btf programs do not need it",
        "mount -t tracefs tracefs /sys/kernel/tracing (for BCC's tracepoint-only mode, "
        "bpftrace and tracepoint lists)",
    )


def _check_capabilities(proc_root: str) -> list[Check]:
    held = effective_capabilities(proc_root)

    def has(name: str) -> bool:
        return bool(held & (1 << CAPABILITIES[name]))

    missing = missing_bpf_capabilities(proc_root)
    if not missing:
        out = [Check("capabilities.bpf", OK, "CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN) held")]
    else:
        out = []
        for line in missing:
            name = line.split()[2]
            detail, fix = line.split("; fix: ", 1)
            out.append(Check(f"capabilities.{name.lower()}", FAIL, detail, fix))
    for name, why in (
        ("CAP_SYS_PTRACE", "span slots of other containers (stall links), --file-paths"),
        ("CAP_DAC_READ_SEARCH", "pod and container names from /var/log/pods and runtime state"),
    ):
        ok = has(name) or os.geteuid() == 0
        out.append(
            Check(
                f"capabilities.{name.lower()}",
                OK if ok else WARN,
                f"{name} {'held' if ok else 'missing'}: {why}",
                "" if ok else f"grant {name}",
            )
        )
    return out


def cgroup_mounts(mountinfo: str) -> list[str]:
    """``cgroup at /sys/fs/cgroup/memory`` per cgroup(2) mount in ``/proc/<pid>/mountinfo``
    text; malformed lines are skipped."""
    mounts = []
    for line in mountinfo.splitlines():
        # 36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory
        before, sep, after = line.partition(" - ")
        fs_type, mount_fields = after.split()[:1], before.split()
        if sep and fs_type in (["cgroup"], ["cgroup2"]) and len(mount_fields) >= 5:
            mounts.append(f"{fs_type[0]} at {mount_fields[4]}")
    return mounts


def _check_cgroups(settings: Settings) -> list[Check]:
    out = []
    mounts = cgroup_mounts(_read(os.path.join(settings.proc_root, "self", "mountinfo")) or "")
    try:
        hierarchy = find_memory_hierarchy(settings.cgroup_root)
    except CgroupSetupError as e:
        out.append(Check("cgroups.memory", FAIL, str(e), "see the message"))
        return out
    out.append(
        Check(
            "cgroups.memory",
            OK,
            f"memory controller on cgroup v{hierarchy.version} at {hierarchy.mountpoint}"
            + (f"; mounts: {', '.join(mounts)}" if mounts else ""),
        )
    )
    if hierarchy.version == 1:
        out.append(
            Check(
                "cgroups.psi",
                INFO,
                "cgroup v1: no per-memcg memory pressure (pagecache.memcg.pressure.stall_time)",
            )
        )
    from .agent import build_residency_reader

    reader = build_residency_reader(settings, hierarchy)
    reader.cap_warnings = CapWarnings(settings.max_cgroups, log=None)  # reported below
    snapshot = reader.read()
    runtimes = Counter(
        m.identity.runtime for m in snapshot.memcgs if m.identity.kind == "container"
    )
    seen = ", ".join(f"{r or 'unknown'}: {n}" for r, n in sorted(runtimes.items(), key=str))
    out.append(
        Check(
            "containers",
            INFO,
            f"{snapshot.cgroups_discovered} memcgs; containers by runtime: {seen or 'none'}",
        )
    )
    out.append(cap_check(snapshot.cgroups_discovered, reader.cap_warnings))
    return out


def cap_check(discovered: int, cap: CapWarnings) -> Check:
    """Whether ``OTEL_PAGECACHE_MAX_CGROUPS`` drops memcgs on this host, and how many."""
    counts = f"{discovered} memcgs on this host, {cap.admitted} selected (--include, --exclude, "
    counts += f"--containers-only), cap {cap.cap} ({CAP_SETTING})"
    if not cap.dropped:
        return Check("cgroups.cap", OK, f"{counts}: none dropped")
    # Info, not a failure: the cap is a bound the operator chose, and every
    # feature still works; the line and its fix say what it costs.
    return Check(
        "cgroups.cap",
        INFO,
        f"{counts}: the cap drops {cap.dropped}, the smallest by memory usage",
        f"set {CAP_SETTING}={cap.admitted} (or more) to export them all, or narrow the "
        "selection with --include/--exclude/--containers-only",
    )


def _check_engines(settings: Settings) -> list[Check]:
    from .probes import ProbeUnavailable
    from .probes.core import LOOKUP_PROGRAMS, PROGRAMS, CoreProbe

    out = []
    try:
        probe = CoreProbe(lookups=True, stalls=True).start()
    except ProbeUnavailable as e:
        fix = (
            "run as root, or grant CAP_BPF and CAP_PERFMON (see the capabilities lines)"
            if missing_bpf_capabilities()
            else "otel-pagecache --log-level debug doctor shows libbpf's log"
        )
        out.append(Check("engine.core", FAIL, str(e), fix))
        return out
    except Exception as e:  # noqa: BLE001 - a doctor reports, it does not crash
        out.append(Check("engine.core", FAIL, f"{type(e).__name__}: {e}"))
        return out
    try:
        attached = set(probe.attached)
        missing = set(probe.missing_tracepoints)
        hook, refused = probe.lookup_hook, probe.lookup_hooks_refused
        whatif = probe.has_whatif
        shared_mode, exact_refused = probe.shared_mode, probe.shared_exact_refused
    finally:
        probe.close()
    out.append(Check("engine.core", OK, f"loads and attaches {len(attached)} programs"))
    # A tracepoint is served when any of its programs (the variant this
    # kernel's arguments fit) is attached; writeback_dirty_page is the name of
    # writeback_dirty_folio before 5.17.
    served = {PROGRAMS[p] for p in attached if p in PROGRAMS}
    if "writeback:writeback_dirty_page" in served:
        served.add("writeback:writeback_dirty_folio")
    lookup_tracepoints = {PROGRAMS[p] for p in LOOKUP_PROGRAMS}
    for tracepoint in TRACEPOINTS:
        name = f"tracepoint.{tracepoint}"
        if tracepoint in served:
            out.append(Check(name, OK, FEEDS[tracepoint]))
        elif tracepoint in lookup_tracepoints and hook != "none":
            out.append(Check(name, INFO, f"missing from this kernel; lookups served by {hook}"))
        elif tracepoint in missing:
            out.append(
                Check(
                    name,
                    FAIL,
                    f"missing from this kernel: no {FEEDS[tracepoint]}",
                    "a newer kernel (mm_filemap_get_pages/_fault/_map_pages arrived in 6.12)"
                    if tracepoint in lookup_tracepoints
                    else "a newer kernel",
                )
            )
        else:
            out.append(Check(name, FAIL, f"not attached: no {FEEDS[tracepoint]}", "see the log"))
    # Which hook serves lookups: "tracepoint" (6.12+), "fentry:<function>" or
    # "kprobe:<function>" before, "none".
    if hook != "none":
        detail = f"served by {hook}" + (f" (refused: {'; '.join(refused)})" if refused else "")
        out.append(Check("lookups", OK, detail))
    else:
        out.append(
            Check(
                "lookups",
                FAIL,
                "no hook: " + ("; ".join(refused) or "no lookup tracepoint, no read function"),
                "Linux 6.12+ (tracepoints), or a kernel allowing fentry or kprobes on "
                "filemap_get_pages / generic_file_buffered_read",
            )
        )
    out.append(_check_whatif(settings, whatif, hook))
    out.append(shared_hits_check(shared_mode, exact_refused))
    return out


def _check_whatif(settings: Settings, whatif: bool, hook: str) -> Check:
    """Whether the what-if curve (docs/whatif.md) can be built, and from which hook."""
    if not settings.whatif:
        return Check("whatif", INFO, "the what-if curve is off (OTEL_PAGECACHE_WHATIF=false)")
    if whatif:
        return Check("whatif", OK, f"the what-if curve can be built: page samples from {hook}")
    return Check(
        "whatif",
        INFO,
        "no what-if curve: its page samples ride on the lookup hooks, which do not run here",
    )


def shared_hits_check(mode: str, exact_refused: str = "") -> Check:
    """How shared hits (pagecache.shared.hits/.served) are told here (docs/sharing.md)."""
    if mode == "extent":
        return Check(
            "shared_hits",
            OK,
            "extent mode: owners per (file, 2 MiB extent), per file once the extent map is full"
            + (f" (exact mode refused: {exact_refused})" if exact_refused else ""),
        )
    if mode == "exact":
        return Check(
            "shared_hits",
            OK,
            "exact mode: reads by the owner of each folio they found (fexit on "
            "filemap_get_pages); faults by extents",
        )
    return Check("shared_hits", INFO, "off: no lookups to apportion, so no shared hits")


def healthy(checks: list[Check]) -> bool:
    return all(c.status in (OK, INFO) for c in checks)


def render(checks: list[Check]) -> str:
    marks = {OK: "ok  ", WARN: "warn", FAIL: "FAIL", INFO: "info"}
    lines = []
    for c in checks:
        lines.append(f"[{marks[c.status]}] {c.name}: {c.detail}")
        if c.fix:
            lines.append(f"       fix: {c.fix}")
    verdict = "full feature set works" if healthy(checks) else "some features will not work"
    lines.append(f"=> {verdict}")
    return "\n".join(lines) + "\n"


def to_json(checks: list[Check]) -> str:
    return json.dumps({"healthy": healthy(checks), "checks": [asdict(c) for c in checks]}, indent=2)
