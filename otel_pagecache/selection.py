"""Which memcgs a cycle exports: path globs, containers only, and the cap by size.

Selection happens before ``memory.stat`` is read (``residency.ResidencyReader``):
the globs and the container test need only the path, and the cap needs only
one number per memcg, its usage (``memory.usage_in_bytes`` on v1,
``memory.current`` on v2, children included). The cap keeps the largest
memcgs: usage counts children, so a parent always ranks with or above its
children and what the cap keeps is the top of the tree, never a container
without its pod. When it drops memcgs, ``CapWarnings`` says so once when it
starts and once when it stops.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .config import Settings
from .containers import Identity

CAP_SETTING = "OTEL_PAGECACHE_MAX_CGROUPS"

_log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Selection:
    """Which memcgs are exported: path globs and a cap, to bound cardinality."""

    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    containers_only: bool = False
    max_cgroups: int = Settings.max_cgroups

    def admits(self, path: str, identity: Identity) -> bool:
        if self.containers_only and identity.kind != "container":
            return False
        if self.include and not any(fnmatch.fnmatchcase(path, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(path, p) for p in self.exclude)


def largest(candidates: list[T], size: Callable[[T], int | None], cap: int) -> list[T]:
    """The ``cap`` largest of ``candidates`` by ``size``, in their original order.

    An unknown size (the v2 root has no ``memory.current``; a file that could
    not be read) ranks first: the v2 root holds everything, and a memcg is
    never dropped for a read that failed. Ties keep the original order.
    """
    if len(candidates) <= cap:
        return candidates
    ranked = sorted(
        range(len(candidates)),
        key=lambda i: -(1 << 126) if (s := size(candidates[i])) is None else -s,
    )
    kept = sorted(ranked[:cap])
    return [candidates[i] for i in kept]


class CapWarnings:
    """One WARNING when the cap starts dropping memcgs, one when it stops.

    Not one per cycle: a host above the cap stays above it, and a line every
    interval would bury everything else. ``dropped`` is the last cycle's count.
    """

    def __init__(self, cap: int, log: logging.Logger | None = _log) -> None:
        self.cap = cap
        self.dropped = 0
        self.admitted = 0
        self._log = log  # None: count only (doctor reports the figures itself)

    def update(self, admitted: int) -> None:
        """Record one cycle: ``admitted`` memcgs passed the globs and the container test."""
        dropped = max(0, admitted - self.cap)
        self.admitted = admitted
        if self._log is None:
            pass
        elif dropped and not self.dropped:
            self._log.warning(
                "exporting %d of %d memcgs: the cap of %d (%s) drops %d, the smallest by "
                "memory usage; raise %s to export them all",
                self.cap,
                admitted,
                self.cap,
                CAP_SETTING,
                dropped,
                CAP_SETTING,
            )
        elif self.dropped and not dropped:
            self._log.warning(
                "the cap of %d memcgs (%s) no longer drops any: %d exported (it dropped %d before)",
                self.cap,
                CAP_SETTING,
                admitted,
                self.dropped,
            )
        self.dropped = dropped
