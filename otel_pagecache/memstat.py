"""Read one memory cgroup's files: ``memory.stat`` and friends, v1 and v2.

Parsers take bytes and never raise: unknown keys are ignored, garbage values
dropped, and a key the kernel does not have yields no entry (never a zero).
Readers take the cgroup directory and report a missing file as ``None``: a
cgroup removed between listing and reading is normal.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# A key map: (needle, canonical name) pairs, the needle being b"\n<key> " so a
# key is only found at the start of a line and never as another key's suffix.
KeyMap = tuple[tuple[bytes, str], ...]


def key_map(keys: Mapping[bytes, str]) -> KeyMap:
    return tuple((b"\n" + key + b" ", name) for key, name in keys.items())


# Canonical field names used by the rest of the agent, and the memory.stat key
# behind each, per hierarchy version. v1 keys without "total_" are the memcg's
# own (local) pages; v2 keys are hierarchical (the memcg and all descendants).
V1_STAT_KEYS: KeyMap = key_map(
    {
        b"cache": "file",  # includes shmem, like v2 "file"
        b"active_file": "active_file",
        b"inactive_file": "inactive_file",
        b"dirty": "dirty",
        b"writeback": "writeback",
        b"mapped_file": "mapped",
        b"shmem": "shmem",
        b"workingset_refault_file": "refault_file",
        # Absent on v1 (it only has workingset_refault_*), but kept should a kernel add it.
        b"workingset_activate_file": "activate_file",
        # Hierarchical figures for the memcg-as-a-whole family (working set, faults).
        b"total_inactive_file": "tree_inactive_file",
        b"total_pgmajfault": "tree_pgmajfault",
    }
)
V2_STAT_KEYS: KeyMap = key_map(
    {
        b"file": "file",
        b"active_file": "active_file",
        b"inactive_file": "inactive_file",
        b"file_dirty": "dirty",
        b"file_writeback": "writeback",
        b"file_mapped": "mapped",
        b"shmem": "shmem",
        b"workingset_refault_file": "refault_file",
        b"workingset_activate_file": "activate_file",
        b"pgmajfault": "tree_pgmajfault",
    }
)

# Fields that are the memcg's own on v1 and must be made own on v2 by
# subtracting the children (see residency.own_stats).
OWN_FIELDS: tuple[str, ...] = (
    "file",
    "active_file",
    "inactive_file",
    "dirty",
    "writeback",
    "mapped",
    "shmem",
    "refault_file",
    "activate_file",
)

# v1 reports "no limit" as PAGE_COUNTER_MAX rounded down to a page:
# 9223372036854771712 on 4 KiB pages; anything this large is unlimited.
V1_UNLIMITED = 9223372036854771712

# errno values meaning "the cgroup went away under us" rather than a fault.
_VANISHED = {errno.ENOENT, errno.ENODEV, errno.ESRCH}


class ReadStats:
    """Counts what went wrong while reading, by kind; shared by one collection cycle."""

    __slots__ = ("errors", "vanished")

    def __init__(self) -> None:
        self.errors = 0
        self.vanished = 0


def _count(stats: ReadStats | None, error: OSError) -> None:
    if stats is not None:
        if error.errno in _VANISHED:
            stats.vanished += 1
        else:
            stats.errors += 1


def read_file(path: str, stats: ReadStats | None = None, dir_fd: int | None = None) -> bytes | None:
    """Whole small file as bytes, or None. ``os.read`` avoids the text-IO overhead;
    ``dir_fd`` makes the path lookup relative to an open cgroup directory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        _count(stats, e)
        return None
    try:
        # cgroup and proc files are generated in one go and are far below
        # 64 KiB; a second read only happens for garbage, and is bounded.
        data = os.read(fd, 65536)
        if len(data) == 65536:
            data += os.read(fd, 1 << 20)
        return data
    except OSError as e:
        _count(stats, e)
        return None
    finally:
        os.close(fd)


def parse_flat_keyed(data: bytes, wanted: KeyMap) -> dict[str, int]:
    """Parse "key value" lines, keeping the ``wanted`` keys under their canonical names.

    Sample (v1 memory.stat): ``cache 4313088``; (v2): ``file_dirty 40960``.
    Looks each wanted key up with ``bytes.find`` instead of splitting every
    line: v1 ``memory.stat`` has ~45 lines and we want ~11 of them. A key seen
    twice keeps its first value; a garbled value is dropped.
    """
    out: dict[str, int] = {}
    buf = b"\n" + data
    for needle, name in wanted:
        at = buf.find(needle)
        if at < 0:
            continue
        start = at + len(needle)
        end = buf.find(b"\n", start)
        value = buf[start:end] if end >= 0 else buf[start:]
        if value.isdigit():  # also rejects signs, blanks and trailing garbage
            out[name] = int(value)
    return out


def parse_single_value(data: bytes | None, unlimited_word: bytes = b"max") -> int | None:
    """A one-number file (``memory.current``, ``memory.max`` …); None when absent,
    garbage or unlimited. Sample: ``9223372036854771712`` (v1), ``max`` (v2)."""
    if not data:
        return None
    token = data.strip()
    if token == unlimited_word:
        return None
    try:
        number = int(token)
    except ValueError:
        return None
    return number if number >= 0 else None


def parse_pressure_totals(data: bytes | None) -> dict[str, int]:
    """``memory.pressure`` → {"some": total_us, "full": total_us}.

    Sample: ``some avg10=0.00 avg60=0.00 avg300=0.00 total=1234``
    """
    out: dict[str, int] = {}
    if not data:
        return out
    for line in data.splitlines():
        fields = line.split()
        if not fields or fields[0] not in (b"some", b"full"):
            continue
        for f in fields[1:]:
            if f.startswith(b"total=") and f[6:].isdigit():
                out[fields[0].decode()] = int(f[6:])
    return out


_EVENT_KEYS = key_map({b"max": "max", b"oom": "oom", b"oom_kill": "oom_kill"})


@dataclass(slots=True)
class MemcgReading:
    """What one memcg's files said, before v2 children are subtracted.

    ``stat`` holds canonical names (see ``V1_STAT_KEYS``/``V2_STAT_KEYS``);
    figures the kernel does not provide are simply absent.
    """

    stat: dict[str, int] = field(default_factory=dict)
    usage: int | None = None
    limit: int | None = None  # None: unlimited or unknown
    limit_hits: int | None = None
    pressure_us: dict[str, int] = field(default_factory=dict)
    present: bool = True  # False when memory.stat was missing (the cgroup vanished)
    nlink: int | None = None  # the directory's link count: 2 + subdirectories on kernfs
    sized: bool = False  # usage read (read_size, or read_memcg)
    read: bool = False  # memory.stat and the rest read (read_memcg)


def read_size(
    directory: str, version: int, stats: ReadStats | None = None, usage: bool = True
) -> MemcgReading:
    """The first, cheap read of a cycle; never raises.

    Opens the directory for its link count (see ``cgroupfs.CgroupTree``) and,
    when ``usage``, reads the memcg's size: ``memory.usage_in_bytes`` (v1) or
    ``memory.current`` (v2), one number. That is enough to choose which memcgs
    to read in full (``residency.choose``) before any ``memory.stat`` is parsed.
    """
    reading = MemcgReading()
    dir_fd = _open_directory(directory, reading, stats)
    if dir_fd is None:
        return reading
    try:
        reading.nlink = os.fstat(dir_fd).st_nlink
        if usage:
            reading.usage = _read_usage(version, dir_fd, stats)
            reading.sized = True
            # No usage file: not a memcg (v2: memory not enabled in the
            # parent's subtree_control), or gone; but the v2 root has none.
            if reading.usage is None and not _exists("memory.stat", dir_fd):
                reading.present = False
    except OSError as e:
        _count(stats, e)
        reading.present = False
    finally:
        os.close(dir_fd)
    return reading


def _open_directory(directory: str, reading: MemcgReading, stats: ReadStats | None) -> int | None:
    """The memcg's directory, opened once for its files; None (counted, and the
    reading marked absent) when it is gone or unreadable."""
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        _count(stats, e)
        reading.present = False
        return None


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd)
    except OSError:
        return False
    return True


def _read_usage(version: int, dir_fd: int, stats: ReadStats | None) -> int | None:
    if version == 1:
        return parse_single_value(read_file("memory.usage_in_bytes", stats, dir_fd))
    # The v2 root has no memory.current: absence is not an error.
    return parse_single_value(read_file("memory.current", None, dir_fd))


def read_memcg(
    directory: str,
    version: int,
    stats: ReadStats | None = None,
    reading: MemcgReading | None = None,
) -> MemcgReading:
    """Read the files of one memcg directory; never raises.

    The directory is opened once and its files are opened relative to it:
    one full path lookup instead of one per file, and ``fstat`` of the
    directory gives its link count (see ``cgroupfs.CgroupTree``) for free.
    ``reading``, from ``read_size``, is completed in place: its link count
    and usage are not read again.
    """
    if reading is None:
        reading = MemcgReading()
    elif not reading.present:
        return reading
    dir_fd = _open_directory(directory, reading, stats)
    if dir_fd is None:
        return reading
    try:
        if reading.nlink is None:
            reading.nlink = os.fstat(dir_fd).st_nlink
        raw = read_file("memory.stat", stats, dir_fd)
        if raw is None:
            reading.present = False
        else:
            if not reading.sized:
                reading.usage = _read_usage(version, dir_fd, stats)
                reading.sized = True
            if version == 1:
                _fill_v1(reading, raw, dir_fd, stats)
            else:
                _fill_v2(reading, raw, dir_fd)
            reading.read = True
    except OSError as e:
        _count(stats, e)
        reading.present = False
    finally:
        os.close(dir_fd)
    return reading


def _fill_v1(reading: MemcgReading, raw: bytes, dir_fd: int, stats: ReadStats | None) -> None:
    reading.stat = parse_flat_keyed(raw, V1_STAT_KEYS)
    limit = parse_single_value(read_file("memory.limit_in_bytes", stats, dir_fd))
    reading.limit = None if limit is None or limit >= V1_UNLIMITED else limit
    reading.limit_hits = parse_single_value(read_file("memory.failcnt", stats, dir_fd))


def _fill_v2(reading: MemcgReading, raw: bytes, dir_fd: int) -> None:
    reading.stat = parse_flat_keyed(raw, V2_STAT_KEYS)
    # The root cgroup has no memory.max: absence is not an error, so these
    # reads do not count failures.
    reading.limit = parse_single_value(read_file("memory.max", None, dir_fd))
    # memory.events.local (5.7+) counts hits of this memcg's own limit, like
    # v1 memory.failcnt; plain memory.events also counts descendants' limits.
    events = read_file("memory.events.local", None, dir_fd)
    if events is None:
        events = read_file("memory.events", None, dir_fd)
    if events is not None:
        reading.limit_hits = parse_flat_keyed(events, _EVENT_KEYS).get("max")
    # Pressure stall information needs CONFIG_PSI and psi=1: absent is normal.
    reading.pressure_us = parse_pressure_totals(read_file("memory.pressure", None, dir_fd))


def parse_meminfo(data: bytes | None) -> dict[str, int]:
    """``/proc/meminfo`` → bytes per key. Sample: ``Active(file):     380928 kB``."""
    out: dict[str, int] = {}
    if not data:
        return out
    for line in data.splitlines():
        key, sep, rest = line.partition(b":")
        if not sep:
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            value = int(fields[0])
        except ValueError:
            continue
        if value < 0:
            continue
        scale = 1024 if len(fields) > 1 and fields[1] == b"kB" else 1
        out[key.strip().decode("ascii", "replace")] = value * scale
    return out


def read_meminfo(proc_root: str = "/proc") -> dict[str, int]:
    return parse_meminfo(read_file(os.path.join(proc_root, "meminfo")))
