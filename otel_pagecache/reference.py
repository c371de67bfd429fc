"""Reference tables generated from the code's own definitions, so docs cannot drift.

``scripts/gendocs`` writes them into ``docs/``, between ``BEGIN GENERATED`` and
``END GENERATED`` markers; ``tests/test_docs.py`` fails when a file is stale.
The tables: settings (``config.SETTINGS``), metrics (``metrics.ALL_SPECS``)
and modules (each module's docstring, first paragraph).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .config import OTHER_VARIABLES, SETTINGS, Setting, Variable
from .metrics import ALL_SPECS

_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n).*?(<!-- END GENERATED: (?P=name) -->)",
    re.S,
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def metrics_table() -> str:
    rows = ["| name | instrument | unit | description |", "|---|---|---|---|"]
    for spec in ALL_SPECS:
        rows.append(f"| `{spec.name}` | {spec.kind} | `{spec.unit}` | {_cell(spec.description)} |")
    return "\n".join(rows) + "\n"


def _where(setting: Setting) -> str:
    if setting.plugin:
        return "plugin"
    return ", ".join(setting.commands) or "all commands"


_HEADER = [
    "| variable | flag | default | accepted | used by | meaning |",
    "|---|---|---|---|---|---|",
]


def _variable_row(v: Variable) -> str:
    names = ", ".join(f"`{name}`" for name in v.names)
    default = f"`{v.default}`" if v.default else ""
    return f"| {names} | | {default} | | {_cell(v.used_by)} | {_cell(v.meaning)} |"


def settings_table(standard: bool) -> str:
    """This project's settings (``standard=False``) or the OpenTelemetry ones it reads."""
    rows = list(_HEADER)
    for s in SETTINGS:
        if s.standard != standard:
            continue
        flag = f"`{s.flag}`" if s.flag else ""
        if s.flag and s.flag_unit:
            flag += f" (in {s.flag_unit})"
        default = f"`{s.shown_default()}`" if s.shown_default() else ""
        env = f"`{s.env}`" if s.env else "(flag only)"
        rows.append(
            f"| {env} | {flag} | {default} | {_cell(s.kind.accepted)} | {_where(s)} "
            f"| {_cell(s.help)} |"
        )
    if standard:
        rows += [_variable_row(v) for v in OTHER_VARIABLES if v.names[0].startswith("OTEL_")]
    return "\n".join(rows) + "\n"


def other_variables_table() -> str:
    """Variables of other programs than OpenTelemetry's that this project reads."""
    rows = [_variable_row(v) for v in OTHER_VARIABLES if not v.names[0].startswith("OTEL_")]
    return "\n".join(_HEADER + rows) + "\n"


PACKAGE = Path(__file__).resolve().parent


def module_concern(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line (read, not imported)."""
    doc = ast.get_docstring(ast.parse(path.read_text(), str(path)))
    if not doc or not doc.strip():
        raise ValueError(f"{path}: a module needs a docstring that explains its concern")
    first = doc.strip().split("\n\n", 1)[0]
    return " ".join(first.split()).replace("``", "`")


def modules_table() -> str:
    """Every module of the package, each with its concern from its docstring."""
    rows = ["| module | concern |", "|---|---|"]
    paths = sorted(PACKAGE.rglob("*.py"), key=lambda p: p.relative_to(PACKAGE).parts)
    for path in paths:
        name = path.relative_to(PACKAGE).as_posix()
        if name.endswith("/__init__.py"):
            name = name[: -len("__init__.py")]
        rows.append(f"| `{name}` | {_cell(module_concern(path))} |")
    return "\n".join(rows) + "\n"


GENERATORS = {
    "metrics": metrics_table,
    "modules": modules_table,
    "settings": lambda: settings_table(standard=False),
    "standard-settings": lambda: settings_table(standard=True),
    "other-variables": other_variables_table,
}


def regenerate(text: str) -> str:
    """``text`` with every generated block replaced by what the code says now."""
    return _BLOCK.sub(lambda m: m.group(1) + GENERATORS[m["name"]]() + m.group(3), text)
