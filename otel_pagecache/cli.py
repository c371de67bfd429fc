"""Command line: ``otel-pagecache run`` (the node agent) and ``otel-pagecache top``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading

from . import __version__
from .cgroupfs import CgroupSetupError, find_memory_hierarchy
from .config import Settings
from .export import RateLimitFilter


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-pagecache",
        description="Per-container page cache, from memory cgroups, over OpenTelemetry.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_source_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--host-root", help="host's / when running in a container (OTEL_PAGECACHE_HOST_ROOT)"
        )
        p.add_argument("--cgroup-root", help="cgroupfs root (OTEL_PAGECACHE_CGROUP_ROOT)")
        p.add_argument("--proc-root", help="procfs root (OTEL_PAGECACHE_PROC_ROOT)")
        p.add_argument(
            "--include",
            action="append",
            default=None,
            metavar="GLOB",
            help="export only cgroups whose path matches (repeatable; OTEL_PAGECACHE_INCLUDE)",
        )
        p.add_argument(
            "--exclude",
            action="append",
            default=None,
            metavar="GLOB",
            help="never export cgroups whose path matches (repeatable; OTEL_PAGECACHE_EXCLUDE)",
        )
        p.add_argument("--max-cgroups", type=int, help="cap on exported cgroups (default 1000)")
        p.add_argument(
            "--no-activity",
            dest="activity",
            action="store_false",
            default=None,
            help="no BPF probes: residency only (OTEL_PAGECACHE_ACTIVITY=false)",
        )
        p.add_argument(
            "--engine",
            choices=("auto", "core", "bcc", "none"),
            help="activity engine (OTEL_PAGECACHE_ENGINE; default auto)",
        )
        p.add_argument(
            "--no-lookups",
            dest="lookups",
            action="store_false",
            default=None,
            help="leave the lookup path unattached: no lookups, no hit ratio",
        )
        p.add_argument(
            "--containers-only",
            action="store_true",
            default=None,
            help="skip cgroups that are not containers",
        )

    run = sub.add_parser("run", help="run the node agent (exports per OTEL_* variables)")
    add_source_flags(run)
    run.add_argument(
        "--exporter", help="otlp, console, prometheus or none (overrides OTEL_METRICS_EXPORTER)"
    )
    run.add_argument(
        "--interval", type=float, help="export interval in seconds (OTEL_METRIC_EXPORT_INTERVAL)"
    )
    run.add_argument(
        "--top-files", type=int, help="files per container in pagecache.file.usage (default 10)"
    )
    run.add_argument(
        "--file-paths",
        action="store_true",
        default=None,
        help="export file.path for those files (off by default: file names stay private)",
    )

    top = sub.add_parser("top", help="live per-container page-cache table (no backend needed)")
    add_source_flags(top)
    top.add_argument("--interval", type=float, default=2.0, help="refresh seconds (default 2)")
    top.add_argument("--count", type=int, help="stop after this many screens (default: forever)")
    top.add_argument("--once", action="store_true", help="print one table and exit")

    doctor = sub.add_parser("doctor", help="what works on this host, and how to fix the rest")
    add_source_flags(doctor)
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if args.host_root:
        host_env = {"OTEL_PAGECACHE_HOST_ROOT": args.host_root}
        rooted = Settings.from_env(host_env)
        settings = dataclasses.replace(
            settings,
            **{
                f: getattr(rooted, f)
                for f in (
                    "host_root",
                    "cgroup_root",
                    "proc_root",
                    "pod_log_root",
                    "containerd_state_root",
                    "crio_state_root",
                    "docker_root",
                    "storage_root",
                )
            },
        )
    overrides = {
        "cgroup_root": args.cgroup_root,
        "proc_root": args.proc_root,
        "include": tuple(args.include) if args.include else None,
        "exclude": tuple(args.exclude) if args.exclude else None,
        "max_cgroups": args.max_cgroups,
        "containers_only": args.containers_only,
        "activity": args.activity,
        "engine": getattr(args, "engine", None),
        "lookups": args.lookups,
        "top_files": getattr(args, "top_files", None),
        "file_paths": getattr(args, "file_paths", None),
    }
    if getattr(args, "exporter", None):
        overrides["metrics_exporters"] = tuple(p.strip() for p in args.exporter.split(","))
    if getattr(args, "command", None) == "run" and args.interval is not None:
        overrides["export_interval_ms"] = args.interval * 1000
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RateLimitFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _stop_event_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum, _frame):
        logging.getLogger("otel_pagecache").info(
            "received %s, stopping", signal.Signals(signum).name
        )
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _run(settings: Settings) -> int:
    from .agent import Agent

    agent = Agent(settings)
    stop = _stop_event_on_signals()
    try:
        agent.wait(stop)
    finally:
        clean = agent.stop()
    return 0 if clean else 1


def _top(settings: Settings, args: argparse.Namespace) -> int:
    from .agent import build_activity, build_residency_reader, read_snapshot
    from .top import run_top

    reader = build_residency_reader(settings, find_memory_hierarchy(settings.cgroup_root))
    # The table shows counters only: no stall programs (nothing would drain them).
    tracker = build_activity(dataclasses.replace(settings, stalls=False), reader)
    stop = _stop_event_on_signals()
    count = 1 if args.once else args.count
    try:
        previous = None
        if tracker is not None and args.once:
            # One screen of activity needs an interval to measure rates over.
            previous = read_snapshot(reader, tracker)
            stop.wait(min(args.interval, 1.0))
        run_top(
            lambda: read_snapshot(reader, tracker),
            args.interval,
            count,
            should_stop=stop.is_set,
            previous=previous,
        )
    finally:
        if tracker is not None:
            tracker.probe.close()
    return 0


def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from .doctor import healthy, render, run_checks, to_json

    checks = run_checks(settings)
    sys.stdout.write(to_json(checks) + "\n" if args.json else render(checks))
    return 0 if healthy(checks) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        settings = settings_from(args)
        if args.command == "run":
            return _run(settings)
        if args.command == "doctor":
            return _doctor(settings, args)
        return _top(settings, args)
    except (CgroupSetupError, ValueError) as e:
        print(f"otel-pagecache: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
