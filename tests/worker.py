"""A long-lived child that does page-cache work on command, inside a memcg.

Started first, then moved into a cgroup: its interpreter start-up (which
faults in code and libraries) happens before, so what the probes count in
the cgroup is the workload only. Commands, one per line on stdin, each
answered with "ok" on stdout:

    read PATH [BYTES]  read the whole file with read()s of BYTES (default 1 MiB)
    readrange PATH OFFSET LENGTH [random]  read LENGTH bytes from OFFSET with 1 MiB
                       pread()s; "random": POSIX_FADV_RANDOM first, so no readahead
                       runs past the range (its async I/O can outlast the read, and
                       DONTNEED skips pages still under I/O)
    mmap PATH [nohuge] map it and touch every page; "nohuge": MADV_NOHUGEPAGE first,
                       so large folios are mapped page by page (see test_activity)
    write PATH BYTES   write a new file of BYTES (no fsync)
    evict PATH         posix_fadvise(DONTNEED) on it
    hold PATH          open it and keep it open
    lock               mlockall(MCL_CURRENT): its code and libraries stay in
                       memory, so a guest short of memory never makes it fault
                       them in again (lookups in its cgroup that are not the
                       workload's: 32 seen in a 7.3 guest)
    exit
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

CHUNK = 1 << 20


def main() -> None:
    held = []
    block = b"\xa5" * CHUNK
    for line in sys.stdin:
        command, *args = line.split()
        if command == "read":
            size = int(args[1]) if args[1:] else CHUNK
            fd = os.open(args[0], os.O_RDONLY)
            while os.read(fd, size):
                pass
            os.close(fd)
        elif command == "readrange":
            fd = os.open(args[0], os.O_RDONLY)
            if args[3:] == ["random"]:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            offset, end = int(args[1]), int(args[1]) + int(args[2])
            while offset < end:
                got = os.pread(fd, min(CHUNK, end - offset), offset)
                if not got:
                    break
                offset += len(got)
            os.close(fd)
        elif command == "mmap":
            with open(args[0], "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                if args[1:] == ["nohuge"]:
                    m.madvise(mmap.MADV_NOHUGEPAGE)
                total = 0
                for offset in range(0, len(m), mmap.PAGESIZE):
                    total += m[offset]
        elif command == "write":
            remaining = int(args[1])
            with open(args[0], "wb") as f:
                while remaining > 0:
                    n = min(remaining, CHUNK)
                    f.write(block[:n])
                    remaining -= n
        elif command == "evict":
            fd = os.open(args[0], os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        elif command == "hold":
            held.append(open(args[0], "rb"))  # noqa: SIM115 - held until exit on purpose
        elif command == "lock":
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.mlockall(1) != 0:  # MCL_CURRENT
                raise OSError(ctypes.get_errno(), "mlockall")
        elif command == "exit":
            break
        print("ok", flush=True)


if __name__ == "__main__":
    main()
