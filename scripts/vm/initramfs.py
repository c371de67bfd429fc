"""The guest's initramfs: static busybox, our init, and the kernel's own
virtio/9p/ext4/overlay modules with what they depend on.

Dependencies are read from each module's .modinfo (``depends=`` and the
``pre:`` part of ``softdep=``) rather than hard-coded: they differ by kernel
(5.10 has no netfs; 6.12's ext4 wants crc32c through a softdep only).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import stat
import subprocess
from pathlib import Path

from .kernels import FetchError, Tree

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
INIT = Path(__file__).with_name("init")
# What the guest mounts: the host's root over virtio 9p, an ext4 upper layer
# on virtio-blk, and the overlay joining them. Built in on some kernels.
WANTED = ("virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "ext4", "overlay")
# ext4 checksums with crc32c; 6.12's ext4 does not name these in depends=.
# loop: tests make small file systems on loop devices (throttled_fs).
OPTIONAL = ("crc32c_generic", "libcrc32c", "loop")


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dcq", str(path)], check=True, capture_output=True).stdout
    return data


class Modules:
    """The .ko files of one kernel tree, by name, with their .modinfo."""

    def __init__(self, tree: Tree) -> None:
        self.dir = tree.modules_dir
        self.files: dict[str, Path] = {}
        for path in (self.dir / "kernel").rglob("*.ko*"):
            self.files[re.sub(r"\.ko(\.\w+)?$", "", path.name).replace("-", "_")] = path
        builtin = self.dir / "modules.builtin"
        self.builtin = {
            Path(line).name.split(".ko")[0].replace("-", "_")
            for line in (builtin.read_text().split() if builtin.exists() else [])
        }
        self._info: dict[str, dict[str, list[str]]] = {}

    def info(self, name: str) -> dict[str, list[str]]:
        if name not in self._info:
            fields: dict[str, list[str]] = {}
            # .modinfo is a run of NUL-terminated "key=value" strings.
            for key, value in re.findall(
                rb"\x00(depends|softdep)=([^\x00]*)", b"\x00" + _decompress(self.files[name])
            ):
                fields.setdefault(key.decode(), []).append(value.decode())
            self._info[name] = fields
        return self._info[name]

    def by_alias(self, alias: str) -> list[str]:
        # Without modules.alias (made by depmod, not shipped), match the usual
        # spellings: "crypto-crc32c" is provided by crc32c or crc32c_generic.
        name = alias.removeprefix("crypto-").replace("-", "_")
        return [n for n in (name, f"{name}_generic") if n in self.files][:1]

    def load_order(self) -> list[str]:
        """Modules to insmod, each after the ones it needs."""
        order: list[str] = []

        def visit(name: str, optional: bool) -> None:
            if name in order or name in self.builtin:
                return
            if name not in self.files:
                if optional:
                    return
                raise FetchError(f"module {name} is neither built into nor shipped with {self.dir}")
            info = self.info(name)
            for dep in ",".join(info.get("depends", [])).split(","):
                if dep:
                    visit(dep.replace("-", "_"), False)
            for softdep in info.get("softdep", []):
                pre = re.search(r"pre:((?:\s+[^\s:]+(?!:))+)", softdep)
                for alias in pre.group(1).split() if pre else []:
                    for dep in self.by_alias(alias):
                        visit(dep, True)
            order.append(name)

        for name in OPTIONAL:
            visit(name, True)
        for name in WANTED:
            visit(name, False)
        return order


class _Cpio:
    """newc archive writer (what the kernel unpacks as an initramfs)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        self.ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + name.encode() + b"\x00")
        self.out.write(b"\x00" * (-self.out.tell() % 4))
        self.out.write(data)
        self.out.write(b"\x00" * (-self.out.tell() % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.out.getvalue()


def build(tree: Tree) -> Path:
    """The initramfs for ``tree``, cached beside it, keyed by init and busybox."""
    key = hashlib.sha1(INIT.read_bytes() + BUSYBOX.read_bytes() + Path(__file__).read_bytes())
    target = tree.root / f"initramfs-{key.hexdigest()[:12]}.cpio.gz"
    if target.exists():
        return target
    modules = Modules(tree)
    order = modules.load_order()
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "lower", "upper", "newroot", "job", "out", "modules"):
        cpio.add(d, stat.S_IFDIR | 0o755)
    cpio.add("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes())
    cpio.add("bin/sh", stat.S_IFLNK | 0o777, b"busybox")
    cpio.add("init", stat.S_IFREG | 0o755, INIT.read_bytes())
    for name in order:
        cpio.add(f"modules/{name}.ko", stat.S_IFREG | 0o644, _decompress(modules.files[name]))
    cpio.add("modules/order", stat.S_IFREG | 0o644, "".join(f"{n}\n" for n in order).encode())
    cpio.add("release", stat.S_IFREG | 0o644, f"{tree.release}\n".encode())
    partial = target.with_suffix(f".{os.getpid()}")
    partial.write_bytes(gzip.compress(cpio.finish(), compresslevel=1))
    partial.replace(target)
    return target
