"""Tests for otel_pagecache.runtime_metadata: the runtimes' files, and their cache.

Docker's ``config.v2.json`` and podman's ``containers.json`` under
``tests/fixtures/runtimes/`` were written by the real runtimes on this machine
(Debian docker.io 20.10, podman 4.3; see tests/test_real_containers.py for the
same read on live files). containerd/CRI and CRI-O cannot run here: their
``config.json`` fixtures are built from the shapes of real files (OCI runtime
spec, annotations as those runtimes write them), so only those are fixture-only.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_pagecache.cgroupfs import MemoryHierarchy
from otel_pagecache.config import Settings
from otel_pagecache.containers import Enricher, Identity, identify
from otel_pagecache.residency import ResidencyReader
from otel_pagecache.runtime_metadata import (
    MetadataFiles,
    MetadataPaths,
    RuntimeMeta,
    containerd_meta,
    crio_meta,
    docker_meta,
    driver_dirs,
    split_image_reference,
    storage_index,
)
from tests.cgroup_trees import write_v2_cgroup
from tests.manifests import daemonset_manifest

FIXTURES = Path(__file__).parent / "fixtures" / "runtimes"
DOCKER_ID = "b75835153e1dd9708213c27802d5aa18b8ac34e9c0e7d82014200aa6ed9fae1d"
PODMAN_ID = "37c32838ee9d8dc9a93193ac0634dddb1c8116e3d1fd00dd4a873d8adf8ee1a5"
PODMAN_IMAGE = "426c95e5e4ba6718d0f20bb4d83d8dea24dfc8eb0103f791ce1e123cdbbcda90"
CRI_ID = "713a77a26fe2a38ebebd5709604a048c3d380db1eb16aa43aca0b2499e54733c"
SANDBOX_ID = "05c48c82caff3be3d7f1e896981dd410e81487538936914f32b624d168de9db0"
CRIO_IMAGE = "1f3c3b1c7a1e0f5a2b9a5ad1e6bbf5d2a6e0c2f3f4b4f2e47b8d0b8a2b6e5c11"
POD_UID = "4415fd05-2c0f-4533-909b-f2180dca8d7c"


def fixture(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


# --- One file each ----------------------------------------------------------------


def test_docker_config_v2() -> None:
    assert docker_meta(fixture("docker-config.v2.json")) == RuntimeMeta(
        runtime="docker",
        name="probe-web",
        image_name="otelpc-busybox",
        image_tags=("1.0",),
        image_id="sha256:41cd7c349164d06ef8c35fb59360b69a3db6e5d215092adcdcb1ab784011d8a0",
    )


def test_podman_containers_json() -> None:
    assert storage_index(fixture("podman-containers.json")) == {
        PODMAN_ID: RuntimeMeta(
            runtime="podman",
            name="probe-pm",
            image_name="localhost/otelpc-busybox",
            image_tags=("2.0",),
            image_id=f"sha256:{PODMAN_IMAGE}",
        )
    }


# What both CRI files say about the same nginx container of pod shop/web-0.
NGINX_META = {
    "is_sandbox": False,
    "name": "nginx",
    "image_name": "docker.io/library/nginx",
    "image_tags": ("1.27",),
    "k8s_container_name": "nginx",
    "namespace": "shop",
    "pod_name": "web-0",
    "pod_uid": POD_UID,
}


def test_containerd_bundle_config() -> None:
    meta = containerd_meta(fixture("containerd-config.json"))
    assert meta == RuntimeMeta(runtime="containerd", **NGINX_META)  # no image id: not recorded
    sandbox = containerd_meta(fixture("containerd-sandbox-config.json"))
    assert sandbox is not None and sandbox.is_sandbox is True and sandbox.name is None


def test_crio_config() -> None:
    meta = crio_meta(fixture("crio-config.json"))
    assert meta == RuntimeMeta(runtime="cri-o", image_id=f"sha256:{CRIO_IMAGE}", **NGINX_META)


def test_crio_repo_digest_image_ref_is_not_an_id() -> None:
    # Newer CRI-O writes a repo digest into ImageRef; only Image is then the id.
    document = fixture("crio-config.json")
    notes = document["annotations"]  # type: ignore[index]
    notes["io.kubernetes.cri-o.ImageRef"] = f"docker.io/library/nginx@sha256:{'ab' * 32}"
    meta = crio_meta(document)
    assert meta is not None and meta.image_id == f"sha256:{CRIO_IMAGE}"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("nginx", ("nginx", (), None)),
        ("nginx:1.27", ("nginx", ("1.27",), None)),
        ("docker.io/library/nginx:1.27", ("docker.io/library/nginx", ("1.27",), None)),
        ("localhost:5000/app", ("localhost:5000/app", (), None)),
        ("localhost:5000/app:v2", ("localhost:5000/app", ("v2",), None)),
        (f"nginx:1.27@sha256:{'ab' * 32}", ("nginx", ("1.27",), None)),
        (f"nginx@sha256:{'ab' * 32}", ("nginx", (), None)),
        (f"sha256:{'ab' * 32}", (None, (), f"sha256:{'ab' * 32}")),
        ("ab" * 32, (None, (), f"sha256:{'ab' * 32}")),
        ("", (None, (), None)),
        ("bad name:1", (None, (), None)),
        (7, (None, (), None)),
        (None, (None, (), None)),
    ],
)
def test_split_image_reference(reference: object, expected: tuple) -> None:
    assert split_image_reference(reference) == expected


# --- The files laid out as on a node ------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    """Every runtime's data root, with one container each, as the runtimes lay them out."""
    roots = {
        "docker_root": tmp_path / "var/lib/docker",
        "storage_root": tmp_path / "var/lib/containers/storage",
        "crio_state_root": tmp_path / "run/containers/storage",
        "containerd_state_root": tmp_path / "run/containerd",
        "pod_log_root": tmp_path / "var/log/pods",
    }
    places = {
        "docker-config.v2.json": f"docker_root/containers/{DOCKER_ID}/config.v2.json",
        "podman-containers.json": "storage_root/vfs-containers/containers.json",
        "containerd-config.json": (
            f"containerd_state_root/io.containerd.runtime.v2.task/k8s.io/{CRI_ID}/config.json"
        ),
        "containerd-sandbox-config.json": (
            f"containerd_state_root/io.containerd.runtime.v2.task/k8s.io/{SANDBOX_ID}/config.json"
        ),
        "crio-config.json": f"crio_state_root/overlay-containers/{CRI_ID}/userdata/config.json",
    }
    for name, place in places.items():
        root, rest = place.split("/", 1)
        target = roots[root] / rest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / name, target)
    roots["pod_log_root"].mkdir(parents=True)
    return roots


def make_enricher(node: dict[str, Path], refresh: float = 10.0) -> tuple[Enricher, list[float]]:
    enricher = Enricher(**{k: str(v) for k, v in node.items()}, refresh_seconds=refresh)
    now = [1000.0]
    enricher._clock = lambda: now[0]
    return enricher, now


POD = {
    "k8s.pod.uid": POD_UID,
    "k8s.namespace.name": "shop",
    "k8s.pod.name": "web-0",
    "pagecache.k8s.qos_class": "burstable",
}
NGINX_IN_POD = {
    "container.id": CRI_ID,
    "container.name": "nginx",
    "container.image.name": "docker.io/library/nginx",
    "container.image.tags": ("1.27",),
    "k8s.container.name": "nginx",
    **POD,
    "pagecache.cgroup.kind": "container",
}
POD_SLICE = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod4415fd05_2c0f_4533_909b_f2180dca8d7c.slice"
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            f"/docker/{DOCKER_ID}",
            {
                "container.id": DOCKER_ID,
                "container.runtime.name": "docker",
                "container.name": "probe-web",
                "container.image.name": "otelpc-busybox",
                "container.image.id": (
                    "sha256:41cd7c349164d06ef8c35fb59360b69a3db6e5d215092adcdcb1ab784011d8a0"
                ),
                "container.image.tags": ("1.0",),
                "pagecache.cgroup.kind": "container",
            },
        ),
        (
            f"/libpod_parent/libpod-{PODMAN_ID}",
            {
                "container.id": PODMAN_ID,
                "container.runtime.name": "podman",
                "container.name": "probe-pm",
                "container.image.name": "localhost/otelpc-busybox",
                "container.image.id": f"sha256:{PODMAN_IMAGE}",
                "container.image.tags": ("2.0",),
                "pagecache.cgroup.kind": "container",
            },
        ),
        (
            f"{POD_SLICE}/cri-containerd-{CRI_ID}.scope",
            {"container.runtime.name": "containerd", **NGINX_IN_POD},
        ),
        (
            f"{POD_SLICE}/crio-{CRI_ID}.scope",
            {
                "container.runtime.name": "cri-o",
                "container.image.id": f"sha256:{CRIO_IMAGE}",
                **NGINX_IN_POD,
            },
        ),
        (
            # The pause sandbox: neither its id nor the pause image is reported.
            f"{POD_SLICE}/cri-containerd-{SANDBOX_ID}.scope",
            {"container.runtime.name": "containerd", **POD, "pagecache.cgroup.kind": "sandbox"},
        ),
    ],
)
def test_every_runtime_named_from_its_files(
    node: dict[str, Path], path: str, expected: dict
) -> None:
    enricher, _ = make_enricher(node)
    assert enricher.enrich(identify(path)).resource_attributes() == expected
    assert enricher.take_read_errors() == 0


def test_overlay_driver_directory_is_read_too(node: dict[str, Path]) -> None:
    storage = node["storage_root"]
    (storage / "vfs-containers").rename(storage / "overlay-containers")
    enricher, _ = make_enricher(node)
    identity = enricher.enrich(identify(f"/machine.slice/libpod-{PODMAN_ID}.scope"))
    assert identity.name == "probe-pm"
    assert driver_dirs(str(storage)) == ["overlay-containers"]


def test_driver_dirs_put_overlay_first(tmp_path: Path) -> None:
    for name in ("vfs-containers", "overlay-containers", "btrfs-containers", "overlay-layers"):
        (tmp_path / name).mkdir()
    (tmp_path / "zfs-containers").write_text("not a directory")
    assert driver_dirs(str(tmp_path)) == [
        "overlay-containers",
        "btrfs-containers",
        "vfs-containers",
    ]
    assert driver_dirs(str(tmp_path / "missing")) == []


def test_unknown_podman_id_and_other_runtimes_stay_unnamed(node: dict[str, Path]) -> None:
    enricher, _ = make_enricher(node)
    other = "ff" * 32
    assert enricher.enrich(identify(f"/libpod_parent/libpod-{other}")).name is None
    lxc = identify("/lxc.payload.web")
    assert enricher.enrich(lxc) == lxc
    assert enricher.take_read_errors() == 0


# --- The cache ----------------------------------------------------------------------


class CountingParser:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, document: object) -> object:
        self.calls += 1
        return document


def test_unchanged_file_is_parsed_once(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"a": 1}')
    files, parse = MetadataFiles(refresh_seconds=10), CountingParser()
    for now in (0.0, 5.0, 10.0, 20.0, 3600.0):
        assert files.get(str(path), parse, now) == {"a": 1}
    assert parse.calls == 1


def test_changed_file_is_read_again_after_the_refresh(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"name": "before"}')
    files, parse = MetadataFiles(refresh_seconds=10), CountingParser()
    assert files.get(str(path), parse, 0.0) == {"name": "before"}
    # Runtimes write a new file and rename it into place: a new inode.
    fresh = tmp_path / "config.json.tmp"
    fresh.write_text('{"name": "after!"}')
    os.replace(fresh, path)
    assert files.get(str(path), parse, 5.0) == {"name": "before"}  # not looked at yet
    assert files.get(str(path), parse, 10.0) == {"name": "after!"}
    assert parse.calls == 2


def test_missing_file_is_retried_after_the_refresh_and_is_no_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    files = MetadataFiles(refresh_seconds=10)
    assert files.get(str(path), CountingParser(), 0.0) is None
    path.write_text('{"a": 1}')
    assert files.get(str(path), CountingParser(), 9.0) is None  # the miss backoff
    assert files.get(str(path), CountingParser(), 10.0) == {"a": 1}
    assert files.read_errors == 0


def test_file_being_written_is_counted_then_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    whole = json.dumps({"Name": "/web", "Config": {"Image": "nginx:1.27"}})
    path.write_text(whole[: len(whole) // 2])  # a writer that does not rename into place
    files = MetadataFiles(refresh_seconds=10)
    assert files.get(str(path), docker_meta, 0.0) is None
    assert files.read_errors == 1
    path.write_text(whole)
    meta = files.get(str(path), docker_meta, 10.0)
    assert meta is not None and (meta.name, meta.image_name) == ("web", "nginx")
    assert files.read_errors == 1


def _named_web(tmp_path: Path) -> tuple[Path, MetadataFiles]:
    """A Docker config naming "web", read once at t=0 with a 10 s refresh."""
    path = tmp_path / "config.json"
    path.write_text('{"Name": "/web"}')
    files = MetadataFiles(refresh_seconds=10)
    assert files.get(str(path), docker_meta, 0.0).name == "web"
    return path, files


def test_garbage_after_a_good_read_keeps_the_last_good_value(tmp_path: Path) -> None:
    path, files = _named_web(tmp_path)
    path.write_bytes(b"\x00garbage")
    assert files.get(str(path), docker_meta, 10.0).name == "web"
    assert files.read_errors == 1


def test_vanished_file_keeps_its_value_until_evicted(tmp_path: Path) -> None:
    path, files = _named_web(tmp_path)
    path.unlink()
    assert files.get(str(path), docker_meta, 10.0).name == "web"
    files.evict_unused(older_than=11.0)
    assert len(files) == 0
    assert files.get(str(path), docker_meta, 20.0) is None
    assert files.read_errors == 0


@pytest.mark.parametrize(
    ("content", "why"),
    [(b" " * (5 << 20) + b"{}", "oversized"), (b"[" * 100_000, "too deep")],
)
def test_oversized_or_too_deep_files_are_errors(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    files = MetadataFiles()
    assert files.get(str(path), docker_meta, 0.0) is None, why
    assert files.read_errors == 1


def test_unreadable_path_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()  # open() fails as on an unreadable file
    files = MetadataFiles()
    assert files.get(str(tmp_path / "config.json"), docker_meta, 0.0) is None
    assert files.read_errors == 1


def test_parser_bug_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")

    def broken(_document: object) -> object:
        raise KeyError("bug")

    files = MetadataFiles()
    assert files.get(str(path), broken, 0.0) is None
    assert files.read_errors == 1


def test_enricher_counts_errors_once_and_hands_them_over(node: dict[str, Path]) -> None:
    config = node["docker_root"] / "containers" / DOCKER_ID / "config.v2.json"
    config.write_text('{"Name": "/half')
    enricher, now = make_enricher(node, refresh=10)
    identity = identify(f"/docker/{DOCKER_ID}")
    for _ in range(3):  # the same cycle's repeats do not count again
        assert enricher.enrich(identity) == identity
    assert enricher.take_read_errors() == 1
    assert enricher.take_read_errors() == 0
    now[0] += 10
    enricher.enrich(identity)
    assert enricher.take_read_errors() == 1


def test_enricher_reads_each_file_once_per_refresh(
    node: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_open = open

    def counting_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).startswith((str(node["docker_root"]), str(node["storage_root"]))):
            opened.append(str(path))
        return real_open(path, *args, **kwargs)

    enricher, now = make_enricher(node, refresh=10)
    paths = [f"/docker/{DOCKER_ID}", f"/libpod_parent/libpod-{PODMAN_ID}"]
    monkeypatch.setattr("builtins.open", counting_open)
    for _ in range(50):  # 50 collections within one refresh period
        for path in paths:
            enricher.enrich(identify(path))
    assert len(opened) == 2
    now[0] += 10
    for path in paths:
        assert enricher.enrich(identify(path)).name in ("probe-web", "probe-pm")
    assert len(opened) == 4  # looked at again (fstat), not parsed again


# --- Garbage never raises (hypothesis) --------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Name",
                    "Image",
                    "Config",
                    "Labels",
                    "annotations",
                    "id",
                    "names",
                    "image",
                    "metadata",
                    "io.kubernetes.cri.image-name",
                    "io.kubernetes.cri-o.ImageName",
                    "io.kubernetes.cri-o.ContainerType",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def _well_formed(meta: RuntimeMeta | None) -> None:
    if meta is None:
        return
    for value in (meta.name, meta.image_name, meta.image_id):
        assert value is None or (isinstance(value, str) and value)
    assert all(isinstance(tag, str) and tag for tag in meta.image_tags)
    assert meta.image_id is None or meta.image_id.startswith("sha256:")


@settings(max_examples=100, deadline=None)
@given(_JSON)
def test_parsers_never_raise(document: object) -> None:
    for parse in (docker_meta, containerd_meta, crio_meta):
        _well_formed(parse(document))
    for meta in storage_index(document).values():
        _well_formed(meta)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"id": st.text(max_size=8)},
            optional={
                "names": _JSON,
                "image": _JSON,
                "metadata": _JSON.map(json.dumps) | _JSON,
            },
        ),
        max_size=4,
    )
)
def test_containers_json_entries_never_raise(entries: list) -> None:
    for meta in storage_index(entries).values():
        _well_formed(meta)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_split_image_reference_never_raises(text: str) -> None:
    name, tags, image = split_image_reference(text)
    assert name is None or (name and "@" not in name)
    assert all(tags) and (image is None or image.startswith("sha256:"))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_metadata_files_never_raise_on_bytes(tmp_path_factory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("garbage") / "config.v2.json"
    path.write_bytes(content)
    files = MetadataFiles()
    _well_formed(files.get(str(path), docker_meta, 0.0))


def test_identity_without_metadata_is_unchanged_by_enrichment(tmp_path: Path) -> None:
    gone = str(tmp_path / "nowhere")
    enricher = Enricher(gone, gone, gone, gone, gone)
    for path in (f"/docker/{DOCKER_ID}", f"/libpod_parent/libpod-{PODMAN_ID}"):
        assert enricher.enrich(identify(path)) == identify(path)
    assert enricher.enrich(Identity(kind="system")) == Identity(kind="system")


def test_snapshot_counts_metadata_errors_in_read_errors(
    node: dict[str, Path], tmp_path: Path
) -> None:
    tree = tmp_path / "cgroup"
    write_v2_cgroup(tree, "/", {"file": 10})
    write_v2_cgroup(tree, f"/docker/{DOCKER_ID}", {"file": 5})
    write_v2_cgroup(tree, f"/libpod_parent/libpod-{PODMAN_ID}", {"file": 5})
    (node["docker_root"] / "containers" / DOCKER_ID / "config.v2.json").write_text('{"Na')
    enricher, _ = make_enricher(node)
    reader = ResidencyReader(MemoryHierarchy(2, str(tree)), str(tmp_path), enricher=enricher)
    snapshot = reader.read()
    names = {m.identity.container_id: m.identity.name for m in snapshot.memcgs}
    # The half-written Docker file: identity without the name, one read error.
    assert names == {None: None, DOCKER_ID: None, PODMAN_ID: "probe-pm"}
    assert snapshot.read_errors == 1
    assert reader.read().read_errors == 0  # not looked at again before the refresh


# --- The examples mount what is read -------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _metadata_files(paths: MetadataPaths) -> list[str]:
    return [
        paths.docker(DOCKER_ID),
        paths.storage("overlay-containers"),
        paths.crio("overlay-containers", CRI_ID),
        paths.containerd(CRI_ID),
    ]


def test_daemonset_mounts_every_default_data_root_read_only() -> None:
    manifest = daemonset_manifest()
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings = Settings.from_env({"OTEL_PAGECACHE_HOST_ROOT": env["OTEL_PAGECACHE_HOST_ROOT"]})
    paths = MetadataPaths(
        settings.docker_root,
        settings.storage_root,
        settings.crio_state_root,
        settings.containerd_state_root,
    )
    mounts = container["volumeMounts"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    for wanted in _metadata_files(paths):
        (mount,) = [m for m in mounts if wanted.startswith(m["mountPath"] + "/")]
        assert mount["readOnly"] is True
        # The same directory on both sides of the mount.
        assert mount["mountPath"] == "/host" + host_paths[mount["name"]]
    for path in host_paths.values():
        assert not path.endswith(".sock") and path not in ("/run/containerd", "/var/lib/docker")


def test_systemd_unit_keeps_data_roots_read_only_and_sockets_out_of_reach() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(EXAMPLES / "systemd" / "otel-pagecache.service")
    service = unit["Service"]
    read_only = [p.lstrip("-") for p in service["ReadOnlyPaths"].split()]
    for wanted in _metadata_files(MetadataPaths()):
        assert any(wanted.startswith(p + "/") for p in read_only), wanted
    hidden = service["InaccessiblePaths"].split()
    assert {"-/run/docker.sock", "-/run/containerd/containerd.sock"} <= set(hidden)


def test_data_root_settings_default_under_the_host_root_and_can_be_set() -> None:
    rooted = Settings.from_env({"OTEL_PAGECACHE_HOST_ROOT": "/host"})
    assert (
        rooted.docker_root,
        rooted.storage_root,
        rooted.crio_state_root,
        rooted.containerd_state_root,
    ) == (
        "/host/var/lib/docker",
        "/host/var/lib/containers/storage",
        "/host/run/containers/storage",
        "/host/run/containerd",
    )
    explicit = Settings.from_env(
        {
            "OTEL_PAGECACHE_HOST_ROOT": "/host",
            "OTEL_PAGECACHE_DOCKER_DATA_ROOT": "/data/docker",
            "OTEL_PAGECACHE_CONTAINERS_STORAGE_ROOT": "/home/u/.local/share/containers/storage",
            "OTEL_PAGECACHE_CONTAINERS_RUN_ROOT": "/run/user/1000/containers",
            "OTEL_PAGECACHE_CONTAINERD_STATE_ROOT": "/run/k3s/containerd",
        }
    )
    assert (
        explicit.docker_root,
        explicit.storage_root,
        explicit.crio_state_root,
        explicit.containerd_state_root,
    ) == (
        "/data/docker",
        "/home/u/.local/share/containers/storage",
        "/run/user/1000/containers",
        "/run/k3s/containerd",
    )
