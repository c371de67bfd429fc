"""Every setting the agent and the plugin read, in one table: ``SETTINGS``.

The command line's flags, their help, and ``docs/configuration.md`` are made
from that table (a test checks the document), so adding a setting is one row.

Values are checked before anything is loaded or attached. This project's own
settings (``OTEL_PAGECACHE_*`` and every flag) are strict: a bad value is a
``SettingError`` naming the setting as the user wrote it, the value as given,
and what is accepted. The standard ``OTEL_*`` variables keep the
OpenTelemetry specification's behaviour instead: an invalid value warns and
the default applies (so a variable shared with other OpenTelemetry programs
never stops this one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_log = logging.getLogger(__name__)


class SettingError(ValueError):
    """A value the user gave that we do not accept; the message is one line."""


@dataclass(frozen=True)
class Kind:
    """How a raw string becomes a value; ``parse`` raises ValueError when it cannot."""

    accepted: str
    parse: Callable[[str], object]
    metavar: str = "VALUE"


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(raw)


def _number(kind: type, minimum: float, exclusive: bool = False, maximum: float | None = None):
    def parse(raw: str):
        value = kind(raw.strip())
        if value < minimum or (exclusive and value == minimum):
            raise ValueError(raw)
        if maximum is not None and value > maximum:
            raise ValueError(raw)
        return value

    return parse


def _choice(*names: str) -> Kind:
    def parse(raw: str) -> str:
        word = raw.strip().lower()
        if word not in names:
            raise ValueError(raw)
        return word

    return Kind("one of " + ", ".join(names), parse, "{" + ",".join(names) + "}")


def _choices(*names: str) -> Kind:
    """A comma-separated list, each item one of ``names``."""

    def parse(raw: str) -> tuple[str, ...]:
        items = split(raw)
        if not items or any(i.lower() not in names for i in items):
            raise ValueError(raw)
        return tuple(i.lower() for i in items)

    return Kind("comma-separated, each one of " + ", ".join(names), parse, "NAME[,NAME]")


def split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError(raw)
    return raw.strip()


BOOL = Kind("true/false, 1/0, yes/no or on/off", parse_bool)
# The specification's boolean: only a case-insensitive "true" is true.
SPEC_BOOL = Kind("true or false", lambda raw: raw.strip().lower() == "true")
POSITIVE_INT = Kind("a whole number of at least 1", _number(int, 1), "N")
COUNT = Kind("a whole number of at least 0", _number(int, 0), "N")
POSITIVE = Kind("a number greater than 0", _number(float, 0, exclusive=True), "SECONDS")
NON_NEGATIVE = Kind("a number of at least 0", _number(float, 0), "NUMBER")
PORT = Kind("a port number from 1 to 65535", _number(int, 1, maximum=65535), "PORT")
TEXT = Kind("a non-empty string", _text)
PATH = Kind("a path", _text, "PATH")
GLOBS = Kind("comma-separated glob patterns on cgroup paths", split, "GLOB")
WHATIF_SHIFT = Kind("a whole number from 0 to 20", _number(int, 0, maximum=20), "N")
LOG_LEVEL = _choice("debug", "info", "warning", "error")
METRICS_EXPORTERS = _choices("otlp", "console", "prometheus", "none")


@dataclass(frozen=True)
class Setting:
    """One row of the table.

    ``env`` is None for a flag without a variable; ``flag`` None for a variable
    without a flag. ``flag_value`` is what a flag that takes no value sets
    (``--no-activity``: False). ``flag_scale`` converts a flag's unit to the
    field's (``run --interval`` is in seconds, its variable in milliseconds).
    ``standard``: an OpenTelemetry variable, lenient as the specification says.
    ``host_path``: the default lies under ``OTEL_PAGECACHE_HOST_ROOT``.
    """

    field: str
    env: str | None
    kind: Kind
    default: object
    help: str
    flag: str | None = None
    commands: tuple[str, ...] = ("run", "top", "doctor")
    flag_value: object = None
    flag_scale: float = 1
    flag_unit: str = ""
    flag_help: str = ""
    standard: bool = False
    plugin: bool = False
    host_path: bool = False
    repeatable: bool = False

    @property
    def takes_value(self) -> bool:
        return self.flag_value is None

    def shown_default(self) -> str:
        if self.default is None:
            return ""
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return ",".join(self.default) or ""
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)


RUN = ("run",)
TOP = ("top",)

# One setting per entry, laid out by hand: name, variable, parser, default, help.
# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # --- the agent's own; strict -------------------------------------------------------------
    Setting("host_root", "OTEL_PAGECACHE_HOST_ROOT", PATH, "/",
            "the host's / when the agent runs in a container; prefixes every host path below",
            "--host-root"),
    Setting("cgroup_root", "OTEL_PAGECACHE_CGROUP_ROOT", PATH, "/sys/fs/cgroup",
            "cgroupfs; v2, v1 and hybrid layouts are found below it (the in-process plugin "
            "reads it too)", "--cgroup-root",
            host_path=True),
    Setting("proc_root", "OTEL_PAGECACHE_PROC_ROOT", PATH, "/proc", "procfs", "--proc-root",
            host_path=True),
    # Runtime data roots, as the runtimes' own flags name them (docs/containers.md): read
    # for container names and images.
    Setting("docker_root", "OTEL_PAGECACHE_DOCKER_DATA_ROOT", PATH, "/var/lib/docker",
            "dockerd --data-root", host_path=True),
    Setting("storage_root", "OTEL_PAGECACHE_CONTAINERS_STORAGE_ROOT", PATH,
            "/var/lib/containers/storage",
            "containers/storage graphroot of podman, buildah, CRI-O", host_path=True),
    Setting("crio_state_root", "OTEL_PAGECACHE_CONTAINERS_RUN_ROOT", PATH,
            "/run/containers/storage",
            "containers/storage runroot, where CRI-O keeps each container's OCI config",
            host_path=True),
    Setting("containerd_state_root", "OTEL_PAGECACHE_CONTAINERD_STATE_ROOT", PATH,
            "/run/containerd", "containerd --state", host_path=True),
    Setting("include", "OTEL_PAGECACHE_INCLUDE", GLOBS, (),
            "export only cgroups whose path matches one of these globs (default: all)",
            "--include", repeatable=True),
    Setting("exclude", "OTEL_PAGECACHE_EXCLUDE", GLOBS, (),
            "never export cgroups whose path matches one of these globs", "--exclude",
            repeatable=True),
    Setting("max_cgroups", "OTEL_PAGECACHE_MAX_CGROUPS", POSITIVE_INT, 1000,
            "cap on exported cgroups; the largest by memory usage (memory.current, v1 "
            "memory.usage_in_bytes) are kept, chosen before memory.stat is read; a WARNING "
            "says when it starts and stops dropping some", "--max-cgroups"),
    Setting("containers_only", "OTEL_PAGECACHE_CONTAINERS_ONLY", BOOL, False,
            "skip cgroups that are not containers", "--containers-only", flag_value=True),
    Setting("activity", "OTEL_PAGECACHE_ACTIVITY", BOOL, True,
            "BPF activity probes; false: residency only (as engine none)", "--no-activity",
            flag_value=False, flag_help="no BPF probes: residency only"),
    Setting("engine", "OTEL_PAGECACHE_ENGINE", _choice("auto", "core", "bcc", "none"), "auto",
            "activity engine; auto: CO-RE when it loads, else BCC when it imports and compiles, "
            "else residency only", "--engine"),
    Setting("lookups", "OTEL_PAGECACHE_LOOKUPS", BOOL, True,
            "attach the lookup path (every read and fault); false: no lookups, no hit ratio",
            "--no-lookups", flag_value=False,
            flag_help="leave the lookup path unattached: no lookups, no hit ratio"),
    Setting("bpf_max_memcgs", "OTEL_PAGECACHE_BPF_MAX_MEMCGS", COUNT, 0,
            "entries of each per-memcg BPF map, both engines (0: built-in 16384); events of "
            "memcgs beyond it are counted in pagecache.agent.bpf.lost", commands=RUN),
    # The what-if curve (docs/whatif.md): page accesses sampled on the lookup path.
    Setting("whatif", "OTEL_PAGECACHE_WHATIF", BOOL, True,
            "the what-if curve (pagecache.whatif.*): hit ratio at other cache sizes and the "
            "working set, per memcg; needs the lookup path", commands=RUN),
    Setting("whatif_window_s", "OTEL_PAGECACHE_WHATIF_WINDOW_S", POSITIVE, 600.0,
            "seconds of accesses the curve is built from (a sliding window)", commands=RUN),
    # 9: the agent's CPU stays under 2% of a core at 1,000,000 page accesses
    # a second (bench/whatif_cost.py); 6 costs ~13%.
    Setting("whatif_sample_shift", "OTEL_PAGECACHE_WHATIF_SAMPLE_SHIFT", WHATIF_SHIFT, 9,
            "the kernel samples one page in 2**N of each file (lower: a denser curve for "
            "small working sets, more agent CPU)", commands=RUN),
    Setting("whatif_max_pages_per_event", "OTEL_PAGECACHE_WHATIF_MAX_PAGES_PER_EVENT",
            POSITIVE_INT, 64,
            "sampled pages sent per read or fault at most; events cut there are counted in "
            "pagecache.agent.bpf.lost (whatif_capped)", commands=RUN),
    Setting("whatif_max_keys", "OTEL_PAGECACHE_WHATIF_MAX_KEYS", POSITIVE_INT, 100_000,
            "pages the curves of all memcgs keep together (about 210 bytes each)",
            commands=RUN),
    Setting("whatif_max_keys_per_memcg", "OTEL_PAGECACHE_WHATIF_MAX_KEYS_PER_MEMCG",
            POSITIVE_INT, 16_384,
            "pages one memcg's curve keeps at most (fewer when many memcgs are active)",
            commands=RUN),
    Setting("whatif_calibrate", "OTEL_PAGECACHE_WHATIF_CALIBRATE", BOOL, False,
            "shift each curve so its point at scale 1 is the hit ratio measured over the "
            "window; the series carry pagecache.whatif.calibrated=true", commands=RUN),
    Setting("top_files", "OTEL_PAGECACHE_TOP_FILES", COUNT, 10,
            "files per container in pagecache.file.usage", "--top-files", commands=RUN),
    Setting("top_shared_pairs", "OTEL_PAGECACHE_TOP_SHARED_PAIRS", COUNT, 10,
            "partners per container named in pagecache.shared.hits and .served (the rest: "
            "\"other\")", "--top-shared-pairs", commands=RUN),
    Setting("file_paths", "OTEL_PAGECACHE_FILE_PATHS", BOOL, False,
            "export file.path of those files (off: a container's file names stay private)",
            "--file-paths", commands=RUN, flag_value=True),
    Setting("shutdown_timeout_s", "OTEL_PAGECACHE_SHUTDOWN_TIMEOUT", NON_NEGATIVE, 5.0,
            "seconds allowed for the last export on exit; the process ends at most 1 s "
            "later", commands=RUN),
    Setting("stalls", "OTEL_PAGECACHE_STALLS", BOOL, True,
            "stall programs and spans", commands=RUN),
    Setting("stall_threshold_ms", "OTEL_PAGECACHE_STALL_THRESHOLD_MS", NON_NEGATIVE, 1.0,
            "stalls at least this long (ms, fractions allowed, 0 = all) become spans",
            commands=RUN),
    Setting("stall_spans_per_second", "OTEL_PAGECACHE_STALL_SPANS_PER_SECOND", NON_NEGATIVE,
            10.0, "stall span rate limit per container (burst as large)", commands=RUN),
    # --- the in-process plugin's; never stop the application: warn, then default -----------
    Setting("span_figures", "OTEL_PAGECACHE_SPAN_FIGURES", BOOL, True,
            "thread page-cache figures on the application's spans", commands=(), plugin=True),
    Setting("span_slots", "OTEL_PAGECACHE_SPAN_SLOTS", BOOL, True,
            "publish span slots, so stall spans link to application spans", commands=(),
            plugin=True),
    Setting("process_residency", "OTEL_PAGECACHE_PROCESS_RESIDENCY", BOOL, True,
            "residency of the process's own memcg", commands=(), plugin=True),
    # --- standard OpenTelemetry variables; lenient, as the specification says ---------------
    Setting("metrics_exporters", "OTEL_METRICS_EXPORTER", METRICS_EXPORTERS, ("otlp",),
            "where metrics go", "--exporter", commands=RUN, standard=True),
    Setting("export_interval_ms", "OTEL_METRIC_EXPORT_INTERVAL", POSITIVE, 60_000.0,
            "milliseconds between exports", "--interval", commands=RUN, standard=True,
            flag_scale=1000, flag_unit="seconds",
            flag_help="seconds between exports (default 60); the variable "
            "OTEL_METRIC_EXPORT_INTERVAL gives the same in MILLISECONDS"),
    Setting("export_timeout_ms", "OTEL_METRIC_EXPORT_TIMEOUT", NON_NEGATIVE, 30_000.0,
            "milliseconds allowed for one export, retries included", commands=RUN,
            standard=True),
    Setting("otlp_protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", _choice("grpc", "http/protobuf"),
            "grpc", "OTLP transport (grpc, as the Python SDK's auto-configuration)",
            commands=RUN, standard=True),
    Setting("otlp_metrics_protocol", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            _choice("grpc", "http/protobuf"), None,
            "overrides OTEL_EXPORTER_OTLP_PROTOCOL for metrics", commands=RUN, standard=True),
    Setting("otlp_traces_protocol", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            _choice("grpc", "http/protobuf"), None,
            "overrides OTEL_EXPORTER_OTLP_PROTOCOL for stall spans", commands=RUN, standard=True),
    Setting("traces_exporter", "OTEL_TRACES_EXPORTER", _choice("otlp", "console", "none"),
            "otlp", "where stall spans go", commands=RUN, standard=True),
    Setting("prometheus_host", "OTEL_EXPORTER_PROMETHEUS_HOST", TEXT, "localhost",
            "address of the Prometheus pull endpoint", commands=RUN, standard=True),
    Setting("prometheus_port", "OTEL_EXPORTER_PROMETHEUS_PORT", PORT, 9464,
            "port of the Prometheus pull endpoint (bound before any BPF program loads)",
            commands=RUN, standard=True),
    Setting("sdk_disabled", "OTEL_SDK_DISABLED", SPEC_BOOL, False,
            "true: the SDK is off, so the plugin adds no span figures and does not warn that "
            "no SDK is set up", commands=(), plugin=True, standard=True),
    # --- flags without a variable ------------------------------------------------------------
    Setting("log_level", None, LOG_LEVEL, "info", "log level", "--log-level", commands=()),
    Setting("top_interval_s", None, POSITIVE, 2.0, "seconds between screens", "--interval",
            commands=TOP),
    Setting("top_count", None, POSITIVE_INT, None,
            "stop after this many screens (default: until q or Ctrl-C)", "--count", commands=TOP),
)
# fmt: on


@dataclass(frozen=True)
class Variable:
    """A variable that another specification or program defines, read by its rules
    rather than through ``read``: by the module of this project named in ``used_by``,
    or by the program named there. Listed so docs/configuration.md names every
    variable read (tests/test_settings.py scans the code for reads)."""

    names: tuple[str, ...]
    default: str
    meaning: str
    used_by: str


def _otlp(
    suffix: str,
    default: str,
    meaning: str,
    used_by: str = "run (otlp_transport; stall spans: the SDK's exporter)",
) -> Variable:
    """``OTEL_EXPORTER_OTLP_<suffix>`` and its ``_METRICS_`` override, which wins."""
    names = (f"OTEL_EXPORTER_OTLP_{suffix}", f"OTEL_EXPORTER_OTLP_METRICS_{suffix}")
    return Variable(names, default, meaning, used_by)


# fmt: off
OTHER_VARIABLES: tuple[Variable, ...] = (
    _otlp("ENDPOINT", "http://localhost:4317 (grpc), http://localhost:4318 (http/protobuf)",
          "collector address; http/protobuf appends v1/metrics to the generic one and takes "
          "the METRICS_ one as is"),
    _otlp("HEADERS", "", "key=value,key2=value2, values URL-decoded"),
    _otlp("COMPRESSION", "none", "none or gzip"),
    _otlp("TIMEOUT", "10000", "milliseconds per attempt, as the specification says (the "
          "Python SDK's own exporters read seconds)"),
    _otlp("INSECURE", "false", "true: plain-text gRPC; an http:// endpoint is plain text and "
          "https:// TLS whatever this says"),
    _otlp("CERTIFICATE", "", "TLS: file of the certificates to trust"),
    _otlp("CLIENT_KEY", "", "TLS: file of the client's private key"),
    _otlp("CLIENT_CERTIFICATE", "", "TLS: file of the client's certificate"),
    _otlp("TEMPORALITY_PREFERENCE", "cumulative", "delta makes every counter delta; lowmemory "
          "keeps the (asynchronous) bulk counters cumulative and makes the stall histogram "
          "delta", used_by="run (otlp_transport)"),
    Variable(("OTEL_BSP_MAX_QUEUE_SIZE",), "2048", "stall spans waiting for export at most; "
             "those beyond are dropped and counted (queue_full)", "run (span_delivery)"),
    Variable(("OTEL_BSP_SCHEDULE_DELAY",), "", "stall span batching (ms)", "run (the SDK)"),
    Variable(("OTEL_RESOURCE_ATTRIBUTES",), "", "merged into the agent's base Resource",
             "run (the SDK)"),
    Variable(("OTEL_SERVICE_NAME",), "otel-pagecache", "the agent's service.name",
             "run (the SDK)"),
    Variable(("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",), "", "pagecache: the plugin is off",
             "plugin (opentelemetry-instrument)"),
    Variable(("BCC_KERNEL_SOURCE",), "", "(BCC engine) kernel headers to compile against; "
             "else /lib/modules/$(uname -r)/build, else the newest linux-headers under /usr/src",
             "run, top, doctor (probes/kheaders)"),
)
# fmt: on

BY_ENV = {s.env: s for s in SETTINGS if s.env}

# Host paths that have no setting of their own yet: they follow the host root.
# To give one a variable, add a Setting row with host_path=True and drop it here.
_DERIVED_ROOTS = {
    "pod_log_root": "/var/log/pods",
}


def _under(host_root: str, path: str) -> str:
    return os.path.join(host_root, path.lstrip("/")) if host_root not in ("", "/") else path


def _parse(setting: Setting, raw: str, written_as: str, lenient: bool) -> object:
    try:
        return setting.kind.parse(raw)
    except ValueError:
        if lenient:
            _log.warning(
                "%s=%r is invalid (expected %s): using the default, %s",
                written_as,
                raw,
                setting.kind.accepted,
                setting.shown_default() or "unset",
            )
            return setting.default
        raise SettingError(
            f"{written_as}={raw!r} is invalid: expected {setting.kind.accepted}"
        ) from None


def read(
    env: Mapping[str, str],
    flags: Mapping[str, object] | None = None,
    fields: tuple[str, ...] | None = None,
    lenient: bool = False,
) -> dict[str, object]:
    """Each setting's value: flag, else variable, else default.

    ``flags`` maps a field to what its flag gave (a string, a list of strings
    for a repeatable flag, or the flag's constant). Raises SettingError for a
    bad value of this project's own settings unless ``lenient`` (the plugin)."""
    flags = flags or {}
    values: dict[str, object] = {}
    for setting in SETTINGS:
        if setting.field not in fields if fields is not None else setting.plugin:
            continue  # the plugin's settings are not the agent's business, and vice versa
        given = flags.get(setting.field)
        if given is not None and setting.flag:
            if not setting.takes_value:
                values[setting.field] = given
                continue
            raw = ",".join(given) if isinstance(given, list) else str(given)
            value = _parse(setting, raw, setting.flag, lenient=False)
            if setting.flag_scale != 1 and isinstance(value, (int, float)):
                value = value * setting.flag_scale
            values[setting.field] = value
            continue
        raw = env.get(setting.env) if setting.env else None
        if raw is None or raw.strip() == "":
            values[setting.field] = setting.default
            continue
        values[setting.field] = _parse(setting, raw, setting.env, lenient or setting.standard)
    return values


_DEFAULTS = {s.field: s.default for s in SETTINGS}


def _defaults_from_table(cls: type) -> type:
    """Each field of ``cls`` written without a value gets its SETTINGS row's default."""
    for name in cls.__annotations__:
        if name not in vars(cls):
            setattr(cls, name, _DEFAULTS[name])
    return cls


@dataclass
@_defaults_from_table
class Settings:
    """The agent's settings: a field per row of ``SETTINGS`` that the agent reads
    (not the plugin's, nor the flags only ``cli`` reads), its default the row's.
    ``Settings.<field>`` is that default, for modules that need one."""

    metrics_exporters: tuple[str, ...]
    # The signal-specific protocols default to OTEL_EXPORTER_OTLP_PROTOCOL's.
    otlp_metrics_protocol: str = _DEFAULTS["otlp_protocol"]
    export_interval_ms: float
    export_timeout_ms: float
    prometheus_host: str
    prometheus_port: int
    host_root: str
    cgroup_root: str
    proc_root: str
    pod_log_root: str = _DERIVED_ROOTS["pod_log_root"]
    # Runtime data roots, as the runtimes' own flags name them (docs/containers.md).
    containerd_state_root: str
    crio_state_root: str
    docker_root: str
    storage_root: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    max_cgroups: int
    containers_only: bool
    shutdown_timeout_s: float
    activity: bool
    engine: str
    stalls: bool
    traces_exporter: str
    otlp_traces_protocol: str = _DEFAULTS["otlp_protocol"]
    stall_threshold_ms: float
    stall_spans_per_second: float
    lookups: bool
    bpf_max_memcgs: int
    top_files: int
    top_shared_pairs: int
    file_paths: bool
    whatif: bool
    whatif_window_s: float
    whatif_sample_shift: int
    whatif_max_pages_per_event: int
    whatif_max_keys: int
    whatif_max_keys_per_memcg: int
    whatif_calibrate: bool

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, flags: Mapping[str, object] | None = None
    ) -> Settings:
        """The agent's settings from the environment and the command line's flags.

        Raises SettingError (one line) on a bad value of this project's own."""
        env = os.environ if env is None else env
        values = read(env, flags)
        # The signal-specific protocol variables override the general one.
        protocol = values.pop("otlp_protocol")
        for name in ("otlp_metrics_protocol", "otlp_traces_protocol"):
            values[name] = values[name] or protocol
        host_root = str(values["host_root"])
        for setting in SETTINGS:
            if setting.host_path and not _given(setting, env, flags):
                values[setting.field] = _under(host_root, str(setting.default))
        for name, path in _DERIVED_ROOTS.items():
            values[name] = _under(host_root, path)
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def _given(setting: Setting, env: Mapping[str, str], flags: Mapping[str, object] | None) -> bool:
    """True when the user set it, by flag or variable."""
    if (flags or {}).get(setting.field) is not None:
        return True
    return bool(setting.env and (env.get(setting.env) or "").strip())


def plugin_value(field_name: str, env: Mapping[str, str] | None = None) -> object:
    """A setting as the in-process plugin reads it: a bad value warns and the default
    applies (the plugin never stops the application)."""
    env = os.environ if env is None else env
    return read(env, fields=(field_name,), lenient=True)[field_name]


def plugin_flag(field_name: str, env: Mapping[str, str] | None = None) -> bool:
    """A plugin setting that is a boolean."""
    return bool(plugin_value(field_name, env))
