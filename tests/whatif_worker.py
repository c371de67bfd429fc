"""A long-lived child that reads pages in a known order, for the what-if tests.

Started first, then moved into a memcg (like tests/worker.py), so what the
probes see in that memcg is the workload alone. Every read is one 4 KiB
pread at a page boundary of a file opened with POSIX_FADV_RANDOM (no
readahead: a miss is one page, a random pattern stays random). The order is
a function of the seed: the same command gives the same accesses at any
memcg limit. Commands, one per line on stdin, each answered with "ok":

    lock                                   mlockall(MCL_CURRENT)
    uniform SECONDS|-COUNT SEED PATH       random pages of PATH
    hotcold SECONDS|-COUNT SEED PATH HOT_PAGES HOT_SHARE
                                           HOT_SHARE of the accesses to the first
                                           HOT_PAGES pages, the rest to any page
    mixed SECONDS|-COUNT SEED PATH_A PATH_B SHARE_A
                                           random pages of A (SHARE_A of the
                                           accesses) or of B
    loop ROUNDS PATH                       every page in order, ROUNDS times
    exit

A negative first number is a count of accesses; a positive one, seconds.
"""

from __future__ import annotations

import ctypes
import os
import random
import sys
import time

PAGE = 4096


def _open(path: str) -> tuple[int, int]:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    return fd, os.fstat(fd).st_size // PAGE


def _run(budget: float, choose) -> None:
    """``choose()`` -> (fd, page) per access, for -budget accesses or budget seconds."""
    if budget < 0:
        for _ in range(int(-budget)):
            fd, page = choose()
            os.pread(fd, PAGE, page * PAGE)
        return
    end = time.monotonic() + budget
    while time.monotonic() < end:
        for _ in range(256):
            fd, page = choose()
            os.pread(fd, PAGE, page * PAGE)


def _chooser(command: str, args: list[str]):
    """(choose, files to close) for a random pattern: ``choose()`` -> (fd, page)."""
    rng = random.Random(int(args[1]))
    if command == "uniform":
        fd, pages = _open(args[2])
        return (lambda: (fd, rng.randrange(pages))), (fd,)
    if command == "hotcold":
        fd, pages = _open(args[2])
        hot, share = int(args[3]), float(args[4])
        return (
            lambda: (fd, rng.randrange(hot) if rng.random() < share else rng.randrange(pages))
        ), (fd,)
    (fa, pa), (fb, pb) = _open(args[2]), _open(args[3])
    share = float(args[4])
    return (lambda: (fa, rng.randrange(pa)) if rng.random() < share else (fb, rng.randrange(pb))), (
        fa,
        fb,
    )


def main() -> None:
    for line in sys.stdin:
        command, *args = line.split()
        if command == "lock":
            if ctypes.CDLL(None, use_errno=True).mlockall(1) != 0:  # MCL_CURRENT
                raise OSError(ctypes.get_errno(), "mlockall")
        elif command in ("uniform", "hotcold", "mixed"):
            choose, fds = _chooser(command, args)
            _run(float(args[0]), choose)
            for fd in fds:
                os.close(fd)
        elif command == "loop":
            fd, pages = _open(args[1])
            for _ in range(int(args[0])):
                for page in range(pages):
                    os.pread(fd, PAGE, page * PAGE)
            os.close(fd)
        elif command == "exit":
            break
        print("ok", flush=True)


if __name__ == "__main__":
    main()
