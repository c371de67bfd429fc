"""Debian's generic amd64 kernels, fetched by suite through a private apt, cached.

Suites move (an old version leaves the archive when a new one arrives, and no
snapshot archive is reachable), so a kernel is named by suite and series, and
the exact version a run used is recorded with its results.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
# Covers bullseye, bookworm and trixie (checked: its uids name 11, 12 and 13).
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class Kernel:
    name: str  # what --kernel takes
    series: str  # version prefix the suite's linux-image-amd64 must have
    sources: tuple[tuple[str, str], ...]  # (archive, suite)


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel("5.10", "5.10.", ((MIRROR, "bullseye"), (SECURITY, "bullseye-security"))),
        Kernel("6.1", "6.1.", ((MIRROR, "bookworm"), (SECURITY, "bookworm-security"))),
        Kernel("6.12", "6.12.", ((MIRROR, "trixie"), (SECURITY, "trixie-security"))),
        # From 7.x the image is split into linux-binary-* and linux-modules-*.
        Kernel("7", "7.", ((MIRROR, "trixie-backports"),)),
    )
}


class FetchError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("OTEL_PAGECACHE_CACHE", "/var/cache/otel-pagecache")) / "vmtest"


@dataclass(frozen=True)
class Tree:
    """An extracted kernel package set: vmlinuz plus its modules."""

    kernel: Kernel
    root: Path  # the extracted packages

    @property
    def version(self) -> str:  # the Debian package version, e.g. 6.12.118-1
        return (self.root / "VERSION").read_text().strip()

    @property
    def release(self) -> str:  # uname -r, e.g. 6.12.118+deb13-amd64
        return self.modules_dir.name

    @property
    def vmlinuz(self) -> Path:
        # 7.x ships it beside its modules instead of in /boot.
        found = sorted((self.root / "boot").glob("vmlinuz-*")) + [self.modules_dir / "vmlinuz"]
        for path in found:
            if path.is_file():
                return path
        raise FetchError(f"no boot/vmlinuz-* nor {found[-1]} in {self.root}")

    @property
    def modules_dir(self) -> Path:
        for base in ("lib/modules", "usr/lib/modules"):
            found = sorted((self.root / base).glob("*/kernel"))
            if found:
                return found[0].parent
        raise FetchError(f"no lib/modules/*/kernel in {self.root}")


def resolve(name: str) -> Kernel:
    try:
        return KERNELS[name]
    except KeyError:
        raise FetchError(f"unknown kernel {name!r}: choose one of {', '.join(KERNELS)}") from None


def cached(kernel: Kernel) -> Tree | None:
    current = cache_root() / "kernels" / kernel.name / "current"
    if (current / "VERSION").is_file():
        return Tree(kernel, current.resolve())
    return None


def ensure(kernel: Kernel, refresh: bool = False, log=sys.stderr) -> Tree:
    """The cached tree for ``kernel``; fetched first if absent (or ``refresh``)."""
    if not refresh and (tree := cached(kernel)):
        return tree
    lock_dir = cache_root() / "kernels" / kernel.name
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another vmtest may be fetching the same kernel
        if not refresh and (tree := cached(kernel)):
            return tree
        return _fetch(kernel, lock_dir, log)


class PrivateApt:
    """apt-get/apt-cache with their own sources, state and cache directories.

    APT_CONFIG is read before /etc/apt/apt.conf.d, so pointing Dir::Etc::Parts
    at an empty directory keeps the host's settings (and sources) out.
    """

    def __init__(self, kernel: Kernel, root: Path) -> None:
        self.root = root
        etc = root / "etc"
        for d in (
            etc / "apt.conf.d",
            etc / "preferences.d",
            etc / "sources.list.d",
            root / "state" / "lists" / "partial",
            root / "cache" / "archives" / "partial",
        ):
            d.mkdir(parents=True, exist_ok=True)
        (etc / "sources.list").write_text(
            "".join(
                f"deb [signed-by={KEYRING}] {archive} {suite} main\n"
                for archive, suite in kernel.sources
            )
        )
        (root / "status").touch()
        (root / "apt.conf").write_text(
            f'Dir::Etc "{etc}";\n'
            'Dir::Etc::sourcelist "sources.list";\n'
            'Dir::Etc::sourceparts "sources.list.d";\n'
            'Dir::Etc::parts "apt.conf.d";\n'
            'Dir::Etc::preferencesparts "preferences.d";\n'
            f'Dir::State "{root / "state"}";\n'
            f'Dir::State::status "{root / "status"}";\n'
            f'Dir::Cache "{root / "cache"}";\n'
            'APT::Architecture "amd64";\n'
            'APT::Architectures { "amd64"; };\n'
            'Acquire::Languages "none";\n'
            # Our own state directories: the host's dpkg lock is not ours to take.
            'Debug::NoLocking "true";\n'
        )

    def __call__(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        env = dict(os.environ, APT_CONFIG=str(self.root / "apt.conf"), LC_ALL="C")
        done = subprocess.run([tool, *args], env=env, cwd=cwd, capture_output=True, text=True)
        if done.returncode != 0:
            raise FetchError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout


def _newest(apt: PrivateApt, kernel: Kernel) -> str:
    madison = apt("apt-cache", "madison", "linux-image-amd64")
    # " linux-image-amd64 |  6.1.192-3 | http://deb.debian.org/debian-security ..."
    versions = re.findall(r"^\s*\S+ \|\s*(\S+) \|", madison, re.M)
    versions = [v for v in versions if v.startswith(kernel.series)]
    if not versions:
        suites = ", ".join(s for _, s in kernel.sources)
        raise FetchError(f"{suites} serve no linux-image-amd64 of the {kernel.series}x series")
    best = versions[0]
    for v in versions[1:]:
        if subprocess.run(["dpkg", "--compare-versions", v, "gt", best]).returncode == 0:
            best = v
    return best


# The packages that carry the kernel and its modules: the metapackage's
# dependencies (7.x splits them into linux-binary-*/linux-modules-*, and
# puts config and modules.builtin in linux-base-*).
_KERNEL_PACKAGE = re.compile(r"^linux-(image|binary|modules|base)-")


def _closure(apt: PrivateApt, version: str) -> list[str]:
    wanted, todo = [], [("linux-image-amd64", version)]
    while todo:
        package, ver = todo.pop()
        if f"{package}={ver}" in wanted:
            continue
        wanted.append(f"{package}={ver}")
        show = apt("apt-cache", "show", f"{package}={ver}")
        depends = re.search(r"^Depends: (.*)$", show, re.M)
        for alternative in depends.group(1).split(", ") if depends else []:
            m = re.match(r"^(\S+) \(= (\S+)\)$", alternative.strip())
            if m and _KERNEL_PACKAGE.match(m.group(1)):
                todo.append((m.group(1), m.group(2)))
    return wanted


def _fetch(kernel: Kernel, lock_dir: Path, log) -> Tree:
    apt = PrivateApt(kernel, cache_root() / "apt" / kernel.name)
    print(
        f"vmtest: fetching the {kernel.name} kernel ({', '.join(s for _, s in kernel.sources)})",
        file=log,
        flush=True,
    )
    apt("apt-get", "-q", "update")
    version = _newest(apt, kernel)
    target = lock_dir / version
    if not (target / "VERSION").is_file():
        debs = apt.root / "debs" / version
        debs.mkdir(parents=True, exist_ok=True)
        # apt-get download verifies each .deb against the signed Release file.
        apt("apt-get", "-q", "download", *_closure(apt, version), cwd=debs)
        partial = lock_dir / f".{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
        (partial / "VERSION").write_text(version + "\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        shutil.rmtree(debs)
    current = lock_dir / "current"
    tmp = lock_dir / ".current.new"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(version)
    tmp.replace(current)
    tree = Tree(kernel, target)
    print(f"vmtest: {kernel.name} is {version} ({tree.release})", file=log, flush=True)
    return tree
