"""Container names and images from the runtimes' own files on the node.

No daemon is asked anything: each runtime already writes what it knows about a
container to disk, and these readers turn one such file into a ``RuntimeMeta``.
Where the files live (every root is a parameter, see ``MetadataPaths``):

- Docker: ``<data-root>/containers/<id>/config.v2.json``;
- Podman (and anything else on containers/storage): one
  ``<graphroot>/<driver>-containers/containers.json`` listing every container;
- containerd/CRI: the task's OCI bundle, ``<state>/io.containerd.runtime.v2.task
  /k8s.io/<id>/config.json``, whose annotations the CRI plugin writes;
- CRI-O: ``<runroot>/<driver>-containers/<id>/userdata/config.json`` (annotations).

``MetadataFiles`` caches each file by path and re-reads it only when its
(inode, size, mtime) changed, at most once per refresh period; a file that is
missing, being replaced or garbage is "not known", never an error to the caller.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import Settings

_log = logging.getLogger(__name__)

# Metadata files are a few KiB (containers.json: about 1 KiB per container);
# anything far larger is not what we expect.
MAX_METADATA_BYTES = 4 << 20

_HEX_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


@dataclass(frozen=True)
class RuntimeMeta:
    """What one runtime's file says about one container; None: the file does not say."""

    runtime: str
    is_sandbox: bool | None = None
    name: str | None = None  # the runtime's own name for it: container.name
    image_name: str | None = None  # without tag or digest: container.image.name
    image_tags: tuple[str, ...] = ()
    image_id: str | None = None  # "sha256:<hex>" for every runtime
    k8s_container_name: str | None = None
    namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None


# --- Image references ---------------------------------------------------------------


def split_image_reference(reference: object) -> tuple[str | None, tuple[str, ...], str | None]:
    """``(name, tags, id)`` of an image reference as runtimes record it.

    ``docker.io/library/nginx:1.25@sha256:0d17…`` -> ("docker.io/library/nginx", ("1.25",), None);
    ``localhost:5000/app`` -> ("localhost:5000/app", (), None): a port is not a tag;
    ``sha256:0d17…`` or a bare 64-hex id -> (None, (), "sha256:0d17…"): an id names no image.
    A reference without a tag gets none (the runtime did not record which it resolved).
    """
    if not isinstance(reference, str) or not reference or len(reference) > 4096:
        return None, (), None
    reference = reference.strip()
    as_id = image_id(reference)
    if as_id is not None:
        return None, (), as_id
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    tags: tuple[str, ...] = ()
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        tags = (tag,) if tag else ()
    if not name or any(c.isspace() for c in name):
        return None, (), None
    return name, tags, None


def image_id(value: object) -> str | None:
    """``sha256:<hex>`` for a 64-hex image id with or without the prefix, else None."""
    if not isinstance(value, str):
        return None
    match = _HEX_ID.fullmatch(value.strip())
    return f"sha256:{match.group(1)}" if match else None


def _image(reference: object, *id_candidates: object) -> dict[str, Any]:
    name, tags, from_reference = split_image_reference(reference)
    found = from_reference
    for candidate in id_candidates:
        found = found or image_id(candidate)
    return {"image_name": name, "image_tags": tags, "image_id": found}


# --- One parser per file shape --------------------------------------------------------
# Each takes the decoded JSON document and returns None when it is not the shape
# expected: a foreign file is as good as no file.


def docker_meta(document: object) -> RuntimeMeta | None:
    """Docker's ``config.v2.json``. Shape (abridged, from a real file)::

    {"ID": "9ec3…", "Name": "/web", "Image": "sha256:1f3c…",
     "Config": {"Image": "nginx:1.25", "Labels": {"io.kubernetes.pod.name": "web-0", …}}, …}
    """
    if not isinstance(document, dict):
        return None
    config = document.get("Config")
    config = config if isinstance(config, dict) else {}
    labels = strings(config.get("Labels"))
    name = document.get("Name")
    return RuntimeMeta(
        runtime="docker",
        is_sandbox=sandbox_flag(labels.get("io.kubernetes.docker.type"), "podsandbox"),
        # Docker keeps the name with its leading "/" (the legacy link namespace).
        name=(name.lstrip("/") or None) if isinstance(name, str) else None,
        **_image(config.get("Image"), document.get("Image")),
        k8s_container_name=labels.get("io.kubernetes.container.name"),
        namespace=labels.get("io.kubernetes.pod.namespace"),
        pod_name=labels.get("io.kubernetes.pod.name"),
        pod_uid=labels.get("io.kubernetes.pod.uid"),
    )


@dataclass(frozen=True)
class _Annotations:
    """Which OCI annotation says what, for a CRI runtime."""

    runtime: str
    container_type: str
    name: str
    image: str
    image_ids: tuple[str, ...]
    namespace: str
    pod_name: str
    pod_uid: str


# containerd's CRI plugin (pkg/cri/annotations). A task's config.json (abridged):
# {"ociVersion": "1.1.0", "annotations": {"io.kubernetes.cri.container-type": "container",
#  "io.kubernetes.cri.container-name": "nginx",
#  "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25", …}, …}
# It records no image id.
_CONTAINERD = _Annotations(
    runtime="containerd",
    container_type="io.kubernetes.cri.container-type",
    name="io.kubernetes.cri.container-name",
    image="io.kubernetes.cri.image-name",
    image_ids=(),
    namespace="io.kubernetes.cri.sandbox-namespace",
    pod_name="io.kubernetes.cri.sandbox-name",
    pod_uid="io.kubernetes.cri.sandbox-uid",
)

# CRI-O (internal/annotations) plus the kubelet's own labels. config.json (abridged):
# {"annotations": {"io.kubernetes.cri-o.ContainerType": "container",
#  "io.kubernetes.container.name": "nginx",
#  "io.kubernetes.cri-o.ImageName": "docker.io/library/nginx:1.25",
#  "io.kubernetes.cri-o.ImageRef": "1f3c…", "io.kubernetes.cri-o.Image": "1f3c…", …}}
# ImageRef is the image id on older CRI-O and a repo digest on newer; Image is
# the id, or the reference the kubelet asked for: the first that is an id wins.
_CRIO = _Annotations(
    runtime="cri-o",
    container_type="io.kubernetes.cri-o.ContainerType",
    name="io.kubernetes.container.name",
    image="io.kubernetes.cri-o.ImageName",
    image_ids=("io.kubernetes.cri-o.ImageRef", "io.kubernetes.cri-o.Image"),
    namespace="io.kubernetes.pod.namespace",
    pod_name="io.kubernetes.pod.name",
    pod_uid="io.kubernetes.pod.uid",
)


def containerd_meta(document: object) -> RuntimeMeta | None:
    """A containerd task's OCI ``config.json`` (the bundle of a CRI container)."""
    return _annotated_meta(document, _CONTAINERD)


def crio_meta(document: object) -> RuntimeMeta | None:
    """CRI-O's per-container OCI ``config.json``."""
    return _annotated_meta(document, _CRIO)


def _annotated_meta(document: object, keys: _Annotations) -> RuntimeMeta | None:
    if not isinstance(document, dict):
        return None
    notes = strings(document.get("annotations"))
    # The CRI container name is the Kubernetes one; it is also the runtime's.
    name = notes.get(keys.name)
    return RuntimeMeta(
        runtime=keys.runtime,
        is_sandbox=sandbox_flag(notes.get(keys.container_type), "sandbox"),
        name=name,
        **_image(notes.get(keys.image), *(notes.get(k) for k in keys.image_ids)),
        k8s_container_name=name,
        namespace=notes.get(keys.namespace),
        pod_name=notes.get(keys.pod_name),
        pod_uid=notes.get(keys.pod_uid),
    )


def storage_index(document: object) -> dict[str, RuntimeMeta]:
    """containers/storage's ``containers.json``: every container by id. Shape (one entry)::

    [{"id": "55ea…", "names": ["web"], "image": "1f3c…", "layer": "8d2a…",
      "metadata": "{\\"image-name\\":\\"localhost/busybox:latest\\",\\"image-id\\":\\"1f3c…\\",
                    \\"name\\":\\"web\\",\\"created-at\\":1700000000}", …}]

    ``metadata`` is itself a JSON document inside a string.
    """
    index: dict[str, RuntimeMeta] = {}
    if not isinstance(document, list):
        return index
    for entry in document:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        inner = _decode_inner(entry.get("metadata"))
        names = entry.get("names")
        first = names[0] if isinstance(names, list) and names else inner.get("name")
        index[entry["id"]] = RuntimeMeta(
            runtime="podman",
            name=first if isinstance(first, str) and first else None,
            **_image(inner.get("image-name"), entry.get("image"), inner.get("image-id")),
        )
    return index


def _decode_inner(text: object) -> dict[str, Any]:
    if not isinstance(text, str) or len(text) > MAX_METADATA_BYTES:
        return {}
    try:
        inner = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return inner if isinstance(inner, dict) else {}


def sandbox_flag(value: str | None, sandbox_value: str) -> bool | None:
    if value == sandbox_value:
        return True
    if value == "container":
        return False
    return None


def strings(mapping: object) -> dict[str, str]:
    """The str -> non-empty str pairs of a JSON object; anything else is dropped."""
    if not isinstance(mapping, dict):
        return {}
    return {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, str) and v}


# --- Where the files are ------------------------------------------------------------


@dataclass(frozen=True)
class MetadataPaths:
    """The runtimes' data roots, as the daemons' own flags name them.

    ``docker_root``: dockerd ``--data-root``; ``storage_root``: containers/storage
    ``graphroot`` (podman, buildah, CRI-O); ``crio_state_root``: containers/storage
    ``runroot``; ``containerd_state_root``: containerd ``--state``.
    """

    docker_root: str = Settings.docker_root
    storage_root: str = Settings.storage_root
    crio_state_root: str = Settings.crio_state_root
    containerd_state_root: str = Settings.containerd_state_root

    def docker(self, cid: str) -> str:
        return os.path.join(self.docker_root, "containers", cid, "config.v2.json")

    def containerd(self, cid: str) -> str:
        # The CRI plugin runs every Kubernetes container in the "k8s.io" namespace.
        return os.path.join(
            self.containerd_state_root,
            "io.containerd.runtime.v2.task",
            "k8s.io",
            cid,
            "config.json",
        )

    def crio(self, driver_dir: str, cid: str) -> str:
        return os.path.join(self.crio_state_root, driver_dir, cid, "userdata", "config.json")

    def storage(self, driver_dir: str) -> str:
        return os.path.join(self.storage_root, driver_dir, "containers.json")


def driver_dirs(root: str) -> list[str]:
    """The ``<driver>-containers`` directories under a containers/storage root, overlay first.

    The storage driver (overlay, vfs, btrfs, zfs …) names the directory; an agent
    cannot know which one a host configured, and a host may have used two.
    """
    try:
        with os.scandir(root) as entries:
            found = [e.name for e in entries if e.name.endswith("-containers") and _is_dir(e)]
    except OSError:
        return []
    return sorted(found, key=lambda name: (name != "overlay-containers", name))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


# --- The cache ------------------------------------------------------------------------

_MISSING = object()


@dataclass
class _Cached:
    signature: tuple[int, int, int] | None  # (inode, size, mtime_ns) of what was parsed
    value: Any
    checked_at: float
    used_at: float


@dataclass
class MetadataFiles:
    """Parsed metadata files by path, re-read only when they change.

    A path is looked at (``open`` + ``fstat``) at most once per ``refresh_seconds``;
    it is read and parsed again only when its inode, size or mtime moved. A
    file that vanished keeps its last value (a stopping container is still
    named) until nobody asks for it; a file that cannot be read or parsed is
    counted in ``read_errors`` and tried again after the refresh period.
    """

    refresh_seconds: float = 10.0
    read_errors: int = 0
    _entries: dict[str, _Cached] = field(default_factory=dict)

    def get(self, path: str, parse: Callable[[object], Any], now: float) -> Any:
        """``parse(document)`` of the file at ``path``, or None when there is none."""
        entry = self._entries.get(path)
        if entry is not None and now - entry.checked_at < self.refresh_seconds:
            entry.used_at = now
            return entry.value
        value = self._load(path, parse, entry)
        if value is _MISSING:
            value, signature = (entry.value if entry else None), None
        else:
            value, signature = value
        if entry is None:
            entry = self._entries[path] = _Cached(signature, value, now, now)
        else:
            entry.signature, entry.value, entry.checked_at, entry.used_at = (
                signature,
                value,
                now,
                now,
            )
        return value

    def evict_unused(self, older_than: float) -> None:
        self._entries = {p: e for p, e in self._entries.items() if e.used_at >= older_than}

    def __len__(self) -> int:
        return len(self._entries)

    def _load(self, path: str, parse: Callable[[object], Any], entry: _Cached | None) -> Any:
        try:
            with open(path, "rb") as handle:
                # The signature of the open file is the signature of what is read,
                # even if the runtime renames a new version in meanwhile.
                stat = os.fstat(handle.fileno())
                signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
                if entry is not None and entry.signature == signature:
                    return entry.value, signature
                data = handle.read(MAX_METADATA_BYTES + 1)
        except FileNotFoundError:
            # The normal case for a container of another runtime, or one just gone.
            return _MISSING
        except OSError as error:
            return self._failed(path, f"unreadable: {error}")
        if len(data) > MAX_METADATA_BYTES:
            return self._failed(path, f"larger than {MAX_METADATA_BYTES} bytes")
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as error:
            # Half-written (a runtime that does not rename into place) or foreign.
            return self._failed(path, f"not JSON: {error}")
        try:
            return parse(document), signature
        except Exception as error:  # noqa: BLE001 - a parser bug must not cost the collection
            return self._failed(path, f"unexpected shape: {error!r}")

    def _failed(self, path: str, why: str) -> Any:
        self.read_errors += 1
        _log.debug("container metadata %s: %s; naming it later", path, why)
        return _MISSING
