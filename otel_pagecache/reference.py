"""Reference tables generated from the code's own definitions, so docs cannot drift.

``scripts/gendocs`` writes them into ``docs/``, between ``BEGIN GENERATED`` and
``END GENERATED`` markers; ``tests/test_docs.py`` fails when a file is stale.
"""

from __future__ import annotations

import re

from .config import PASSED_THROUGH, SETTINGS, Setting
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
        rows.append(
            f"| `{spec.name}` | {spec.kind} | `{spec.unit}` | {_cell(spec.description)} |"
        )
    return "\n".join(rows) + "\n"


def _where(setting: Setting) -> str:
    if setting.plugin:
        return "plugin"
    return ", ".join(setting.commands) or "all commands"


def settings_table(standard: bool) -> str:
    """This project's settings (``standard=False``) or the OpenTelemetry ones it reads."""
    rows = [
        "| variable | flag | default | accepted | used by | meaning |",
        "|---|---|---|---|---|---|",
    ]
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
        for name, meaning in PASSED_THROUGH:
            rows.append(f"| `{name}` | | | | run (read by the exporters) | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


GENERATORS = {
    "metrics": metrics_table,
    "settings": lambda: settings_table(standard=False),
    "standard-settings": lambda: settings_table(standard=True),
}


def regenerate(text: str) -> str:
    """``text`` with every generated block replaced by what the code says now."""
    return _BLOCK.sub(lambda m: m.group(1) + GENERATORS[m["name"]]() + m.group(3), text)
