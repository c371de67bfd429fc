"""The documentation agrees with the code, and the repository stands alone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from otel_pagecache.metrics import ALL_SPECS
from otel_pagecache.reference import regenerate

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [ROOT / "README.md", *DOCS, ROOT / "bench" / "README.md", ROOT / "tests" / "README.md"]


def test_generated_references_are_up_to_date():
    for path in DOCS:
        text = path.read_text()
        assert regenerate(text) == text, f"{path.name} is stale: run scripts/gendocs"
    assert "BEGIN GENERATED: metrics" in (ROOT / "docs" / "metrics.md").read_text()
    assert "BEGIN GENERATED: settings" in (ROOT / "docs" / "configuration.md").read_text()
    assert "BEGIN GENERATED: modules" in (ROOT / "docs" / "architecture.md").read_text()


def _defines(path: Path, name: str) -> bool:
    """``path`` (a module) defines ``name``: a function, class or assignment, at any depth."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
    return False


def test_architecture_names_only_modules_and_names_that_exist():
    """docs/architecture.md's data flow cites ``module.Name``, ``x.py`` and test files:
    each must exist, so a renamed or removed module cannot leave it describing the past."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "otel_pagecache"
    for cited in set(re.findall(r"\btests/[\w/]+\.py\b", text)):
        assert (ROOT / cited).is_file(), f"docs/architecture.md cites {cited}, which is gone"
    for cited in set(re.findall(r"`([\w/]+\.py)`", text)):
        found = (package / cited).is_file() or (ROOT / cited).is_file()
        assert found, f"docs/architecture.md cites {cited}, which is gone"
    for dotted in set(re.findall(r"\b[a-z_]+(?:\.[A-Za-z_]\w*)+", text)):
        parts = dotted.removesuffix(".py").split(".")
        where = package
        while parts and (where / parts[0]).is_dir():
            where = where / parts.pop(0)
        if not parts or not (where / f"{parts[0]}.py").is_file():
            # Not one of ours (memory.stat, bpf/...), unless it names a class.
            assert not any(p[:1].isupper() for p in parts[1:]), f"{dotted}: no such module"
            continue
        module = where / f"{parts.pop(0)}.py"
        for name in parts:
            assert _defines(module, name), f"docs/architecture.md: {dotted}: no {name}"


def test_metric_attribute_table_names_exactly_the_defined_metrics():
    text = (ROOT / "docs" / "metrics.md").read_text()
    details = text.split("## Attributes and sources", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| (\w+) \|", details, re.M))
    defined = {spec.name: spec.kind for spec in ALL_SPECS}
    for name, kind in defined.items():
        assert rows.get(name) == kind, f"{name} ({kind}) missing or different in docs/metrics.md"
    # The rest are the stall metrics, made in stalls.py.
    source = (ROOT / "otel_pagecache" / "stalls.py").read_text()
    for name in rows.keys() - defined.keys():
        assert f'"{name}"' in source, f"docs/metrics.md names {name}, which nothing makes"


def test_no_links_outside_the_repository_and_every_relative_link_resolves():
    for path in MARKDOWN:
        text = path.read_text()
        assert "../shared" not in text, path
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            resolved = (path.parent / target).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{path}: {target}"


def test_readme_is_a_short_user_page():
    assert len((ROOT / "README.md").read_bytes()) <= 10_500
