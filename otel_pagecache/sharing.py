"""Shared hits: a memcg's lookups served by pages another memcg owns (issue 17).

The probe counts pages by (reader memcg, owner memcg) in extent or exact mode
(bpf/pagecache_sharing.h, docs/sharing.md). This turns the raw cumulative
counts into two monotonic views, each bounded per memcg:

- ``hits``: per reader, pages found that each owner owns
  (``pagecache.shared.hits`` on the reader's Resource);
- ``served``: per owner, pages of its cache each reader found
  (``pagecache.shared.served`` on the owner's Resource).

The first ``top_pairs`` partners a memcg is seen with (the largest first
within a cycle) are named; later ones are summed under ``other``. Names are
kept once given, so that every exported counter only grows. Memcgs that are
gone count as ``dying`` (and id 0 as ``unattributed``), as the other activity
counters do; their map entries are deleted once counted, so the map stays
bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .probes import ActivityReading

_log = logging.getLogger(__name__)

DYING = "dying"
UNATTRIBUTED = "unattributed"
OTHER = "other"
# How shared hits are told, per kernel (probes/core.py, choose_programs):
# "exact" per folio (fexit on filemap_get_pages), "extent" per (file, 2 MiB
# extent), with "file" per file once the extent map is full (counted in
# pagecache.agent.bpf.lost, reason sharing_extent_map_full), "none".
MODES = ("exact", "extent", "none")

Key = int | str  # a live memcg id, or DYING / UNATTRIBUTED / OTHER


class SharingProbe(Protocol):
    def forget_shared(self, pairs: Collection[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """Delete these (reader, owner) entries of the shared-hit map; the total
        of each as it was deleted (a pair missing by then is left out)."""
        ...


@dataclass
class SharedSnapshot:
    """Cumulative pages: ``hits[reader][owner]`` and ``served[owner][reader]``."""

    mode: str = "none"
    hits: dict[Key, dict[Key, int]] = field(default_factory=dict)
    served: dict[Key, dict[Key, int]] = field(default_factory=dict)


class SharedHitsTracker:
    """Owns the shared-hit baselines; ``update(reading, live_ids)`` once per collection."""

    def __init__(self, probe: SharingProbe, top_pairs: int = 10, mode: str = "none") -> None:
        self.probe = probe
        self.top_pairs = top_pairs
        self.mode = mode
        self._last: dict[tuple[int, int], int] = {}
        self._hits: dict[Key, dict[Key, int]] = {}
        self._served: dict[Key, dict[Key, int]] = {}

    def update(self, reading: ActivityReading, live_ids: Collection[int]) -> SharedSnapshot:
        def key(memcg: int) -> Key:
            if memcg in live_ids:
                return memcg
            return UNATTRIBUTED if memcg == 0 else DYING

        gone = [
            (reader, owner)
            for reader, owner in reading.shared
            if (reader and reader not in live_ids) or (owner and owner not in live_ids)
        ]
        # Pairs naming a gone memcg are deleted, so that the map holds live
        # pairs only, and counted up to their deletion: a reader still reading
        # a dead owner's pages adds to the entry between this reading and the
        # delete (a removed container's cache read for seconds lost ~8% so).
        taken = self._forget(gone) if gone else None
        deltas: list[tuple[int, Key, Key]] = []
        for pair, raw in reading.shared.items():
            if taken:
                raw = max(raw, taken.get(pair, 0))
            previous = self._last.get(pair, 0)
            delta = max(0, raw - previous)
            self._last[pair] = max(raw, previous)
            reader, owner = pair
            if delta:
                deltas.append((delta, key(reader), key(owner)))
        if taken is not None:
            for pair in gone:
                self._last.pop(pair, None)  # seen again, it starts from 0
        deltas.sort(key=lambda d: d[0], reverse=True)  # the largest get the names first
        for delta, reader, owner in deltas:
            if reader == owner and reader in (DYING, UNATTRIBUTED):
                continue  # two gone memcgs: no series says anything of it
            self._add(self._hits, reader, owner, delta)
            self._add(self._served, owner, reader, delta)
        self._prune(live_ids)
        return SharedSnapshot(
            mode=self.mode,
            hits={k: dict(v) for k, v in self._hits.items()},
            served={k: dict(v) for k, v in self._served.items()},
        )

    def _add(self, table: dict[Key, dict[Key, int]], memcg: Key, partner: Key, n: int) -> None:
        partners = table.setdefault(memcg, {})
        if partner not in partners:
            named = sum(1 for p in partners if p != OTHER)
            if named >= self.top_pairs:
                partner = OTHER
        partners[partner] = partners.get(partner, 0) + n

    def _forget(self, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], int] | None:
        """Delete these entries: the totals they had when deleted (None if
        the map could not be pruned: they stay, and are tried again)."""
        try:
            return self.probe.forget_shared(pairs)
        except Exception:  # noqa: BLE001 - pruning failing must not stop the collection
            _log.debug("forgetting %d shared-hit pairs failed", len(pairs), exc_info=True)
            return None

    def _prune(self, live_ids: Collection[int]) -> None:
        """Series of gone memcgs end (their partners' own series stay, under
        ``dying`` from now on)."""
        for table in (self._hits, self._served):
            for memcg in [m for m in table if isinstance(m, int) and m not in live_ids]:
                del table[memcg]
            for partners in table.values():
                for partner in [p for p in partners if isinstance(p, int) and p not in live_ids]:
                    # Its counts stay in this series under "dying": moving them
                    # keeps the series monotonic, and frees the name.
                    n = partners.pop(partner)
                    partners[DYING] = partners.get(DYING, 0) + n


# Point attributes; the partner's path is the key's word for a bucket.
OWNER_PATH = "pagecache.owner.cgroup.path"
OWNER_CONTAINER_ID = "pagecache.owner.container.id"
READER_PATH = "pagecache.reader.cgroup.path"
READER_CONTAINER_ID = "pagecache.reader.container.id"

Names = dict[int, tuple[str, str | None]]  # memcg id -> (cgroup path, container id)


def points(
    partners: dict[Key, int] | None, names: Names, path_attr: str, id_attr: str
) -> Iterator[tuple[float, dict]]:
    """One memcg's points of ``pagecache.shared.hits`` (owners) or
    ``.served`` (readers)."""
    for partner, pages in (partners or {}).items():
        if isinstance(partner, int):
            path, container_id = names.get(partner, (DYING, None))
        else:
            path, container_id = partner, None
        attrs = {path_attr: path}
        if container_id:
            attrs[id_attr] = container_id
        yield pages, attrs


Points = list[tuple[float, dict]]


def series_points(shared: SharedSnapshot | None, names: Names) -> dict[Key, tuple[Points, Points]]:
    """Per memcg id (or ``dying``/``unattributed`` bucket): its
    (``pagecache.shared.hits`` points, ``pagecache.shared.served`` points)."""
    out: dict[Key, tuple[Points, Points]] = {}
    if shared is None:
        return out
    for memcg, partners in shared.hits.items():
        out.setdefault(memcg, ([], []))[0].extend(
            points(partners, names, OWNER_PATH, OWNER_CONTAINER_ID)
        )
    for memcg, partners in shared.served.items():
        out.setdefault(memcg, ([], []))[1].extend(
            points(partners, names, READER_PATH, READER_CONTAINER_ID)
        )
    return out


def top_lines(
    shared: SharedSnapshot | None, shown: list[tuple[int, str]], limit: int = 3
) -> list[str]:
    """``top``'s shared-hit section: for each container shown ((memcg id,
    display name), in the table's order), whose cache it reads and who reads
    its cache, the ``limit`` largest of each (cumulative pages)."""
    if shared is None:
        return []
    names = dict(shown)

    def partners(table: dict[Key, dict[Key, int]], memcg: int) -> str:
        ranked = sorted((table.get(memcg) or {}).items(), key=lambda kv: kv[1], reverse=True)
        return ", ".join(
            f"{names.get(p, p) if isinstance(p, int) else p} {n}" for p, n in ranked[:limit]
        )

    lines = []
    for memcg, name in shown:
        reads, read_by = partners(shared.hits, memcg), partners(shared.served, memcg)
        if reads or read_by:
            lines.append(
                f"{name}: reads cache of [{reads or '-'}]; its cache read by [{read_by or '-'}]"
            )
    if lines:
        lines.insert(0, f"shared hits ({shared.mode} mode, pages since start):")
    return lines
