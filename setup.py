"""Builds the BPF object with clang when the package is built or installed.

The object (CO-RE, against bpf/vmlinux.h) is platform-independent across
kernels, so an installed agent needs no compiler. Without clang or libbpf's
headers the build still succeeds with a warning, and the agent runs with
residency only, saying why at start-up.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "bpf", "pagecache.bpf.c")
OUTPUT = os.path.join(HERE, "otel_pagecache", "_bpf", "pagecache.bpf.o")
ARCH = {"x86_64": "x86", "aarch64": "arm64", "ppc64le": "powerpc", "s390x": "s390"}


def copy_bcc_sources() -> None:
    """The BCC engine compiles at run time: ship its source and the shared header."""
    os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
    for name in (
        "pagecache_bcc.c",
        "pagecache_bcc_tp.c",
        "pagecache_bcc_layout.h",
        "pagecache_bcc_common.h",
        "pagecache_bookkeeping.h",
        "pagecache_whatif.h",
        "pagecache_sharing.h",
        "pagecache.h",
    ):
        source = os.path.join(HERE, "bpf", name)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(os.path.dirname(OUTPUT), name))


def compile_bpf() -> None:
    clang = os.environ.get("CLANG") or shutil.which("clang")
    if clang is None:
        print("warning: clang not found, BPF activity probes not built", file=sys.stderr)
        return
    if not os.path.exists(SOURCE):  # an sdist without bpf/: nothing to build
        return
    os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
    arch = ARCH.get(platform.machine(), platform.machine())
    command = [
        clang,
        "-g",
        "-O2",
        "-target",
        "bpf",
        f"-D__TARGET_ARCH_{arch}",
        "-I",
        os.path.join(HERE, "bpf"),
        "-c",
        SOURCE,
        "-o",
        OUTPUT,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(
            "warning: building the BPF object failed (is libbpf-dev installed?):\n" + result.stderr,
            file=sys.stderr,
        )


class BuildPyWithBpf(build_py):
    def run(self) -> None:
        copy_bcc_sources()
        compile_bpf()
        super().run()


setup(cmdclass={"build_py": BuildPyWithBpf})
