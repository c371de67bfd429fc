"""Name the container, pod or host unit behind a memory cgroup.

``identify()`` reads nothing but the cgroup path: every container runtime
writes its container id into the cgroup name, so a path is enough to say
"docker container 9ec3…" or "pod 4415fd05-…". What a path cannot say (the
container's name and image, the Kubernetes names, and whether a CRI container
is the pod's pause sandbox) the ``Enricher`` learns from the runtimes' own
metadata files (``runtime_metadata.py``) and the kubelet's log directory on
the node.

Rule for nesting (kind nodes, Docker-in-Docker): the deepest component that is
recognised wins, and anything below it belongs to it. ``/docker/<node>/kubepods
/burstable/pod<uid>/<cid>`` is the inner container ``<cid>``;
``/docker/<id>/init`` is still container ``<id>``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

from .config import Settings
from .runtime_metadata import (
    MetadataFiles,
    MetadataPaths,
    RuntimeMeta,
    containerd_meta,
    crio_meta,
    docker_meta,
    driver_dirs,
    storage_index,
)

KIND_CONTAINER = "container"
KIND_SANDBOX = "sandbox"
KIND_POD = "pod"
KIND_SYSTEM = "system"

QOS_GUARANTEED = "guaranteed"
QOS_BURSTABLE = "burstable"
QOS_BESTEFFORT = "besteffort"


@dataclass(frozen=True)
class Identity:
    """Who owns a memory cgroup. Only ``kind`` is always set."""

    kind: str  # "container" | "sandbox" | "pod" | "system"
    container_id: str | None = None
    runtime: str | None = None
    pod_uid: str | None = None  # always dashed, as the API server writes it
    qos_class: str | None = None
    namespace: str | None = None
    pod_name: str | None = None
    container_name: str | None = None  # k8s container name, or the LXC/Incus instance name
    ecs_task_id: str | None = None
    # From the runtime's metadata files (runtime_metadata.py), never from the path:
    name: str | None = None  # the runtime's own name for the container
    image_name: str | None = None  # without tag or digest
    image_tags: tuple[str, ...] = ()
    image_id: str | None = None

    def resource_attributes(self) -> dict[str, str | tuple[str, ...]]:
        # A sandbox id is plumbing nobody can act on; reporting it as
        # container.id would make the pause container look like a workload.
        container_id = None if self.kind == KIND_SANDBOX else self.container_id
        pairs = (
            ("container.id", container_id),
            ("container.runtime.name", self.runtime),
            ("container.name", self.name),
            ("container.image.name", self.image_name),
            ("container.image.id", self.image_id),
            ("container.image.tags", self.image_tags or None),
            ("k8s.pod.uid", self.pod_uid),
            ("k8s.namespace.name", self.namespace),
            ("k8s.pod.name", self.pod_name),
            ("k8s.container.name", self.container_name),
            # QoS class has no semantic convention, hence the product's namespace.
            ("pagecache.k8s.qos_class", self.qos_class),
            ("aws.ecs.task.id", self.ecs_task_id),
            ("pagecache.cgroup.kind", self.kind),
        )
        return {key: value for key, value in pairs if value is not None}


SYSTEM = Identity(kind=KIND_SYSTEM)

# --- Path patterns -----------------------------------------------------------
# Container ids are the full 64-hex ids the runtimes generate; anything shorter
# or non-hex is not taken for an id (a 32-hex systemd or cgroup-tool name is
# common on hosts, e.g. /process_api/86f57206afb296fade57dae22a6acfe5).
_ID = r"[0-9a-f]{64}"

# /system.slice/docker-9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d.scope
_DOCKER_SCOPE = re.compile(rf"docker-({_ID})\.scope")

# /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poddd1bf9d1_241d_47f5_8e25_12de83135812.slice/cri-containerd-f45298cd514d1930c4fe3afc4412e59547f7e3148fddd22ca33cefce046eb830.scope  # noqa: E501
_CONTAINERD_SCOPE = re.compile(rf"cri-containerd-({_ID})\.scope")

# /system.slice/containerd.service/kubepods-besteffort-pod2105e389_7471_476e_a50f_6074cef29bbd.slice:cri-containerd:d3d8ccf5cca91931c6285c1d7472c413dd5a7700fddc0aa9f89a9ac7008b003e  # noqa: E501
_CONTAINERD_COLON = re.compile(rf"(.*):cri-containerd:({_ID})")

# /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod487a0dc6dccaeefbcfedba7a7ce1ca18.slice/crio-7a1fd6fe8cdfbd44dc78c4cc85dad7031eaab4365801684cad0aabdeaf863f9e.scope  # noqa: E501
_CRIO = re.compile(rf"crio-({_ID})(?:\.scope)?")

# /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod487a0dc6dccaeefbcfedba7a7ce1ca18.slice/crio-conmon-7a1fd6fe8cdfbd44dc78c4cc85dad7031eaab4365801684cad0aabdeaf863f9e.scope  # noqa: E501
_CRIO_CONMON = re.compile(rf"crio-conmon-{_ID}(?:\.scope)?")

# "libpod-payload-<id>" is podman's --cgroups=split form (the quadlet default).
# /machine.slice/libpod-55ea3863351726184e26ca7418f577d04c96dac0009e1f088f6c0c7a1dc2ed7c.scope
_LIBPOD = re.compile(rf"libpod-(?:payload-)?({_ID})(?:\.scope)?")

# /machine.slice/libpod-conmon-6dd05e91f00f99281f70b1fd90a29e5cc30b0dab243cb7cfb6153d8017872394.scope  # noqa: E501
_LIBPOD_CONMON = re.compile(rf"libpod-conmon-{_ID}(?:\.scope)?")

# /osctl/pool.tank/group.default/user.alice/ct.ct1/user-owned/lxc.payload.ct1
_LXC_PAYLOAD = re.compile(r"lxc\.payload\.(.+)")

# Plain "lxc.monitor" is the pre-4.0 parent of per-container monitor cgroups.
# /osctl/pool.tank/group.default/user.alice/ct.ct1/user-owned/lxc.monitor.ct1
_LXC_MONITOR = re.compile(r"lxc\.monitor(?:\..+)?")

# 1:name=systemd:/ecs/34dc0b5e626f2c5c4c5170e34b10e765/34dc0b5e626f2c5c4c5170e34b10e765-1234567890
_FARGATE_CONTAINER = re.compile(r"([0-9a-f]{32})-[0-9]+")

# 11:hugetlb:/ecs/55091c13-b8cf-4801-b527-f4601742204d/432624d2150b349fe35ba397284dea788c2bf66b885d14dfc1569b01890ca7da  # noqa: E501
_ECS_TASK_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")

# /ecstasks.slice/ecstasks-488fc5b8b77f4fb7984bdc4aba948f9f.slice/docker-60ef727c9751aac9084702bca274544f94f1bb070ace95e8a79911c22b01a91d.scope  # noqa: E501
_ECSTASKS_SLICE = re.compile(
    r"ecstasks-([0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})\.slice"
)

# systemd escapes the pod uid's dashes as underscores in slice names; static
# (mirror) pods have a 32-hex uid without any.
# /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod4415fd05_2c0f_4533_909b_f2180dca8d7c.slice  # noqa: E501
_POD_SLICE = re.compile(
    r"(?:.*-)?kubepods-(?:(burstable|besteffort)-)?"
    r"pod([0-9a-f]{8}(?:_[0-9a-f]{4}){3}_[0-9a-f]{12}|[0-9a-f]{32})\.slice"
)

# /kubepods.slice/kubepods-besteffort.slice
_QOS_SLICE = re.compile(r"(?:.*-)?kubepods(?:-(burstable|besteffort))?\.slice")

# A pod uid as the API server writes it (dashed), or a static pod's 32 hex; the
# kubelet's log directories end with it.
# 74c13223-5a00-11e9-b385-42010a80018d
_POD_UID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}|[0-9a-f]{32}")

# /kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376  # noqa: E501
_POD_DIR = re.compile(rf"pod({_POD_UID.pattern})")

# 12:name=systemd:/docker/31cb02944da7a12196a193cf0e0f6c226d7c453a1db62e65ba98287593a2ee30
_BARE_ID = re.compile(_ID)

_CGROUPFS_QOS = (QOS_BURSTABLE, QOS_BESTEFFORT)


def identify(cgroup_path: str) -> Identity:
    """Identity of the cgroup at ``cgroup_path``; garbage gives kind "system", never an error."""
    if not isinstance(cgroup_path, str):
        return SYSTEM
    return _identify(cgroup_path.strip())


@lru_cache(maxsize=8192)
def _identify(path: str) -> Identity:
    parts = tuple(part for part in path.split("/") if part)
    for index in range(len(parts) - 1, -1, -1):
        hit = _classify(parts, index)
        if hit is not None:
            return _with_context(hit, parts, index)
    return SYSTEM


def _classify(parts: tuple[str, ...], index: int) -> Identity | None:
    # Monitors are ruled out first, so no looser container pattern can claim them.
    return (
        _monitor(parts[index])
        or _container(parts, index)
        or _pod(parts, index)
        or _qos_parent(parts, index)
    )


def _monitor(part: str) -> Identity | None:
    # conmon and the LXC monitor sit beside the container they watch: they
    # are runtime plumbing, so never a container id.
    if _CRIO_CONMON.fullmatch(part) or _LIBPOD_CONMON.fullmatch(part):
        return SYSTEM
    if _LXC_MONITOR.fullmatch(part):
        return SYSTEM
    return None


def _container(parts: tuple[str, ...], index: int) -> Identity | None:
    part = parts[index]
    for pattern, runtime in (
        (_DOCKER_SCOPE, "docker"),
        (_CONTAINERD_SCOPE, "containerd"),
        (_CRIO, "cri-o"),
        (_LIBPOD, "podman"),
    ):
        match = pattern.fullmatch(part)
        if match:
            return Identity(kind=KIND_CONTAINER, container_id=match.group(1), runtime=runtime)
    return _containerd_colon(part) or _lxc(parts, index) or _bare_or_ecs(parts, index)


def _containerd_colon(part: str) -> Identity | None:
    match = _CONTAINERD_COLON.fullmatch(part)
    if match is None:
        return None
    # The pod slice is part of the same component in this form.
    pod = _pod_slice(match.group(1))
    return Identity(
        kind=KIND_CONTAINER,
        container_id=match.group(2),
        runtime="containerd",
        pod_uid=pod.pod_uid if pod else None,
        qos_class=pod.qos_class if pod else None,
    )


def _lxc(parts: tuple[str, ...], index: int) -> Identity | None:
    match = _LXC_PAYLOAD.fullmatch(parts[index])
    if match:
        name = match.group(1)
    elif index == 1 and parts[0] == "lxc":
        # Before LXC 4.0 the payload lived at the top-level /lxc/<name>.
        name = parts[index]
    else:
        return None
    return Identity(kind=KIND_CONTAINER, container_id=name, runtime="lxc", container_name=name)


def _bare_or_ecs(parts: tuple[str, ...], index: int) -> Identity | None:
    part = parts[index]
    parent = parts[index - 1] if index > 0 else None
    if parent is None:
        return None
    fargate = _FARGATE_CONTAINER.fullmatch(part)
    if fargate and (parent == "ecs" or _is_ecs_task(parts, index - 1)):
        # Fargate names a container "<task id>-<digits>"; the engine behind it
        # is not visible from the node, so the platform is the runtime.
        return Identity(
            kind=KIND_CONTAINER, container_id=part, runtime="ecs", ecs_task_id=fargate.group(1)
        )
    if not _BARE_ID.fullmatch(part):
        return None
    if parent == "docker":
        return Identity(kind=KIND_CONTAINER, container_id=part, runtime="docker")
    if _is_ecs_task(parts, index - 1):
        # The ECS agent starts task containers through Docker with
        # CgroupParent=/ecs/<task id>.
        return Identity(
            kind=KIND_CONTAINER, container_id=part, runtime="docker", ecs_task_id=parent
        )
    if _pod(parts, index - 1) is not None:
        # The cgroupfs driver writes the bare id for docker and containerd
        # alike; the enricher names the runtime when it finds its metadata.
        return Identity(kind=KIND_CONTAINER, container_id=part)
    return None


def _is_ecs_task(parts: tuple[str, ...], index: int) -> bool:
    return bool(_ECS_TASK_ID.fullmatch(parts[index])) and "ecs" in parts[:index]


def _pod(parts: tuple[str, ...], index: int) -> Identity | None:
    part = parts[index]
    pod = _pod_slice(part)
    if pod is not None:
        return pod
    match = _POD_DIR.fullmatch(part)
    if match and index > 0:
        qos = _cgroupfs_pod_qos(parts, index)
        if qos is not None:
            return Identity(kind=KIND_POD, pod_uid=match.group(1), qos_class=qos)
    tasks = _ECSTASKS_SLICE.fullmatch(part)
    if tasks:
        return Identity(kind=KIND_POD, ecs_task_id=tasks.group(1))
    if _is_ecs_task(parts, index):
        return Identity(kind=KIND_POD, ecs_task_id=part)
    return None


def _pod_slice(part: str) -> Identity | None:
    match = _POD_SLICE.fullmatch(part)
    if match is None:
        return None
    return Identity(
        kind=KIND_POD,
        pod_uid=match.group(2).replace("_", "-"),
        qos_class=match.group(1) or QOS_GUARANTEED,
    )


def _cgroupfs_pod_qos(parts: tuple[str, ...], index: int) -> str | None:
    # Guaranteed pods sit directly under kubepods; the others under a QoS dir.
    parent = parts[index - 1]
    if parent == "kubepods":
        return QOS_GUARANTEED
    if parent in _CGROUPFS_QOS and index > 1 and parts[index - 2] == "kubepods":
        return parent
    return None


def _qos_parent(parts: tuple[str, ...], index: int) -> Identity | None:
    part = parts[index]
    match = _QOS_SLICE.fullmatch(part)
    if match:
        return Identity(kind=KIND_SYSTEM, qos_class=match.group(1))
    if part == "kubepods":
        return SYSTEM
    if part in _CGROUPFS_QOS and index > 0 and parts[index - 1] == "kubepods":
        return Identity(kind=KIND_SYSTEM, qos_class=part)
    return None


def _with_context(hit: Identity, parts: tuple[str, ...], index: int) -> Identity:
    """Add the pod or ECS task that encloses a container or monitor."""
    if hit.kind == KIND_POD or (hit.kind == KIND_SYSTEM and hit.qos_class is not None):
        return hit
    for above in range(index - 1, -1, -1):
        if _container(parts, above) is not None:
            break  # an outer container's pod is not this container's pod
        enclosing = _pod(parts, above)
        if enclosing is not None:
            return replace(
                hit,
                pod_uid=hit.pod_uid or enclosing.pod_uid,
                qos_class=hit.qos_class or enclosing.qos_class,
                ecs_task_id=hit.ecs_task_id or enclosing.ecs_task_id,
            )
    return hit


# --- /proc/<pid>/cgroup ------------------------------------------------------


def parse_proc_cgroup(text: str) -> list[tuple[str, list[str], str]]:
    """``hierarchy-id:controller-list:path`` lines as tuples; malformed lines are skipped."""
    if not isinstance(text, str):
        return []
    entries = []
    for raw in text.splitlines():
        # The path may itself hold colons (":cri-containerd:"), so split twice only.
        fields = raw.strip().split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        if not hierarchy.isascii() or not hierarchy.isdigit() or not path.startswith("/"):
            continue
        entries.append((hierarchy, [c for c in controllers.split(",") if c], path))
    return entries


_KIND_RANK = {KIND_CONTAINER: 3, KIND_SANDBOX: 2, KIND_POD: 2, KIND_SYSTEM: 0}


def identify_process(proc_cgroup_text: str) -> Identity:
    """The most specific identity among a process's cgroup lines.

    Ties go to the memory controller's line (v1: that is where its page cache
    is charged), then to the unified "0::" line (v2), then to any other line.
    """
    best: tuple[int, int] | None = None
    chosen = SYSTEM
    for hierarchy, controllers, path in parse_proc_cgroup(proc_cgroup_text):
        if "memory" in controllers:
            preference = 2
        elif hierarchy == "0" and not controllers:
            preference = 1
        else:
            preference = 0
        identity = identify(path)
        score = (_KIND_RANK.get(identity.kind, 0), preference)
        if best is None or score > best:
            best, chosen = score, identity
    return chosen


# --- Enrichment from files on the node --------------------------------------

# Metadata of an id nobody asked for in this long is dropped (bounded memory).
_UNUSED_REFRESHES_BEFORE_EVICTION = 6
_MIN_UNUSED_SECONDS_BEFORE_EVICTION = 60.0
# dockershim/cri-dockerd link each <restart>.log to the engine's own log file:
# /var/lib/docker/containers/31cb02944da7a12196a193cf0e0f6c226d7c453a1db62e65ba98287593a2ee30/31cb02944da7a12196a193cf0e0f6c226d7c453a1db62e65ba98287593a2ee30-json.log  # noqa: E501
_LOG_TARGET_ID = re.compile(_ID)
# A bare id under a cgroupfs pod could be any CRI runtime's.
_CRI_RUNTIMES = ("containerd", "cri-o", "docker")
_RUNTIMES_WITH_METADATA = frozenset(_CRI_RUNTIMES + ("podman",))


@dataclass(frozen=True)
class _PodLogDir:
    namespace: str
    pod_name: str
    path: str


@dataclass(frozen=True)
class _PodContainers:
    names: tuple[str, ...]
    by_id: dict[str, str]  # container id -> name, from docker's 0.log symlinks
    listed_at: float


class Enricher:
    """Adds names, images, k8s names and the sandbox flag from files on the node.

    Every root is a parameter (``runtime_metadata.MetadataPaths`` says which
    file of which runtime is read); the directory layout (names and log
    symlinks) under ``pod_log_root`` names Kubernetes pods. Missing, vanished
    or garbage files are normal and only mean "not known"; unreadable or
    garbage ones are counted (``take_read_errors``). Each file is looked at
    once per ``refresh_seconds`` at most, and parsed again only when it changed.
    """

    def __init__(
        self,
        pod_log_root: str = Settings.pod_log_root,
        containerd_state_root: str = MetadataPaths.containerd_state_root,
        crio_state_root: str = MetadataPaths.crio_state_root,
        docker_root: str = MetadataPaths.docker_root,
        storage_root: str = MetadataPaths.storage_root,
        refresh_seconds: float = 10.0,
    ) -> None:
        self._pod_log_root = pod_log_root
        self._paths = MetadataPaths(
            docker_root=docker_root,
            storage_root=storage_root,
            crio_state_root=crio_state_root,
            containerd_state_root=containerd_state_root,
        )
        self._refresh = max(0.0, float(refresh_seconds))
        self._clock: Callable[[], float] = time.monotonic
        self._lock = threading.Lock()
        self._files = MetadataFiles(refresh_seconds=self._refresh)
        self._applied: dict[Identity, tuple[RuntimeMeta, Identity]] = {}
        self._storage_dirs: list[str] = []
        self._crio_dirs: list[str] = []
        self._pods: dict[str, _PodLogDir] = {}
        self._pods_listed_at: float | None = None
        self._pod_containers: dict[str, _PodContainers] = {}

    def enrich(self, identity: Identity) -> Identity:
        with self._lock:
            now = self._clock()
            self._maybe_relist(now)
            meta = self._runtime_meta(identity, now)
            if meta is not None:
                identity = self._with_meta(identity, meta)
            return self._apply_pod_logs(identity, meta, now)

    def _with_meta(self, identity: Identity, meta: RuntimeMeta) -> Identity:
        # Building the enriched Identity is most of a steady cycle's cost; the
        # same path and the same parsed file give the same result.
        known = self._applied.get(identity)
        if known is not None and known[0] is meta:
            return known[1]
        enriched = _apply_meta(identity, meta)
        self._applied[identity] = (meta, enriched)
        return enriched

    def take_read_errors(self) -> int:
        """Metadata files that could not be read or parsed since the last call."""
        with self._lock:
            errors, self._files.read_errors = self._files.read_errors, 0
            return errors

    # Runtime metadata ---------------------------------------------------------

    def _runtime_meta(self, identity: Identity, now: float) -> RuntimeMeta | None:
        cid = identity.container_id
        if identity.kind != KIND_CONTAINER or cid is None or not _BARE_ID.fullmatch(cid):
            return None
        if identity.runtime is None:
            runtimes: tuple[str, ...] = _CRI_RUNTIMES
        elif identity.runtime in _RUNTIMES_WITH_METADATA:
            runtimes = (identity.runtime,)
        else:
            return None
        for runtime in runtimes:
            meta = self._lookup(runtime, cid, now)
            if meta is not None:
                return meta
        return None

    def _lookup(self, runtime: str, cid: str, now: float) -> RuntimeMeta | None:
        files, paths = self._files, self._paths
        if runtime == "docker":
            return files.get(paths.docker(cid), docker_meta, now)
        if runtime == "containerd":
            return files.get(paths.containerd(cid), containerd_meta, now)
        if runtime == "cri-o":
            for driver_dir in self._crio_dirs:
                meta = files.get(paths.crio(driver_dir, cid), crio_meta, now)
                if meta is not None:
                    return meta
            return None
        for driver_dir in self._storage_dirs:
            # One file lists every container: parsed once per change, then indexed.
            index = files.get(paths.storage(driver_dir), storage_index, now)
            if index and cid in index:
                return index[cid]
        return None

    # Directory listings -------------------------------------------------------

    def _maybe_relist(self, now: float) -> None:
        if self._pods_listed_at is not None and now - self._pods_listed_at < self._refresh:
            return
        self._pods = _list_pod_log_dirs(self._pod_log_root)
        self._pods_listed_at = now
        self._pod_containers = {
            uid: listing
            for uid, listing in self._pod_containers.items()
            if uid in self._pods and now - listing.listed_at < self._refresh
        }
        self._applied = {}  # bounded by the containers seen in one refresh period
        self._storage_dirs = driver_dirs(self._paths.storage_root)
        self._crio_dirs = driver_dirs(self._paths.crio_state_root)
        self._files.evict_unused(
            now
            - max(
                self._refresh * _UNUSED_REFRESHES_BEFORE_EVICTION,
                _MIN_UNUSED_SECONDS_BEFORE_EVICTION,
            )
        )

    # Kubelet log layout -------------------------------------------------------

    def _apply_pod_logs(self, identity: Identity, meta: RuntimeMeta | None, now: float) -> Identity:
        uid = identity.pod_uid
        pod = self._pods.get(uid) if uid is not None else None
        if uid is None or pod is None:
            return identity
        identity = replace(
            identity,
            namespace=identity.namespace or pod.namespace,
            pod_name=identity.pod_name or pod.pod_name,
        )
        if identity.kind != KIND_CONTAINER or identity.container_name or not identity.container_id:
            return identity
        name = self._container_name_from_logs(uid, pod, identity.container_id, meta, now)
        return replace(identity, container_name=name) if name else identity

    def _container_name_from_logs(
        self, uid: str, pod: _PodLogDir, cid: str, meta: RuntimeMeta | None, now: float
    ) -> str | None:
        listing = self._pod_containers.get(uid)
        if listing is None or now - listing.listed_at >= self._refresh:
            listing = _list_pod_containers(pod.path, now)
            self._pod_containers[uid] = listing
        if cid in listing.by_id:
            return listing.by_id[cid]
        # A single log directory names the pod's only container, but the pause
        # sandbox has a cgroup and no log directory: only a runtime file that
        # says "not a sandbox" makes that name this container's.
        if len(listing.names) == 1 and meta is not None and meta.is_sandbox is False:
            return listing.names[0]
        return None


def _apply_meta(identity: Identity, meta: RuntimeMeta) -> Identity:
    common = {
        "runtime": identity.runtime or meta.runtime,
        "pod_uid": identity.pod_uid or meta.pod_uid,
        "namespace": identity.namespace or meta.namespace,
        "pod_name": identity.pod_name or meta.pod_name,
    }
    if meta.is_sandbox:
        # The sandbox id is dropped here so that it cannot reach container.id;
        # the pause image and name are plumbing too.
        return replace(
            identity, kind=KIND_SANDBOX, container_id=None, container_name=None, **common
        )
    return replace(
        identity,
        container_name=identity.container_name or meta.k8s_container_name,
        name=identity.name or meta.name,
        image_name=identity.image_name or meta.image_name,
        image_tags=identity.image_tags or meta.image_tags,
        image_id=identity.image_id or meta.image_id,
        **common,
    )


def _list_pod_log_dirs(root: str) -> dict[str, _PodLogDir]:
    # <root>/<namespace>_<pod-name>_<pod-uid>/: neither namespaces nor pod
    # names may contain "_", so the split is unambiguous.
    pods: dict[str, _PodLogDir] = {}
    for name, path in _subdirectories(root):
        fields = name.split("_")
        if len(fields) != 3 or not all(fields):
            continue
        namespace, pod_name, uid = fields
        if _POD_UID.fullmatch(uid):
            pods[uid] = _PodLogDir(namespace=namespace, pod_name=pod_name, path=path)
    return pods


def _list_pod_containers(pod_path: str, now: float) -> _PodContainers:
    names = []
    by_id: dict[str, str] = {}
    for name, path in _subdirectories(pod_path):
        names.append(name)
        for target in _log_symlink_targets(path):
            match = _LOG_TARGET_ID.search(target)
            if match:
                by_id[match.group(0)] = name
    return _PodContainers(names=tuple(sorted(names)), by_id=by_id, listed_at=now)


def _subdirectories(path: str) -> list[tuple[str, str]]:
    try:
        with os.scandir(path) as entries:
            return [(e.name, e.path) for e in entries if _is_real_dir(e)]
    except OSError:
        return []


def _is_real_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _log_symlink_targets(container_dir: str) -> list[str]:
    targets = []
    try:
        with os.scandir(container_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(".log"):
                    continue
                try:
                    if entry.is_symlink():
                        targets.append(os.readlink(entry.path))
                except OSError:
                    continue
    except OSError:
        return []
    return targets
