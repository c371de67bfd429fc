"""Links from kernel stall spans to the application span that was running.

Two halves, one per side of the privilege boundary:

- ``SpanSlots`` (in the application, unprivileged): an array of
  ``struct span_slot`` (bpf/pagecache.h) in the process's own memory, one
  slot per thread (index ``tid % count``), holding the span the thread is
  running. Its address is published in ``/tmp/otel-pagecache-slots.<pid>``
  inside the application's own filesystem view.
- ``SlotRegistry`` (in the node agent, root): finds those files through
  ``/proc/<pid>/root``, and hands each address to the stall programs, which
  copy the stalled thread's slot with ``bpf_probe_read_user`` when a stall
  starts (the stalled thread is the current task).

The registry file is read with O_NOFOLLOW, at most 256 bytes, and only
parsed as three numbers: a hostile container can at worst make its own
stalls unlinked.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable

from .probes.layout import SpanSlot

_log = logging.getLogger(__name__)

REGISTRY_DIR = "/tmp"
REGISTRY_PREFIX = "otel-pagecache-slots."
SLOT_COUNT = 4096


def registry_path(pid: int, root: str = "") -> str:
    return f"{root}{REGISTRY_DIR}/{REGISTRY_PREFIX}{pid}"


class SpanSlots:
    """The application side; ``set``/``clear`` are called on the thread concerned."""

    def __init__(self, count: int = SLOT_COUNT) -> None:
        self.count = count
        self._slots = (SpanSlot * count)()
        self.address = ctypes.addressof(self._slots)
        self.pid = os.getpid()
        self.path = registry_path(self.pid)
        tmp = f"{self.path}.{threading.get_native_id()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{self.address} {count} {ctypes.sizeof(SpanSlot)}\n")
        os.replace(tmp, self.path)  # never seen half-written
        atexit.register(self.close)

    def set(self, tid: int, trace_id: int, span_id: int, trace_flags: int) -> None:
        slot = self._slots[tid % self.count]
        slot.tid = tid
        slot.trace_flags = trace_flags
        ctypes.memmove(slot.trace_id, trace_id.to_bytes(16, "big"), 16)
        ctypes.memmove(slot.span_id, span_id.to_bytes(8, "big"), 8)

    def clear(self, tid: int) -> None:
        slot = self._slots[tid % self.count]
        if slot.tid == tid:
            ctypes.memset(ctypes.addressof(slot), 0, ctypes.sizeof(SpanSlot))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def parse_registry(data: bytes) -> tuple[int, int, int] | None:
    """``b"140234567 4096 32\\n"`` -> (address, count, size); None for anything else."""
    fields = data.split()
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        return None
    address, count, size = (int(f) for f in fields)
    if not (0 < count <= 1 << 20 and size == ctypes.sizeof(SpanSlot) and address > 0):
        return None
    return address, count, size


class SlotRegistry:
    """The agent side: keeps the stall programs' map of span slots current."""

    def __init__(
        self,
        publish: Callable[[int, int, int, int], None],
        forget: Callable[[list[int]], None],
        proc_root: str = "/proc",
        every_s: float = 2.0,
    ) -> None:
        self._publish = publish
        self._forget = forget
        self._proc = proc_root
        self._every_s = every_s
        self._known: dict[int, tuple[int, int, int]] = {}
        self._last = float("-inf")

    def maybe_scan(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            self.scan()

    def scan(self) -> None:
        """One pass over /proc: a stat per process, a read for those with a registry."""
        seen: dict[int, tuple[int, int, int]] = {}
        try:
            pids = [int(name) for name in os.listdir(self._proc) if name.isdigit()]
        except OSError:
            return
        for pid in pids:
            entry = self._read(pid)
            if entry is not None:
                seen[pid] = entry
        for pid, entry in seen.items():
            if self._known.get(pid) != entry:
                try:
                    self._publish(pid, *entry)
                except Exception:  # noqa: BLE001 - map full or probe closed: try next scan
                    _log.debug("publishing span slots of %d failed", pid, exc_info=True)
                    continue
        gone = [pid for pid in self._known if pid not in seen]
        if gone:
            try:
                self._forget(gone)
            except Exception:  # noqa: BLE001
                _log.debug("forgetting span slots failed", exc_info=True)
        self._known = seen

    def _read(self, pid: int) -> tuple[int, int, int] | None:
        path = registry_path(pid, f"{self._proc}/{pid}/root")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            return parse_registry(os.read(fd, 256))
        except OSError:
            return None
        finally:
            os.close(fd)
