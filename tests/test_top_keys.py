"""``otel-pagecache top`` on a real terminal (a pty): q quits, Ctrl-C quits, sort keys."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time

import pytest

from otel_pagecache.top import footer


class Terminal:
    """The agent's ``top`` with a pty as its controlling terminal."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, b"\x28\x00\xa0\x00\x00\x00\x00\x00")  # 40x160

        def controlling_tty() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_pagecache.cli", "top", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=controlling_tty,
        )
        os.close(slave)
        self.output = ""

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the other side closed
                    break
        assert text in self.output, self.output[-3000:]

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def exit_status(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            # Keep draining: a full pty buffer would block the writer.
            if select.select([self.master], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    self.output += os.read(self.master, 65536).decode(errors="replace")
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"top did not quit:\n{self.output[-3000:]}")
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


@pytest.fixture
def terminal():
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        opened.append(Terminal(*args))
        return opened[-1]

    yield start
    for t in opened:
        t.close()


ARGS = ("--no-activity", "--interval", "0.3", "--include", "/")


def test_q_quits_and_the_footer_names_the_keys(terminal):
    top = terminal(*ARGS)
    top.wait_for(footer("cache"))
    top.press("m")
    top.wait_for(footer("misses"))
    top.press("e")
    top.wait_for(footer("evictions"))
    top.press("q")
    assert top.exit_status() == 0
    # The terminal's mode is restored (echo back on) before exit: nothing to check
    # from outside but that the process ended cleanly and promptly.


def test_ctrl_c_quits_too(terminal):
    top = terminal(*ARGS)
    top.wait_for(footer("cache"))
    top.press("\x03")  # the line discipline turns it into SIGINT
    assert top.exit_status() == 0
    assert "Traceback" not in top.output


def test_sort_flag_and_piped_output_has_no_footer(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "otel_pagecache.cli", "top", "--once", "--sort", "misses", *ARGS],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    assert "CONTAINER / CGROUP" in result.stdout and "q quit" not in result.stdout


def _sample(memcg: int, cache: int, misses: int, evictions: int):
    from otel_pagecache.activity import ActivityCounters
    from otel_pagecache.containers import Identity
    from otel_pagecache.residency import MemcgSample

    return MemcgSample(
        memcg,
        f"/cg{memcg}",
        Identity("system"),
        {"active_file": cache},
        None,
        None,
        None,
        None,
        None,
        {},
        activity=ActivityCounters(misses=misses, evictions=evictions),
    )


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("cache", ["/cg1", "/cg2", "/cg3"]),
        ("misses", ["/cg3", "/cg2", "/cg1"]),
        ("evictions", ["/cg2", "/cg1", "/cg3"]),
    ],
)
def test_render_sorts_by_the_chosen_rate(sort, order):
    from otel_pagecache.residency import Snapshot
    from otel_pagecache.top import render

    before = Snapshot(
        0.0, 2, [_sample(1, 3 << 20, 0, 0), _sample(2, 2 << 20, 0, 0), _sample(3, 1 << 20, 0, 0)]
    )
    # Over 2 s: cg1 10 misses 40 evictions, cg2 20/80, cg3 30/0.
    now = Snapshot(
        2.0,
        2,
        [_sample(1, 3 << 20, 10, 40), _sample(2, 2 << 20, 20, 80), _sample(3, 1 << 20, 30, 0)],
    )
    lines = render(now, before, sort=sort, keys_line=True).splitlines()
    rows = [line.split()[0] for line in lines if line.startswith("/cg")]
    assert rows == order
    assert lines[-1] == footer(sort)
