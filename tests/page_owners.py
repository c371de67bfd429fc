"""Ground truth for shared hits: which memcg each cached page of a file is
charged to, from the kernel's own record (/proc/kpagecgroup).

    python tests/page_owners.py PATH   prints {"<memcg inode>": pages, ...} as JSON

Maps the file, touches each page (a fault on a cached page maps it; the
pages are not moved to another memcg by that), reads each page's frame
number from /proc/self/pagemap and the frame's memcg inode from
/proc/kpagecgroup; 0 is "no memcg". Touching is itself a lookup, so tests run
this after their measured window, from a memcg the probe's figures are not
read for. Needs root (frame numbers are hidden otherwise).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import sys
from collections import Counter

PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def owners(path: str) -> Counter[int]:
    """Pages of ``path`` by the inode of the memcg they are charged to (-1:
    not mapped after touching, which a test treats as a failure)."""
    counts: Counter[int] = Counter()
    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            _libc.madvise(address, size, mmap.MADV_NOHUGEPAGE)
            for i in range(pages):  # map every page: touch it
                ctypes.c_char.from_address(address + i * mmap.PAGESIZE).value  # noqa: B018
            with open("/proc/self/pagemap", "rb") as pagemap:
                entries = os.pread(pagemap.fileno(), pages * 8, address // mmap.PAGESIZE * 8)
            with open("/proc/kpagecgroup", "rb") as kpagecgroup:
                for (entry,) in struct.iter_unpack("=Q", entries):
                    if not entry & PRESENT:
                        counts[-1] += 1
                        continue
                    raw = os.pread(kpagecgroup.fileno(), 8, (entry & PFN_MASK) * 8)
                    counts[struct.unpack("=Q", raw)[0] if len(raw) == 8 else -1] += 1
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(fd)
    return counts


if __name__ == "__main__":
    print(json.dumps({str(k): v for k, v in owners(sys.argv[1]).items()}))
