"""Settings: one table, checked before anything loads; one line per mistake, exit 2."""

from __future__ import annotations

import ast
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

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
        "otel-pagecache: error: unrecognized arguments: --no-such-flag (see otel-pagecache --help)"
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


def test_settings_defaults_are_the_tables():
    """Settings writes no default of its own, and has a field for every agent variable."""
    assert Settings() == Settings.from_env({})
    agent = {s.field for s in config.SETTINGS if s.env and not s.plugin}
    # OTEL_EXPORTER_OTLP_PROTOCOL is the default of the two signal-specific fields.
    assert agent - {"otlp_protocol"} <= set(Settings.__dataclass_fields__)


# --- every environment read in the package is documented in docs/configuration.md ---------

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "otel_pagecache"


def _setting_env(field_name: str) -> list[str]:
    (setting,) = (s for s in config.SETTINGS if s.field == field_name)
    return [setting.env] if setting.env else []


def _otlp_env(suffix: str) -> list[str]:
    return [f"OTEL_EXPORTER_OTLP_METRICS_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"]


# Functions that read the environment by a name given to them: {function: (the modules
# that define it, None: any; what one call reads, from its first argument)}.
HELPERS = {
    "plugin_flag": (None, _setting_env),
    "plugin_value": (None, _setting_env),
    "get": (("otlp_transport.py",), _otlp_env),  # OtlpSettings.from_env's helpers
    "choice": (("otlp_transport.py",), _otlp_env),
}
# Where the environment is read by a computed name, and what resolves it: config.read
# and config._given take SETTINGS' names (all in the generated table); the helpers'
# own bodies take the names of their callers, resolved through HELPERS.
COMPUTED = {
    ("config.py", "read"),
    ("config.py", "_given"),
    ("config.py", "plugin_value"),
    ("config.py", "plugin_flag"),
    ("otlp_transport.py", "get"),
    ("otlp_transport.py", "choice"),
}


def _is_environment(node: ast.AST) -> bool:
    """``os.environ``, a mapping named env/environ, or an expression choosing one."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name)
    if isinstance(node, ast.Name):
        return node.id in ("env", "environ")
    if isinstance(node, ast.IfExp):
        return _is_environment(node.body) or _is_environment(node.orelse)
    if isinstance(node, ast.BoolOp):
        return any(_is_environment(v) for v in node.values)
    return False


def _environment_reads(source: str, module: str) -> tuple[dict[str, str], list[str]]:
    """({variable: where} read in ``source``, [where a name is computed outside COMPUTED])."""
    names: dict[str, str] = {}
    computed: list[str] = []

    def named(argument: ast.AST, resolve, where: str, function: str) -> None:
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            names.update(dict.fromkeys(resolve(argument.value), where))
        elif (module, function) not in COMPUTED:
            computed.append(where)

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        where = f"{module}:{getattr(node, 'lineno', 0)}"
        key: ast.AST | None = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "getenv":
                key = node.args[0]
            elif isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault"):
                key = node.args[0] if _is_environment(func.value) else None
            elif isinstance(func, ast.Name) and func.id == "read":  # (env, flags, fields)
                fields = [k.value for k in node.keywords if k.arg == "fields"] + node.args[2:3]
                for item in fields[0].elts if fields else ():
                    named(item, _setting_env, where, function)
            elif isinstance(func, ast.Name) and func.id in HELPERS:
                modules, resolve = HELPERS[func.id]
                if modules is None or module in modules:
                    named(node.args[0], resolve, where, function)
        elif isinstance(node, ast.Subscript) and _is_environment(node.value):
            key = node.slice
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            key = node.left if _is_environment(node.comparators[0]) else None
        if key is not None:
            named(key, lambda name: [name], where, function)
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), "")
    return names, computed


def _documented() -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text()))


def _undocumented(source: str, module: str) -> list[str]:
    names, computed = _environment_reads(source, module)
    documented = _documented()
    return [f"{where} reads {name}" for name, where in names.items() if name not in documented] + [
        f"{where} reads the environment by a computed name" for where in computed
    ]


def test_every_environment_read_is_documented():
    """Every variable the package reads is in docs/configuration.md: a variable of this
    project's goes in config.SETTINGS, another program's in config.OTHER_VARIABLES
    (both generated into the document by scripts/gendocs)."""
    problems: list[str] = []
    read_anywhere: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = str(path.relative_to(PACKAGE))
        source = path.read_text()
        problems += _undocumented(source, module)
        read_anywhere |= set(_environment_reads(source, module)[0])
    documented = _documented()
    problems += [f"SETTINGS' {s.env}" for s in config.SETTINGS if s.env and s.env not in documented]
    assert not problems, "undocumented environment reads:\n" + "\n".join(problems)
    # The scan does see the reads this test exists for.
    assert {
        "OTEL_SDK_DISABLED",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "BCC_KERNEL_SOURCE",
        "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
        "OTEL_PAGECACHE_CGROUP_ROOT",
    } <= read_anywhere


def test_the_environment_scan_fails_on_an_undocumented_read():
    source = """
import os
def f(env, name):
    os.environ["NOPE_ONE"]
    os.environ.get("NOPE_TWO", "")
    os.getenv("NOPE_THREE")
    (env if env is not None else os.environ).get("NOPE_FOUR")
    "NOPE_FIVE" in os.environ
    os.environ.get(name)
    plugin_flag("span_figures")
    os.environ.get("OTEL_PAGECACHE_ENGINE")
"""
    names, computed = _environment_reads(source, "new.py")
    assert set(names) == {f"NOPE_{n}" for n in ("ONE", "TWO", "THREE", "FOUR", "FIVE")} | {
        "OTEL_PAGECACHE_SPAN_FIGURES",
        "OTEL_PAGECACHE_ENGINE",
    }
    assert computed == ["new.py:9"]
    assert len(_undocumented(source, "new.py")) == 6
