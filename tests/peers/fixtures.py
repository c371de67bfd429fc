"""pytest fixtures for the real peers; ``tests/conftest.py`` does
``from tests.peers.fixtures import *``.

Every process started here is stopped by its own PID at teardown, and logs are kept
under ``tmp_path`` so a failing test's rotel/Prometheus output survives for reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.peers.otlp_receiver import OtlpReceiver
from tests.peers.prometheus import (
    PrometheusNotInstalled,
    PrometheusServer,
    prometheus_binary,
)
from tests.peers.rotel import RotelAgent

__all__ = [
    "otlp_receiver",
    "prometheus_server",
    "rotel_agent",
    "rotel_agent_factory",
]


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A started OTLP receiver (gRPC + HTTP) on ephemeral loopback ports."""
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def rotel_agent_factory(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> Iterator[Callable[..., RotelAgent]]:
    """``make(**kwargs) -> RotelAgent`` exporting to ``otlp_receiver`` by default.

    kwargs go to :class:`RotelAgent` (e.g. ``protocol="http"``; with it the
    receiver's HTTP endpoint is used unless ``exporter_endpoint`` is given).
    """
    agents: list[RotelAgent] = []

    def make(**kwargs: Any) -> RotelAgent:
        protocol = kwargs.get("protocol", "grpc")
        default = otlp_receiver.http_endpoint if protocol == "http" else otlp_receiver.grpc_endpoint
        endpoint = kwargs.pop("exporter_endpoint", default)
        kwargs.setdefault("workdir", tmp_path / f"rotel-{len(agents)}")
        agent = RotelAgent(endpoint, **kwargs)
        agents.append(agent)
        return agent.start()

    yield make
    for agent in agents:
        agent.stop()


@pytest.fixture
def rotel_agent(rotel_agent_factory: Callable[..., RotelAgent]) -> RotelAgent:
    """A started rotel-agent forwarding over gRPC to the ``otlp_receiver`` fixture."""
    return rotel_agent_factory()


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """``start(targets, scrape_interval="1s", **kw) -> PrometheusServer`` (started, ready).

    Skips the test if the ``prometheus`` Debian package is not installed.
    """
    try:
        prometheus_binary()
    except PrometheusNotInstalled as exc:
        # The message names the Debian package; CI installs it, so this only skips
        # on a developer machine without it.
        pytest.skip(str(exc))
    servers: list[PrometheusServer] = []

    def start(
        targets: str | Sequence[str], scrape_interval: str = "1s", **kwargs: Any
    ) -> PrometheusServer:
        kwargs.setdefault("workdir", tmp_path / f"prometheus-{len(servers)}")
        server = PrometheusServer(targets, scrape_interval=scrape_interval, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
