"""Kernel headers for BCC, which compiles its programs at run time.

BCC looks in /lib/modules/$(uname -r)/build (or BCC_KERNEL_SOURCE). Debian
ships headers in two halves (linux-headers-<v>-<flavour> and
linux-headers-<v>-common) that only /lib/modules' build/source links join;
when those links are absent (headers of another kernel version, or a
container) the halves are merged here, with symlinks in a private temporary
directory that is removed afterwards: nothing on the host changes.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass


@dataclass
class Headers:
    path: str  # what BCC_KERNEL_SOURCE should name
    version: str  # the kernel version the headers are for
    matches: bool  # version == the running kernel's
    temporary: str | None = None  # a merged tree to remove afterwards

    def cleanup(self) -> None:
        if self.temporary:
            shutil.rmtree(self.temporary, ignore_errors=True)
            self.temporary = None


def _merge(dst: str, sources: list[str]) -> None:
    """Symlink tree at dst holding the union of sources (later ones win)."""
    names: dict[str, list[str]] = {}
    for src in sources:
        for name in os.listdir(src):
            names.setdefault(name, []).append(os.path.join(src, name))
    for name, paths in names.items():
        target = os.path.join(dst, name)
        dirs = [p for p in paths if os.path.isdir(p)]
        if len(dirs) > 1:
            os.mkdir(target)
            _merge(target, dirs)
        else:
            os.symlink(paths[-1], target)


def find_headers(release: str | None = None, src_root: str = "/usr/src") -> Headers | None:
    release = release or platform.release()
    explicit = os.environ.get("BCC_KERNEL_SOURCE")
    if explicit and os.path.isdir(explicit):
        return Headers(explicit, release, True)
    build = f"/lib/modules/{release}/build"
    if os.path.isdir(os.path.join(build, "include")):
        return Headers(build, release, True)
    # Debian/Ubuntu split packages, any version: the newest pair found.
    for flavoured in sorted(glob.glob(os.path.join(src_root, "linux-headers-*-*")), reverse=True):
        if flavoured.endswith("-common") or not os.path.isdir(flavoured):
            continue
        version = os.path.basename(flavoured)[len("linux-headers-") :]
        common = flavoured.rsplit("-", 1)[0] + "-common"
        if not os.path.isdir(common):
            continue
        merged = tempfile.mkdtemp(prefix="otel-pagecache-headers-")
        _merge(merged, [common, flavoured])
        return Headers(merged, version, version == release, temporary=merged)
    return None
