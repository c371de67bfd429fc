"""The case users have (issue 17): two podman (or Docker) containers of one image on the
``overlay`` storage driver share the image's lower-layer inodes, so the second
container's reads of an image file are served by pages the first one owns.

The image is imported, and the import charged the layer files' pages to the
test's own memcg: they are evicted (posix_fadvise DONTNEED on the layer file)
before the first container reads. Ground truth: /proc/kpagecgroup
(tests/page_owners.py) says the first container owns the pages, looked at
from a memcg the agent does not watch.
"""

from __future__ import annotations

import os
import tarfile
import uuid
from pathlib import Path

import pytest

from otel_pagecache.cgroupfs import own_cgroup_path
from tests.agent_process import AgentProcess, agent_env
from tests.conftest import resident_bytes
from tests.kernel_features import skip_unless_lookups
from tests.peers.docker import DockerDaemon
from tests.peers.otlp_receiver import iter_points
from tests.peers.podman import Podman
from tests.peers.runtimes import CgroupParent, busybox_rootfs
from tests.test_sharing import page_owners, within
from tests.test_sharing_end_to_end import latest

pytestmark = pytest.mark.kernel
MIB = 1 << 20
SIZE = 32 * MIB
PAGES = SIZE // 4096


def image_with_a_large_file(tmp_path: Path) -> Path:
    tarball = busybox_rootfs(tmp_path / "rootfs.tar")
    big = tmp_path / "big"
    big.write_bytes(os.urandom(SIZE))
    with tarfile.open(tarball, "a") as tar:
        tar.add(big, arcname="big")
    big.unlink()
    return tarball


def _runtime(name: str, workdir: Path, parent: CgroupParent):
    """(cli, image reference, layer-file glob under workdir, agent env, memcg leaf prefix)."""
    if name == "podman":
        cli = Podman(workdir, parent.path, storage_driver="overlay")
        env = {"OTEL_PAGECACHE_CONTAINERS_STORAGE_ROOT": str(workdir / "root")}
        return cli, "localhost/sharing:1.0", "root/overlay/*/diff/big", env, "libpod-"
    cli = DockerDaemon(workdir, parent.path)  # its default driver: overlay2 where it works
    env = {"OTEL_PAGECACHE_DOCKER_DATA_ROOT": str(workdir / "data-root")}
    return cli, "sharing:1.0", "data-root/overlay2/*/diff/big", env, ""


@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_second_container_reads_the_first_ones_image_cache(
    real_hierarchy, memcgs, otlp_receiver, tmp_path, runtime
):
    skip_unless_lookups()
    if real_hierarchy.version != 1:
        pytest.skip("the real-runtime cgroup parent is built for cgroup v1")
    own = own_cgroup_path(real_hierarchy.version)
    leaf = "libpod_parent" if runtime == "podman" else "docker"
    parent = CgroupParent(own, f"otel-pagecache-test-{uuid.uuid4().hex[:8]}", leaf)
    workdir = tmp_path / runtime
    cli, image, layer_glob, runtime_env, prefix = _runtime(runtime, workdir, parent)
    volume = tmp_path / "empty"
    volume.mkdir()
    try:
        with cli as podman:
            podman.import_image(image_with_a_large_file(tmp_path), "sharing:1.0")
            if runtime == "docker":
                driver = podman.cli("info", "--format", "{{.Driver}}")
                if driver != "overlay2":
                    pytest.skip(f"dockerd chose the {driver} storage driver here, not overlay2")
            layers = list(workdir.glob(layer_glob))
            assert len(layers) == 1, layers
            layer_file = layers[0]
            # Written back first: dirty pages are not dropped.
            with open(layer_file, "rb") as f:
                os.fsync(f.fileno())
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert resident_bytes(layer_file) == 0, "the imported layer file stayed cached"

            first, second = (
                podman.run(
                    image,
                    "sleep",
                    "100000",
                    name=f"{role}-{uuid.uuid4().hex[:6]}",
                    volume=f"{volume}:/data:ro",
                )
                for role in ("first", "second")
            )
            env = agent_env(
                otlp_receiver.grpc_endpoint,
                OTEL_PAGECACHE_STALLS="false",
                **runtime_env,
            )
            args = ["run", "--engine", "core", "--include", f"{parent.top}/*"]
            with AgentProcess(args, env, tmp_path) as agent:
                for cid in (first, second):
                    otlp_receiver.wait_for_metrics(
                        lambda r, cid=cid: any(
                            p.resource.get("container.id") == cid for p in iter_points(r)
                        ),
                        timeout=60,
                    )
                podman.exec(first, "sh", "-c", "cat /big > /dev/null")
                podman.exec(second, "sh", "-c", "cat /big > /dev/null")

                def named(requests) -> bool:
                    return any(
                        dict(k).get("pagecache.owner.container.id") == first and v >= PAGES * 0.99
                        for k, v in latest(requests, "pagecache.shared.hits", second).items()
                    )

                try:
                    requests = otlp_receiver.wait_for_metrics(named, timeout=30)
                except AssertionError:
                    got = otlp_receiver.metrics_requests()
                    for cid in (first, second):
                        for metric in ("pagecache.shared.hits", "pagecache.shared.served"):
                            print(cid[:12], metric, latest(got, metric, cid))
                        print(cid[:12], "lookups", latest(got, "pagecache.lookups", cid))
                        print(cid[:12], "misses", latest(got, "pagecache.misses", cid))
                    print("first", first, "owners", page_owners(memcgs, layer_file))
                    raise
                assert agent.terminate() == 0, agent.log()
            first_memcg = Path(real_hierarchy.directory(f"{parent.path}/{prefix}{first}"))
            owners = page_owners(memcgs, layer_file)
            # Within 1%: these VMs shed a few cached pages without pressure.
            assert within(owners.get(first_memcg.stat().st_ino, 0), PAGES, 0.01), owners
            hits = latest(requests, "pagecache.shared.hits", second)
            by_owner = {dict(k).get("pagecache.owner.container.id"): v for k, v in hits.items()}
            assert within(by_owner[first], PAGES, 0.01), hits
            print(f"second container's shared hits: {hits}")
            podman.remove_all()
    finally:
        left = parent.remove()
    assert not left, f"cgroups left behind: {left}"
