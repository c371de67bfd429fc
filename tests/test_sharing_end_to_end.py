"""Shared hits through the agent process, over OTLP to a real receiver: on the
reader's Resource by owner, on the owner's by reader; an owner removed while
its pages are cached. Ground truth: /proc/kpagecgroup (tests/page_owners.py),
read after the measured window from a memcg the agent does not watch
(--include names the containers only)."""

from __future__ import annotations

import pytest

from tests.agent_process import AgentProcess
from tests.conftest import make_cold_file
from tests.kernel_features import shared_mode, sharing_cases_here, skip_unless_lookups
from tests.peers.otlp_receiver import iter_points
from tests.test_sharing import FILE_PAGES, MIB, page_owners, within

pytestmark = [pytest.mark.kernel, sharing_cases_here]


def latest(requests, metric: str, container_id: str) -> dict[tuple, float]:
    """The newest value of each point of ``metric`` on a container's Resource,
    by its attributes."""
    found: dict[tuple, tuple[int, float]] = {}
    for p in iter_points(requests):
        if p.metric == metric and p.resource.get("container.id") == container_id:
            key = tuple(sorted(p.attributes.items()))
            if p.time_unix_nano >= found.get(key, (0, 0))[0]:
                found[key] = (p.time_unix_nano, p.value)
    return {k: v for k, (_, v) in found.items()}


def _agent(otlp_receiver, tmp_path, *paths: str) -> AgentProcess:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    args = ["run", "--engine", "core"]
    for path in paths:
        args += ["--include", path]
    return AgentProcess(args, env, tmp_path)


def _named(otlp_receiver, container_id: str) -> None:
    """An export names the container: the agent knows its memcg (so its
    reads count for it, not as dying)."""
    otlp_receiver.wait_for_metrics(
        lambda r: any(p.resource.get("container.id") == container_id for p in iter_points(r)),
        timeout=30,
    )


def _wait(otlp_receiver, predicate, timeout: float, *shown: tuple[str, str]):
    """wait_for_metrics, whose timeout also says what these (metric,
    container id) series held."""
    try:
        return otlp_receiver.wait_for_metrics(predicate, timeout=timeout)
    except AssertionError as e:
        requests = otlp_receiver.metrics_requests()
        held = {f"{m} of {c}": latest(requests, m, c) for m, c in shown}
        raise AssertionError(f"the series held {held}\n{e}") from None


def test_reader_and_owner_name_each_other(memcgs, data_dir, otlp_receiver, tmp_path):
    skip_unless_lookups()
    a_id, a_path, a_dir = memcgs.create_container()
    b_id, b_path, b_dir = memcgs.create_container()
    reader_a, reader_b = memcgs.worker(a_dir), memcgs.worker(b_dir)
    path = make_cold_file(data_dir / "shared-64m", 64 * MIB)
    with _agent(otlp_receiver, tmp_path, a_path, b_path) as agent:
        _named(otlp_receiver, a_id)
        _named(otlp_receiver, b_id)
        reader_a.do("read", path)
        reader_b.do("read", path)
        reader_a.do("read", path)

        def served(requests) -> bool:
            return any(
                v >= FILE_PAGES * 0.99
                for v in latest(requests, "pagecache.shared.served", a_id).values()
            )

        requests = _wait(
            otlp_receiver,
            served,
            60,
            ("pagecache.shared.served", a_id),
            ("pagecache.shared.hits", b_id),
        )
        assert agent.terminate() == 0, agent.log()
    owners = page_owners(memcgs, path)
    # Within 1%: these VMs shed a few cached pages without pressure, which the
    # next reader then brings in (and owns) itself.
    assert within(owners.get(a_dir.stat().st_ino, 0), FILE_PAGES, 0.01), owners
    hits_b = latest(requests, "pagecache.shared.hits", b_id)
    owner_a = (("pagecache.owner.cgroup.path", a_path), ("pagecache.owner.container.id", a_id))
    assert list(hits_b) == [owner_a], hits_b
    assert within(hits_b[owner_a], FILE_PAGES, 0.01), hits_b
    served_a = latest(requests, "pagecache.shared.served", a_id)
    reader_b_attrs = (
        ("pagecache.reader.cgroup.path", b_path),
        ("pagecache.reader.container.id", b_id),
    )
    assert served_a == {reader_b_attrs: hits_b[owner_a]}, served_a
    assert latest(requests, "pagecache.shared.hits", a_id) == {}, "A's own rereads are not shared"
    agent_points = [p for p in iter_points(requests) if p.metric == "pagecache.agent.cgroups"]
    assert {p.attributes.get("pagecache.shared.mode") for p in agent_points} == {shared_mode()}


def test_removed_owner_shows_as_dying_or_parent(memcgs, data_dir, otlp_receiver, tmp_path):
    """A reads the file cold, exits, and its memcg is removed while its pages
    are cached; B's hits then name "dying" (6.18: folios keep the dead memcg)
    or A's parent (kernels that reparent LRU folios, 7.x). Exact mode reads
    each folio's memcg as B finds it, so on 7.x a read while the reparenting
    is under way names both (2,816 pages "dying", 1,280 the parent, seen)."""
    skip_unless_lookups()
    a_id, a_path, a_dir = memcgs.create_container()
    b_id, b_path, b_dir = memcgs.create_container()
    reader_b = memcgs.worker(b_dir)
    path = make_cold_file(data_dir / "orphaned-16m", 16 * MIB)
    pages = 16 * MIB // 4096
    with _agent(otlp_receiver, tmp_path, a_path, b_path, memcgs.parent_path) as agent:
        _named(otlp_receiver, b_id)
        memcgs.run(a_dir, ["cat", str(path)])  # A owns the file's pages
        a_dir.rmdir()
        memcgs.created.remove(a_dir)
        reader_b.do("read", path)

        def counted(requests) -> bool:
            return sum(latest(requests, "pagecache.shared.hits", b_id).values()) >= pages * 0.99

        requests = _wait(otlp_receiver, counted, 60, ("pagecache.shared.hits", b_id))
        assert agent.terminate() == 0, agent.log()
    hits_b = latest(requests, "pagecache.shared.hits", b_id)
    paths = {dict(k)["pagecache.owner.cgroup.path"] for k in hits_b}
    assert paths and paths <= {"dying", memcgs.parent_path}, hits_b
    if shared_mode() == "extent":  # the owner recorded at insertion: one answer
        assert paths in ({"dying"}, {memcgs.parent_path}), hits_b
    print(f"removed owner's pages read by B are named {paths}")
