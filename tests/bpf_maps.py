"""Reading the agent's BPF maps from outside it, through bpftool, as a user would."""

from __future__ import annotations

import json
import subprocess


def map_entries(name: str) -> list[dict]:
    """The formatted entries ({"key": ..., "value": ...}) of every map called
    ``name`` (``bpftool -j map dump name ...``); none when bpftool fails."""
    out = subprocess.run(
        ["bpftool", "-j", "map", "dump", "name", name], capture_output=True, text=True
    ).stdout
    try:
        dump = json.loads(out or "[]")
    except ValueError:
        return []
    if not isinstance(dump, list):
        return []
    # one map:  [{"key": ["0x92", ...], "formatted": {"key": 4242, ...}}, ...]
    # several:  [{"id": 13339, "type": "hash", "name": "span_slot_bases", "elements": [...]}, ...]
    # (several when another agent on the host has a map of the same name)
    raw: list = []
    for item in dump:
        if isinstance(item, dict) and isinstance(item.get("elements"), list):
            raw += item["elements"]
        else:
            raw.append(item)
    return [e["formatted"] for e in raw if isinstance(e, dict) and "formatted" in e]


def span_slot_base(pid: int) -> dict | None:
    """span_slot_bases' value for process ``pid`` ({"address", "count", "size"})."""
    for entry in map_entries("span_slot_bases"):
        if entry.get("key") == pid:
            return entry.get("value")
    return None
