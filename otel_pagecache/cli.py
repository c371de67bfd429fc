"""Command line: ``otel-pagecache run`` (the node agent) and ``otel-pagecache top``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys

from . import __version__
from .cgroupfs import CgroupSetupError, find_memory_hierarchy
from .config import SETTINGS, SettingError, Settings, read
from .endpoint import EndpointError, serve_prometheus
from .log_rate_limit import RateLimitFilter
from .stopping import guard_exit, stop_on_signals
from .top import SORT_KEYS


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_setting_flags(parser: argparse.ArgumentParser, command: str | None) -> None:
    """The flags of ``command`` (None: the global ones), made from config.SETTINGS."""
    for setting in SETTINGS:
        if not setting.flag or (command not in setting.commands if command else setting.commands):
            continue
        help_text = setting.flag_help or setting.help
        default = setting.shown_default()
        if default and not setting.flag_help and setting.takes_value:
            help_text += f" (default {default})"
        if setting.env and setting.env not in help_text:
            help_text += f"; {setting.env}"
        if setting.takes_value:
            parser.add_argument(
                setting.flag,
                dest=setting.field,
                metavar=setting.kind.metavar,
                action="append" if setting.repeatable else "store",
                help=help_text + (" (repeatable)" if setting.repeatable else ""),
            )
        else:
            parser.add_argument(
                setting.flag,
                dest=setting.field,
                action="store_const",
                const=setting.flag_value,
                help=help_text,
            )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="otel-pagecache",
        description="Per-container page cache, from memory cgroups, over OpenTelemetry. "
        "Every setting is also an environment variable: see docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    _add_setting_flags(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    env_only = [s.env for s in SETTINGS if "run" in s.commands and s.env and not s.flag]
    run = sub.add_parser(
        "run",
        help="run the node agent (exports per OTEL_* variables)",
        epilog="Also read from the environment: " + ", ".join(env_only) + "; and the OTLP "
        "exporters' own OTEL_EXPORTER_OTLP_* variables. Reference: docs/configuration.md.",
    )
    _add_setting_flags(run, "run")

    top = sub.add_parser(
        "top", help="live per-container page-cache table (no backend needed; q quits)"
    )
    _add_setting_flags(top, "top")
    top.add_argument("--once", action="store_true", help="print one table and exit")
    top.add_argument(
        "--sort",
        choices=SORT_KEYS,
        default="cache",
        help="initial sort column (default cache); keys c, m, e change it live",
    )

    doctor = sub.add_parser("doctor", help="what works on this host, and how to fix the rest")
    _add_setting_flags(doctor, "doctor")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, object]:
    """What each setting's flag gave (absent flags: None)."""
    return {s.field: getattr(args, s.field, None) for s in SETTINGS if s.flag}


def settings_from(args: argparse.Namespace) -> Settings:
    """The agent's settings: flags over variables over defaults; SettingError on a bad value."""
    return Settings.from_env(flags=_flags(args))


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RateLimitFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _run(settings: Settings) -> int:
    # First: a stop requested while the programs load is a stop, not a kill
    # (the default SIGTERM action) or a KeyboardInterrupt traceback; and from
    # the signal on, the whole process has one bound (stopping.py).
    stop = stop_on_signals()
    guard_exit(stop, settings.shutdown_timeout_s)
    from .agent import Agent

    if "prometheus" in settings.metrics_exporters:
        # Bound before the BPF load: a port in use is one line, with nothing loaded.
        serve_prometheus(settings.prometheus_host, settings.prometheus_port)
    logging.getLogger("otel_pagecache").info("starting (pid %d)", os.getpid())
    agent = Agent(settings)
    try:
        agent.wait(stop.event)
    finally:
        clean = agent.stop(stop.deadline(settings.shutdown_timeout_s))
    return 0 if clean else 1


def _top(settings: Settings, args: argparse.Namespace, own: dict[str, object]) -> int:
    from .agent import build_activity, build_residency_reader, read_snapshot
    from .top import run_top, terminal_keys
    from .whatif import start_whatif

    stop = stop_on_signals().event
    interval = float(own["top_interval_s"])  # type: ignore[arg-type]
    reader = build_residency_reader(settings, find_memory_hierarchy(settings.cgroup_root))
    # The table shows counters only: no stall programs (nothing would drain them).
    tracker = build_activity(dataclasses.replace(settings, stalls=False), reader)
    # The NEED95 column: the what-if curve from the moment top started.
    whatif = start_whatif(settings, tracker.probe if tracker is not None else None)
    count = 1 if args.once else own["top_count"]
    try:
        previous = None
        if tracker is not None and args.once:
            # One screen of activity needs an interval to measure rates over.
            previous = read_snapshot(reader, tracker, whatif)
            stop.wait(min(interval, 1.0))
        with terminal_keys() if not args.once else contextlib.nullcontext() as keys:
            run_top(
                lambda: read_snapshot(reader, tracker, whatif),
                interval,
                count,  # type: ignore[arg-type]
                should_stop=stop.is_set,
                previous=previous,
                keys=keys,
                sort=args.sort,
            )
    finally:
        if whatif is not None:
            whatif.stop()
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
    try:
        # Every value is checked here, before anything is loaded or attached.
        level = read(os.environ, _flags(args), ("log_level",))["log_level"]
        _setup_logging(str(level))
        settings = settings_from(args)
        top_settings = read(os.environ, _flags(args), ("top_interval_s", "top_count"))
    except SettingError as e:
        print(f"otel-pagecache: error: {e}", file=sys.stderr)
        return 2
    try:
        if args.command == "run":
            return _run(settings)
        if args.command == "doctor":
            return _doctor(settings, args)
        return _top(settings, args, top_settings)
    except (CgroupSetupError, SettingError) as e:
        print(f"otel-pagecache: error: {e}", file=sys.stderr)
        return 2
    except (EndpointError, ValueError) as e:
        print(f"otel-pagecache: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
