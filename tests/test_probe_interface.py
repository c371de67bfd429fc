"""Both engines implement every member of the ActivityProbe Protocol.

The agent, doctor and activity tracker use a probe only through that
Protocol (no getattr fallbacks), so a member one engine lacks would fail at
run time on the hosts that pick that engine. Constructing an engine loads
nothing: this needs no BPF.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from otel_pagecache.probes import ActivityProbe
from otel_pagecache.probes.bcc import BccProbe
from otel_pagecache.probes.core import CoreProbe

ENGINES = (CoreProbe, BccProbe)


def _protocol_members() -> tuple[set[str], dict[str, object]]:
    """(data attributes, methods and properties) the Protocol declares."""
    attributes = set(ActivityProbe.__annotations__)
    methods = {
        name: value
        for name, value in vars(ActivityProbe).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }
    return attributes, methods


def test_the_protocol_declares_what_the_agent_uses():
    attributes, methods = _protocol_members()
    assert {"engine", "has_lookups", "attribution", "lookup_hook", "stall_kinds"} <= attributes
    assert {
        "attached",
        "read",
        "forget",
        "forget_files",
        "stall_ring",
        "publish_span_slots",
        "forget_span_slots",
        "close",
    } <= set(methods)
    for name, value in methods.items():
        doc = (value.fget if isinstance(value, property) else value).__doc__
        assert doc and doc.strip(), f"ActivityProbe.{name} has no docstring"


def test_no_getattr_fallback_on_a_probe():
    """getattr(probe, name, default) or hasattr(probe, ...) in the package
    would let an engine lack a member unnoticed: every use goes through the
    Protocol, which both engines are checked against below."""
    package = Path(__file__).resolve().parent.parent / "otel_pagecache"
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and node.args
                and "probe" in ast.unparse(node.args[0])
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


@pytest.mark.parametrize("engine", ENGINES, ids=lambda c: c.__name__)
def test_engine_defines_every_protocol_member(engine):
    attributes, methods = _protocol_members()
    probe = engine()  # before start(): nothing loaded
    for name in attributes:
        assert hasattr(probe, name), f"{engine.__name__} lacks attribute {name}"
    for name, declared in methods.items():
        if isinstance(declared, property):
            # A read-only property: a plain attribute set in __init__ serves too.
            assert name in vars(probe) or isinstance(
                inspect.getattr_static(engine, name, None), property
            ), f"{engine.__name__} lacks {name}"
            continue
        assert name in vars(engine), f"{engine.__name__} lacks method {name}"
        defined = inspect.getattr_static(engine, name)
        assert callable(defined), f"{engine.__name__}.{name} is not a method"
        wanted = list(inspect.signature(declared).parameters)
        got = list(inspect.signature(defined).parameters)
        assert got == wanted, f"{engine.__name__}.{name}{got} differs from the Protocol"


@pytest.mark.parametrize("engine", ENGINES, ids=lambda c: c.__name__)
def test_an_engine_not_started_reads_nothing_and_closes(engine):
    probe = engine()
    assert probe.read().lookups == {}
    assert probe.stall_kinds == [] and probe.lookup_hooks_refused == []
    probe.forget([1], files=True)
    probe.forget_files([(1, 2, 3)])
    probe.forget_span_slots([1])
    probe.publish_span_slots(1, 0, 0, 0)
    probe.close()
