"""Settings: one table, checked before anything loads; one line per mistake, exit 2."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import pytest

from otel_pagecache import config
from otel_pagecache.cli import _parser
from otel_pagecache.config import SettingError, Settings, plugin_flag

# Messages the agent logs once it starts loading things; none may come before a
# settings error.
STARTED = ("activity engine", "memory controller", "Prometheus endpoint", "Traceback")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otel_pagecache.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["run", "--max-cgroups", "-5"], {}, "--max-cgroups='-5'"),
        (["run", "--max-cgroups", "many"], {}, "--max-cgroups='many'"),
        (["top", "--once"], {"OTEL_PAGECACHE_ACTIVITY": "maybe"}, "ACTIVITY='maybe'"),
        (["run"], {"OTEL_PAGECACHE_MAX_CGROUPS": "-34"}, "OTEL_PAGECACHE_MAX_CGROUPS='-34'"),
        (["run"], {"OTEL_PAGECACHE_ENGINE": "fast"}, "OTEL_PAGECACHE_ENGINE='fast'"),
        (["run"], {"OTEL_PAGECACHE_SHUTDOWN_TIMEOUT": "soon"}, "OTEL_PAGECACHE_SHUTDOWN_TIMEOUT"),
        (["run", "--engine", "fast"], {}, "--engine='fast'"),
        (["run", "--exporter", "zipkin"], {}, "--exporter='zipkin'"),
        (["run", "--interval", "0"], {}, "--interval='0'"),
        (["top", "--interval", "0"], {}, "--interval='0'"),
        (["top", "--interval", "-1"], {}, "--interval='-1'"),
        (["top", "--count", "0"], {}, "--count='0'"),
        (["--log-level", "loud", "doctor"], {}, "--log-level='loud'"),
    ],
)
def test_bad_value_is_one_line_naming_setting_value_and_choices_exit_2(args, env, named):
    result = _cli(*args, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # nothing loaded or logged before it
    assert named in lines[0] and "expected" in lines[0], lines[0]
    assert not any(word in result.stderr for word in STARTED)


def test_argparse_mistakes_are_one_line_too():
    result = _cli("run", "--no-such-flag")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "otel-pagecache: error: unrecognized arguments: --no-such-flag "
        "(see otel-pagecache --help)"
    ]


@pytest.mark.parametrize(
    ("raw", "value"),
    [(w, True) for w in ("true", "TRUE", "1", "yes", "On")]
    + [(w, False) for w in ("false", "0", "no", "OFF")],
)
def test_booleans_accept_the_usual_spellings(raw, value):
    assert Settings.from_env({"OTEL_PAGECACHE_CONTAINERS_ONLY": raw}).containers_only is value


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled", "tru"])
def test_booleans_reject_anything_else(raw):
    with pytest.raises(SettingError, match=f"OTEL_PAGECACHE_LOOKUPS='{raw}' is invalid"):
        Settings.from_env({"OTEL_PAGECACHE_LOOKUPS": raw})


@pytest.mark.parametrize(
    ("name", "raw", "field", "default"),
    [
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "99999", "prometheus_port", 9464),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "http", "prometheus_port", 9464),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-5", "export_interval_ms", 60_000),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1m", "export_interval_ms", 60_000),
        ("OTEL_METRICS_EXPORTER", "zipkin", "metrics_exporters", ("otlp",)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon", "otlp_metrics_protocol", "grpc"),
        ("OTEL_TRACES_EXPORTER", "jaeger", "traces_exporter", "otlp"),
    ],
)
def test_standard_variables_warn_and_fall_back_as_the_specification_says(
    name, raw, field, default, caplog
):
    with caplog.at_level(logging.WARNING, logger="otel_pagecache.config"):
        settings = Settings.from_env({name: raw})
    assert getattr(settings, field) == default
    (record,) = caplog.records
    assert f"{name}='{raw}' is invalid" in record.getMessage()


def test_standard_variables_are_read():
    s = Settings.from_env(
        {
            "OTEL_METRICS_EXPORTER": "console, prometheus",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
            "OTEL_EXPORTER_PROMETHEUS_PORT": "9999",
        }
    )
    assert s.metrics_exporters == ("console", "prometheus")
    assert s.otlp_metrics_protocol == "http/protobuf" and s.otlp_traces_protocol == "grpc"
    assert s.export_interval_ms == 5000 and s.prometheus_port == 9999


def test_flags_win_over_variables_and_run_interval_is_in_seconds():
    args = _parser().parse_args(["run", "--interval", "2.5", "--max-cgroups", "7", "--no-lookups"])
    from otel_pagecache.cli import _flags

    s = Settings.from_env(
        {"OTEL_METRIC_EXPORT_INTERVAL": "100", "OTEL_PAGECACHE_MAX_CGROUPS": "3"}, _flags(args)
    )
    assert s.export_interval_ms == 2500 and s.max_cgroups == 7 and s.lookups is False


def test_host_root_moves_every_host_path_unless_set_explicitly():
    s = Settings.from_env(
        {"OTEL_PAGECACHE_HOST_ROOT": "/host", "OTEL_PAGECACHE_PROC_ROOT": "/elsewhere/proc"}
    )
    assert s.cgroup_root == "/host/sys/fs/cgroup" and s.proc_root == "/elsewhere/proc"
    assert s.pod_log_root == "/host/var/log/pods"
    assert s.docker_root == "/host/var/lib/docker"
    assert s.storage_root == "/host/var/lib/containers/storage"
    assert s.containerd_state_root == "/host/run/containerd"


def test_help_says_which_interval_is_seconds_and_which_milliseconds():
    text = _parser()._subparsers._group_actions[0].choices["run"].format_help()  # noqa: SLF001
    flat = " ".join(text.split())
    assert "--interval SECONDS seconds between exports" in flat
    assert "OTEL_METRIC_EXPORT_INTERVAL gives the same in MILLISECONDS" in flat
    # Every setting of run is in its help, by flag or (environment only) by name.
    for setting in config.SETTINGS:
        if "run" in setting.commands:
            assert (setting.flag or setting.env) in flat, setting


def test_plugin_settings_warn_and_fall_back_never_raise(caplog):
    with caplog.at_level(logging.WARNING, logger="otel_pagecache.config"):
        assert plugin_flag("span_figures", {"OTEL_PAGECACHE_SPAN_FIGURES": "perhaps"}) is True
        assert plugin_flag("span_slots", {"OTEL_PAGECACHE_SPAN_SLOTS": "off"}) is False
    assert "OTEL_PAGECACHE_SPAN_FIGURES='perhaps' is invalid" in caplog.text


def test_prometheus_port_in_use_is_one_line_before_any_bpf_load():
    """A real listener holds the port; the agent names port and variable, loads nothing."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = _cli(
            "run",
            "--exporter",
            "prometheus",
            env={
                "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
            },
        )
    finally:
        holder.close()
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port} is already in use" in lines[0]
    assert f"OTEL_EXPORTER_PROMETHEUS_PORT={port}" in lines[0]
    assert not any(word in result.stderr for word in STARTED)


def test_the_agent_does_not_judge_the_plugins_settings():
    """A value meant for the in-process plugin never stops the agent (nor the reverse)."""
    s = Settings.from_env({"OTEL_PAGECACHE_SPAN_FIGURES": "perhaps"})
    assert s.max_cgroups == 1000
