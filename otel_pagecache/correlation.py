"""Links from kernel stall spans to the application span that was running.

Two halves, one per side of the privilege boundary:

- ``SpanSlots`` (in the application, unprivileged): an array of
  ``struct span_slot`` (bpf/pagecache.h) in the process's own memory, one
  slot per thread (index ``tid % count``), holding the span the thread is
  running. Its address is published in ``/tmp/otel-pagecache-slots.<pid>``
  inside the application's own filesystem view; then the plugin renames its
  thread to the name it already has, with the slots' address in the
  rename's spare arguments, which the stall programs see at once and record
  (``slots_announced`` in bpf/pagecache_bookkeeping.h).
- ``SlotRegistry`` (in the node agent, root): finds those files through
  ``/proc/<pid>/root``, and hands each address to the stall programs, which
  copy the stalled thread's slot with ``bpf_probe_read_user`` when a stall
  starts (the stalled thread is the current task). The programs record an
  announced address themselves, from the rename's saved registers, so a
  process links from its first stall; the registry reads the process's file
  as soon as the programs report its announcement (where the registers
  could not be read, that is what publishes it), and a scan of /proc every 2 s
  catches the rest (processes that started before the agent, a full
  announcement ring) and forgets processes that are gone.

The registry file is read with O_NOFOLLOW, at most 256 bytes, and only
parsed as three numbers: a hostile container can at worst make its own
stalls unlinked.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import queue
import stat
import tempfile
import time
from collections.abc import Callable

from .probes.layout import MAX_TRACED_PROCESSES, SPAN_SLOTS_MAGIC, SpanSlot

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
        self._closed = False
        self._unpublished_child = False
        self._publish()
        atexit.register(self.close)
        os.register_at_fork(after_in_child=self._publish_in_child)

    def _publish_in_child(self) -> None:
        """A forked child has the same slots at the same address, under its own
        pid: it publishes them at its first span (``set``), not at the fork.
        A child that execs at once (``subprocess`` with a ``preexec_fn`` forks
        and runs these handlers) would otherwise leave behind a registry that
        nothing removes (its exec skips ``atexit``), naming memory of another
        program. Not once closed: at-fork handlers cannot be unregistered,
        and a process whose instrumentation was removed must not hand its
        children slots no span fills."""
        self._unpublished_child = not self._closed

    def _publish_child(self) -> None:
        self._unpublished_child = False
        try:
            self._publish()
        except OSError as e:
            _log.debug("span slots of the forked child not published (%s)", e)

    def _publish(self) -> None:
        """Write the registry file for this process (pids as this process sees them)."""
        self.pid = os.getpid()
        self.path = registry_path(self.pid)
        # mkstemp: O_CREAT|O_EXCL with a random name, so a planted symlink in
        # /tmp cannot make us write elsewhere; then an atomic rename.
        fd, tmp = tempfile.mkstemp(prefix=f"{REGISTRY_PREFIX}{self.pid}.", dir=REGISTRY_DIR)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, f"{self.address} {self.count} {ctypes.sizeof(SpanSlot)}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        announce(self.address, self.count, ctypes.sizeof(SpanSlot))

    def set(self, tid: int, trace_id: int, span_id: int, trace_flags: int) -> None:
        if self._unpublished_child:
            self._publish_child()
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
        self._closed = True
        # Only the process that wrote it: a forked child exiting must not
        # remove its parent's registry.
        if os.getpid() == self.pid:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


PR_SET_NAME = 15
PR_GET_NAME = 16


@functools.cache
def _prctl() -> Callable[..., int] | None:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_char_p] + [ctypes.c_ulong] * 3
    return prctl


def announce(address: int, count: int, size: int) -> None:
    """Rename this thread to the name it has, the slots in the rename's spare
    arguments (which the kernel ignores for PR_SET_NAME): the stall programs
    see the rename (task_rename) and record the slots from the syscall's
    saved registers, and the node agent reads the registry file at once. A
    no-op for the application; without prctl (not Linux) the agent's next
    scan finds the file instead."""
    prctl = _prctl()
    name = ctypes.create_string_buffer(16)
    if prctl is None or prctl(PR_GET_NAME, name, 0, 0, 0) != 0:
        _log.debug("span slots not announced: the agent finds them within 2 s")
        return
    if prctl(PR_SET_NAME, name.value, address, count << 32 | size, SPAN_SLOTS_MAGIC) != 0:
        _log.debug(
            "span slots not announced (%s): the agent finds them within 2 s",
            os.strerror(ctypes.get_errno()),
        )


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
    """The agent side: keeps the stall programs' map of span slots current.

    ``request(pid)`` (any thread: the ring-buffer poller calls it for each
    announcement, and for each stall that came without a link) queues one
    process; ``run_once`` (the registry's own thread) reads the queued
    processes' files, and scans /proc when the scan is due. A stall's request
    is skipped for a process already known, or found without a registry
    since the last scan (an announcement's never is: it comes right after the
    file was written). Requests are bounded: a queue of ``MAX_PENDING``, and
    at most ``MAX_LOOKUPS_PER_SCAN`` lookups between two scans, so a host that
    execs many programs of the same name (also a same-name rename) costs at
    most that; what is dropped the next scan finds."""

    MAX_PENDING = 1024
    MAX_LOOKUPS_PER_SCAN = 512

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
        self._pending: queue.Queue[tuple[int, bool]] = queue.Queue(self.MAX_PENDING)
        self._lookups = 0
        self._absent: set[int] = set()  # looked up without a registry since the last scan
        # Announced without a registry this agent can use: the programs may
        # have recorded their slots anyway (from the announcement itself), so
        # they are forgotten when the process is gone. Bounded like the map.
        self._unfiled: set[int] = set()
        self.announced = 0  # processes published on request, between scans

    def request(self, pid: int, announced: bool = True) -> None:
        """Look at process ``pid`` soon: it announced span slots, or (``announced``
        false) one of its stalls came without a link. Never blocks."""
        with contextlib.suppress(queue.Full):
            self._pending.put_nowait((pid, announced))

    def run_once(self, timeout_s: float) -> None:
        """Serve the requests that arrive within ``timeout_s``, then scan if due."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                pid, announced = self._pending.get(timeout=left)
            except queue.Empty:
                break
            if not announced and (pid in self._known or pid in self._absent):
                continue
            if self._lookups < self.MAX_LOOKUPS_PER_SCAN:
                self._lookups += 1
                if not self.lookup(pid) and announced and len(self._unfiled) < MAX_TRACED_PROCESSES:
                    self._unfiled.add(pid)
        self.maybe_scan()

    def lookup(self, pid: int) -> bool:
        """Publish the span slots of one process, if it has a valid registry."""
        entry = self._read(pid)
        if entry is None:
            self._absent.add(pid)
            return False
        if self._known.get(pid) == entry:
            return True
        try:
            self._publish(pid, *entry)
        except Exception:  # noqa: BLE001 - map full or probe closed: the scan retries
            _log.debug("publishing span slots of %d failed", pid, exc_info=True)
            return False
        _log.debug("span slots of pid %d on request: %#x, %d x %d bytes", pid, *entry)
        self._known[pid] = entry
        self.announced += 1
        return True

    def maybe_scan(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            self._lookups = 0
            self._absent.clear()
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
        for pid, entry in list(seen.items()):
            if self._known.get(pid) != entry:
                _log.debug("span slots of pid %d by the scan: %#x, %d x %d bytes", pid, *entry)
                try:
                    self._publish(pid, *entry)
                except Exception:  # noqa: BLE001 - map full or probe closed: try next scan
                    _log.debug("publishing span slots of %d failed", pid, exc_info=True)
                    del seen[pid]
        alive = set(pids)
        gone = [pid for pid in self._known if pid not in seen]
        gone += [pid for pid in self._unfiled if pid not in alive and pid not in self._known]
        self._unfiled = {pid for pid in self._unfiled if pid in alive and pid not in seen}
        if gone:
            _log.debug("span slots forgotten (no registry any more): pids %s", gone[:20])
            try:
                self._forget(gone)
            except Exception:  # noqa: BLE001
                _log.debug("forgetting span slots failed", exc_info=True)
        self._known = seen

    def _read(self, pid: int) -> tuple[int, int, int] | None:
        """The registry of host pid ``pid``, if that process itself wrote it.

        The file is named after the pid the process sees (its innermost PID
        namespace: NSpid), lives in its own /tmp, and must be a regular file
        owned by the process's user and written after the process started:
        another user's planted file, or a stale one of a recycled pid, is
        ignored (it could otherwise aim the kernel's user-memory read)."""
        proc = f"{self._proc}/{pid}"
        try:
            owner = os.stat(proc).st_uid
            ns_pid, started = _ns_pid_and_start(proc)
        except (OSError, ValueError):
            return None
        try:
            fd = os.open(
                registry_path(ns_pid, f"{proc}/root"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
            )
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != owner or st.st_mtime < started - 1:
                return None
            return parse_registry(os.read(fd, 256))
        except OSError:
            return None
        finally:
            os.close(fd)


@functools.lru_cache(maxsize=4)
def _boot_time(proc_root: str) -> float:
    with open(f"{proc_root}/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise ValueError("no btime")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _ns_pid_and_start(proc: str) -> tuple[int, float]:
    """(pid in the process's innermost PID namespace, start time as epoch seconds)."""
    ns_pid = None
    with open(f"{proc}/status") as f:
        for line in f:
            # NSpid:	6710	1
            if line.startswith("NSpid:"):
                ns_pid = int(line.split()[-1])
                break
    if ns_pid is None:
        raise ValueError("no NSpid")
    with open(f"{proc}/stat") as f:
        # 6710 (python3) S 1 ... field 22 is the start time in clock ticks after boot
        after_comm = f.read().rsplit(")", 1)[1].split()
    started = int(after_comm[19]) / _CLOCK_TICKS
    return ns_pid, _boot_time(os.path.dirname(proc)) + started
