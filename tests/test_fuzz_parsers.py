"""Fuzzing every parser of kernel and runtime text (issue 11, part 5).

Each parser gets hypothesis-generated input built from its real grammar (real
keys, separators and sample lines, mutated) mixed with arbitrary bytes, and
must return normally (never raise) within a per-input deadline.

The budget is fixed: ``derandomize=True`` makes each run try the same inputs
(so CI is deterministic), and ``FUZZ_EXAMPLES`` inputs per parser keep the
whole file well under the CI's 2-minute share. A longer hunt:
``OTEL_PAGECACHE_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q
tests/test_fuzz_parsers.py --hypothesis-show-statistics``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_pagecache import cgroupfs, containers, memstat
from otel_pagecache.containers import Enricher, Identity, identify, identify_process
from otel_pagecache.correlation import parse_registry
from otel_pagecache.doctor import cgroup_mounts
from otel_pagecache.runtime_metadata import (
    MetadataFiles,
    containerd_meta,
    crio_meta,
    docker_meta,
    storage_index,
)

FUZZ_EXAMPLES = int(os.environ.get("OTEL_PAGECACHE_FUZZ_EXAMPLES", "250"))
# Bounded time per input: generous for a contended machine (a load of 35 on
# 2 CPUs took one input 1.3 s), yet far below what a quadratic blow-up or a
# catastrophic regex backtrack on these sizes would take.
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

CID = "31cb02944da7a12196a193cf0e0f6c226d7c453a1db62e65ba98287593a2ee30"
POD_UID = "0b1d6a6c-3c5d-4f6e-8f9a-1b2c3d4e5f60"

# ---------------------------------------------------------------- strategies

_NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=2**70).map(str),
    st.integers(min_value=-(2**70), max_value=-1).map(str),
    st.sampled_from(["", "max", "-", "1e9", "0x10", "١٢٣", "9" * 400, "nan", " 12", "12 "]),
)


def _keyed_lines(keys: list[bytes]) -> st.SearchStrategy[bytes]:
    """``key value`` files (memory.stat, memory.events): real keys, odd values,
    random junk lines, any line ending."""
    line = st.one_of(
        st.tuples(st.sampled_from(keys), _NUMBERS).map(lambda kv: kv[0] + b" " + kv[1].encode()),
        st.tuples(st.sampled_from(keys), st.binary(max_size=20)).map(lambda kv: kv[0] + kv[1]),
        st.binary(max_size=40),
    )
    ending = st.sampled_from([b"\n", b"\r\n", b"", b"\0", b" \n"])
    return st.lists(st.tuples(line, ending), max_size=60).map(
        lambda lines: b"".join(text + end for text, end in lines)
    )


_STAT_KEYS = [needle.strip() for needle, _ in memstat.V1_STAT_KEYS + memstat.V2_STAT_KEYS] + [
    b"total_cache",
    b"hierarchical_memory_limit",
]
_EVENT_KEYS = [b"low", b"high", b"max", b"oom", b"oom_kill", b"oom_group_kill"]
_PRESSURE = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from([b"some", b"full", b"some ", b"", b"total=1"]),
            st.lists(
                st.one_of(
                    _NUMBERS.map(lambda n: b"total=" + n.encode()),
                    st.sampled_from([b"avg10=0.00", b"avg60=12.5", b"avg300=", b"total", b"="]),
                    st.binary(max_size=12),
                ),
                max_size=6,
            ),
        ).map(lambda t: b" ".join([t[0], *t[1]])),
        st.binary(max_size=40),
    ),
    max_size=6,
).map(b"\n".join)

_PATH_PARTS = st.one_of(
    st.sampled_from(
        [
            "kubepods.slice",
            "kubepods-burstable.slice",
            f"kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice",
            f"pod{POD_UID}",
            f"docker-{CID}.scope",
            f"cri-containerd-{CID}.scope",
            f"crio-{CID}",
            f"crio-conmon-{CID}.scope",
            f"libpod-{CID}.scope",
            f"libpod-conmon-{CID}",
            f"system.slice:cri-containerd:{CID}",
            "lxc.payload.web",
            "lxc.monitor.web",
            "ecs",
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef-1234",
            CID,
            "docker",
            "libpod_parent",
            "..",
            ".",
            "",
        ]
    ),
    st.text(max_size=30),
)
_CGROUP_PATHS = st.lists(_PATH_PARTS, max_size=8).map(lambda parts: "/" + "/".join(parts))

_PROC_CGROUP = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["0", "4", "12", "", "x", "٤", "-1"]),
            st.sampled_from(["", "memory", "cpu,cpuacct", "name=systemd", "memory,,", ":"]),
            st.one_of(_CGROUP_PATHS, st.text(max_size=20)),
        ).map(":".join),
        st.text(max_size=40),
    ),
    max_size=8,
).map("\n".join)

# 36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory
_MOUNTINFO_LINE = st.one_of(
    st.just("36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory"),
    st.tuples(
        st.lists(st.text(alphabet=" /:,0123456789abcdefrw-", max_size=12), max_size=8),
        st.sampled_from([" - ", " -", "- ", " - - "]),
        st.sampled_from(["cgroup", "cgroup2", "tmpfs", "", " "]),
        st.text(max_size=20),
    ).map(lambda t: " ".join(t[0]) + t[1] + t[2] + " " + t[3]),
    st.text(max_size=60),
)
_MOUNTINFO = st.lists(_MOUNTINFO_LINE, max_size=10).map("\n".join)

_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
_ANNOTATION_KEYS = st.sampled_from(
    [
        "io.kubernetes.cri.container-type",
        "io.kubernetes.cri.container-name",
        "io.kubernetes.cri.sandbox-namespace",
        "io.kubernetes.cri.sandbox-name",
        "io.kubernetes.cri.sandbox-uid",
        "io.kubernetes.cri-o.ContainerType",
        "io.kubernetes.container.name",
        "io.kubernetes.pod.namespace",
        "io.kubernetes.pod.name",
        "io.kubernetes.pod.uid",
        "io.kubernetes.docker.type",
    ]
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(_ANNOTATION_KEYS, st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=20,
)
_METADATA = st.one_of(
    # Well-formed documents of each runtime's shape with odd values ...
    st.dictionaries(
        st.sampled_from(["annotations", "Config", "Labels", "id"]),
        st.one_of(
            st.dictionaries(
                st.sampled_from(["Labels", "annotations"]),
                st.dictionaries(_ANNOTATION_KEYS, _JSON_VALUES, max_size=6),
            ),
            st.dictionaries(_ANNOTATION_KEYS, _JSON_VALUES, max_size=6),
            _JSON_VALUES,
        ),
        max_size=4,
    ).map(lambda d: json.dumps(d).encode()),
    # ... cut short at any byte (a runtime caught mid-write) ...
    st.tuples(
        st.dictionaries(_ANNOTATION_KEYS, _JSON_SCALARS, max_size=5), st.integers(0, 400)
    ).map(lambda t: json.dumps({"annotations": t[0], "Config": {"Labels": t[0]}}).encode()[: t[1]]),
    # ... deeply nested, or not JSON at all.
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 5000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.binary(max_size=200),
)

# Kubelet log layout: /var/log/pods/<namespace>_<pod-name>_<pod-uid>/<container>/<n>.log
_FILE_NAME = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=60,
).filter(lambda name: name not in (".", "..") and len(name.encode()) <= 255)
_POD_DIR_NAME = st.one_of(
    st.tuples(
        st.sampled_from(["default", "kube-system", "", "a_b"]),
        st.sampled_from(["web-0", "", "x"]),
        st.sampled_from([POD_UID, POD_UID.replace("-", ""), "", "not-a-uid"]),
    ).map("_".join),
    _FILE_NAME,
)
_LOG_TARGET = st.one_of(
    st.just(f"/var/lib/docker/containers/{CID}/{CID}-json.log"),
    st.text(min_size=1, max_size=120).filter(lambda t: "\0" not in t and len(t.encode()) < 4000),
)


# ---------------------------------------------------------------- kernel text


@FUZZ
@given(_keyed_lines(_STAT_KEYS))
def test_memory_stat_never_raises(data: bytes) -> None:
    for keys in (memstat.V1_STAT_KEYS, memstat.V2_STAT_KEYS):
        parsed = memstat.parse_flat_keyed(data, keys)
        assert all(isinstance(v, int) and v >= 0 for v in parsed.values())


@FUZZ
@given(_keyed_lines(_EVENT_KEYS))
def test_memory_events_never_raises(data: bytes) -> None:
    parsed = memstat.parse_flat_keyed(data, memstat._EVENT_KEYS)
    assert set(parsed) <= {"max", "oom", "oom_kill"}


@FUZZ
@given(_PRESSURE)
def test_memory_pressure_never_raises(data: bytes) -> None:
    parsed = memstat.parse_pressure_totals(data)
    assert set(parsed) <= {"some", "full"}
    assert all(v >= 0 for v in parsed.values())


@FUZZ
@given(st.one_of(_NUMBERS.map(str.encode), st.binary(max_size=40)))
def test_single_values_and_meminfo_never_raise(data: bytes) -> None:
    value = memstat.parse_single_value(data)
    assert value is None or value >= 0
    memstat.parse_meminfo(data)
    memstat.parse_meminfo(b"Active(file): " + data + b" kB\n" + data)


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            name: st.one_of(_keyed_lines(_STAT_KEYS), _NUMBERS.map(str.encode), _PRESSURE)
            for name in (
                "memory.stat",
                "memory.usage_in_bytes",
                "memory.limit_in_bytes",
                "memory.failcnt",
                "memory.current",
                "memory.max",
                "memory.events",
                "memory.pressure",
            )
        }
    ),
    st.sampled_from([1, 2]),
)
def test_memcg_directory_never_raises(files: dict[str, bytes], version: int) -> None:
    """The whole reader on a directory of garbage files, both hierarchy versions."""
    with tempfile.TemporaryDirectory() as directory:
        for name, content in files.items():
            Path(directory, name).write_bytes(content)
        stats = memstat.ReadStats()
        reading = memstat.read_memcg(directory, version, stats)
        assert reading.present and stats.errors == 0


# ---------------------------------------------------------------- /proc and mounts


@FUZZ
@given(_PROC_CGROUP)
def test_proc_cgroup_never_raises(text: str) -> None:
    for _, controllers, path in containers.parse_proc_cgroup(text):
        assert path.startswith("/") and all(controllers)
    assert isinstance(identify_process(text), Identity)
    with tempfile.TemporaryDirectory() as proc:
        os.mkdir(os.path.join(proc, "1"))
        Path(proc, "1", "cgroup").write_text(text, errors="surrogateescape")
        for version in (1, 2):
            assert cgroupfs.own_cgroup_path(version, proc, "1").startswith("/")


@FUZZ
@given(_MOUNTINFO)
def test_mountinfo_never_raises(text: str) -> None:
    for mount in cgroup_mounts(text):
        assert mount.startswith(("cgroup ", "cgroup2 "))


@FUZZ
@given(st.one_of(st.binary(max_size=40), st.integers(0, 2**70).map(lambda n: b"%d 4096 32" % n)))
def test_span_slot_registry_never_raises(data: bytes) -> None:
    parse_registry(data)


# ---------------------------------------------------------------- cgroup paths


@FUZZ
@given(_CGROUP_PATHS)
def test_cgroup_paths_never_raise(path: str) -> None:
    identity = identify(path)
    assert isinstance(identity, Identity)
    assert all(isinstance(v, (str, int)) for v in identity.resource_attributes().values())


# ---------------------------------------------------------------- runtime files


@FUZZ
@given(_METADATA)
def test_runtime_metadata_never_raises(document: bytes) -> None:
    """Each runtime's parser, through the change-aware file cache the agent uses."""
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "config.json")
        Path(path).write_bytes(document)
        # One cache per parser: a cache keys by path, one parser per file.
        for parse in (docker_meta, containerd_meta, crio_meta):
            meta = MetadataFiles(refresh_seconds=0).get(path, parse, 0.0)
            if meta is not None:
                for value in (
                    meta.name,
                    meta.image_name,
                    meta.image_id,
                    meta.k8s_container_name,
                    meta.namespace,
                    meta.pod_name,
                    meta.pod_uid,
                ):
                    assert value is None or isinstance(value, str)
                assert all(isinstance(tag, str) for tag in meta.image_tags)
        index = MetadataFiles(refresh_seconds=0).get(path, storage_index, 0.0)
        assert index is None or isinstance(index, dict)


@FUZZ
@given(_METADATA, st.sampled_from(["docker", "containerd", "cri-o", "podman"]))
def test_enricher_with_garbage_metadata_never_raises(document: bytes, runtime: str) -> None:
    """Through the Enricher, as the agent calls it, for each runtime's file."""
    with tempfile.TemporaryDirectory() as root:
        paths = {
            "docker": (f"docker/containers/{CID}/config.v2.json", f"/docker-{CID}.scope"),
            "containerd": (
                f"containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/config.json",
                f"/cri-containerd-{CID}.scope",
            ),
            "cri-o": (
                f"crio/overlay-containers/{CID}/userdata/config.json",
                f"/crio-{CID}.scope",
            ),
            "podman": ("storage/overlay-containers/containers.json", f"/libpod-{CID}.scope"),
        }
        relative, cgroup = paths[runtime]
        target = Path(root, relative)
        target.parent.mkdir(parents=True)
        target.write_bytes(document)
        enricher = Enricher(
            pod_log_root=os.path.join(root, "pods"),
            containerd_state_root=os.path.join(root, "containerd"),
            crio_state_root=os.path.join(root, "crio"),
            docker_root=os.path.join(root, "docker"),
            storage_root=os.path.join(root, "storage"),
        )
        assert isinstance(enricher.enrich(identify(cgroup)), Identity)


@FUZZ
@given(
    st.lists(_POD_DIR_NAME, max_size=4, unique=True),
    st.lists(_FILE_NAME, max_size=3, unique=True),
    st.lists(_LOG_TARGET, max_size=3),
)
def test_kubelet_log_paths_never_raise(
    pod_dirs: list[str], container_dirs: list[str], targets: list[str]
) -> None:
    """Odd pod directory names, container directory names and log symlink targets
    under the kubelet's log root, read through the Enricher."""
    with tempfile.TemporaryDirectory() as root:
        pods = Path(root, "pods")
        pods.mkdir()
        for pod in [*pod_dirs, f"default_web-0_{POD_UID}"]:
            if (pods / pod).exists():
                continue
            (pods / pod).mkdir()
            for name in container_dirs:
                (pods / pod / name).mkdir()
                for n, target in enumerate(targets):
                    os.symlink(target, pods / pod / name / f"{n}.log")
        enricher = Enricher(
            pod_log_root=str(pods),
            containerd_state_root=os.path.join(root, "none"),
            crio_state_root=os.path.join(root, "none"),
            docker_root=os.path.join(root, "none"),
        )
        cgroup = f"/kubepods/besteffort/pod{POD_UID}/{CID}"
        identity = enricher.enrich(identify(cgroup))
        assert identity.pod_uid == POD_UID
