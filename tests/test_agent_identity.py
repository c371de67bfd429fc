"""The stall spans' Resources: a memcg's identity from the agent's snapshots.

A stall can name a memcg that no snapshot has seen yet (a container started
after the last one). With no metric exporter nothing else takes snapshots,
so the agent must look again for such a memcg later, not mark it unknown for
good (it did: the container's stall spans then lacked ``container.id`` for
the agent's whole life).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otel_pagecache import agent as agent_module
from otel_pagecache.agent import Agent
from otel_pagecache.config import Settings
from tests.cgroup_trees import write_v2_cgroup

CONTAINER = "a" * 64
SCOPE = f"/system.slice/docker-{CONTAINER}.scope"


@pytest.fixture
def agent(tmp_path: Path):
    write_v2_cgroup(tmp_path, "/", {})
    write_v2_cgroup(tmp_path, "/system.slice", {})
    settings = Settings(
        cgroup_root=str(tmp_path),
        activity=False,
        metrics_exporters=("none",),
        traces_exporter="none",
    )
    agent = Agent(settings)
    yield agent
    agent.stop()


def test_a_memcg_created_after_the_last_snapshot_gets_its_identity_later(
    agent, tmp_path, monkeypatch
):
    agent.source.current()  # the snapshot the agent took before the container started
    directory = write_v2_cgroup(tmp_path, SCOPE, {"file": 4096}, current=4096)
    memcg_id = os.stat(directory).st_ino
    assert agent._identity(memcg_id) is None  # the same instant: the snapshot is fresh

    clock = [agent._unknown_since + agent_module.UNKNOWN_RETRY_S + 1]
    monkeypatch.setattr(agent_module.time, "monotonic", lambda: clock[0])
    identity = agent._identity(memcg_id)
    assert identity is not None
    assert identity["container.id"] == CONTAINER
    assert identity["pagecache.cgroup.path"] == SCOPE
