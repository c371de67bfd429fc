"""Boot one guest under qemu, run a job in it, pass its output and status back.

The host and the guest share a job directory over 9p: the host writes
run.sh (cwd, environment, argv), the guest's init writes ``booted``, the
job's merged output and ``status``. The host streams ``output`` as it grows.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import initramfs
from .kernels import Tree, cache_root

QEMU = "qemu-system-x86_64"
# A directory on the guest's ext4 disk, not under the overlay (see init).
SCRATCH = "/run/vmtest-scratch"
TIMEOUT_STATUS = 124  # as timeout(1)
FAILURE_STATUS = 125  # vmtest itself failed (no boot, no status): as timeout(1) too


class GuestError(RuntimeError):
    """The guest did not boot or ended without a status; carries the console tail."""


@dataclass
class Result:
    status: int
    boot_seconds: float
    seconds: float


def _run_script(argv: list[str], cwd: str, env: dict[str, str]) -> str:
    # env -i: exactly the caller's environment, whatever its names.
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items() if "=" not in k)
    return (
        "# written by scripts/vmtest on the host\n"
        f"cd {shlex.quote(cwd)} || exit 125\n"
        f"exec /usr/bin/env -i {assignments} {shlex.join(argv)}\n"
    )


def _mkfs(image: Path, size_gib: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size_gib << 30)  # sparse: costs the host only what the guest writes
    mkfs = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"
    subprocess.run(
        [mkfs, "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(image)], check=True
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no {path.name})"
    return "\n".join(text.splitlines()[-lines:])


def run(
    tree: Tree,
    argv: list[str],
    *,
    accel: str,
    cwd: str,
    env: dict[str, str],
    out: Path | None = None,
    timeout: float = 3600,
    boot_timeout: float = 600,
    cpus: int = 2,
    memory_mib: int = 2048,
    stream=None,
) -> Result:
    """Run ``argv`` in a guest booted from ``tree``; stream its output to ``stream``."""
    stream = stream if stream is not None else sys.stdout.buffer
    start = time.monotonic()
    job = Path(tempfile.mkdtemp(prefix="vmtest-"))
    qemu = None
    try:
        env = dict(env, VMTEST_ACCEL=accel, VMTEST_SCRATCH=SCRATCH)
        (job / "run.sh").write_text(_run_script(argv, cwd, env))
        (job / "out").write_text(str(out) if out else "")
        (job / "modules").write_text(str(tree.modules_dir))
        (job / "config").write_text(str(tree.config))
        (job / "lower-cache").write_text(os.environ.get("VMTEST_9P_CACHE", "loose"))
        (job / "output").touch()
        image = job / "upper.ext4"
        _mkfs(image, 16)
        console = job / "console.log"
        accel_args = (
            ["-accel", "kvm", "-cpu", "host"]
            if accel == "kvm"
            # One host thread runs both vCPUs: with one per vCPU, a CPU could
            # run code another was patching (text_poke's int3) and oops at
            # boot ("Oops: int3" in sched_clock_cpu, seen in CI on 6.12).
            else ["-accel", "tcg,thread=single", "-cpu", "max"]
        )
        command = [
            QEMU,
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            *accel_args,
            "-smp",
            str(cpus),
            "-m",
            str(memory_mib),
            "-kernel",
            str(tree.vmlinuz),
            "-initrd",
            str(initramfs.build(tree)),
            "-append",
            "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
            "-serial",
            f"file:{console}",
            "-drive",
            f"file={image},format=raw,if=virtio,cache=unsafe",
            "-virtfs",
            "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
            "-virtfs",
            f"local,path={job},mount_tag=job,security_model=none",
            "-nic",
            "none",
        ]
        if out:
            command += ["-virtfs", f"local,path={out},mount_tag=out,security_model=none"]
        with open(job / "qemu.log", "wb") as qemu_log:
            qemu = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT
            )
        booted_at = None
        with open(job / "output", "rb") as output:
            while True:
                chunk = output.read()
                if chunk:
                    stream.write(chunk)
                    stream.flush()
                ended = qemu.poll() is not None
                now = time.monotonic()
                if booted_at is None and (job / "booted").exists():
                    booted_at = now
                if ended:
                    chunk = output.read()
                    if chunk:
                        stream.write(chunk)
                        stream.flush()
                    break
                if booted_at is None and now - start > boot_timeout:
                    raise GuestError(
                        f"the guest did not boot within {boot_timeout:.0f} s", _tail(console)
                    )
                # The command's own time: boot has its bound above (and under
                # a contended TCG it varies far more than the command does).
                if booted_at is not None and now - booted_at > timeout:
                    return Result(TIMEOUT_STATUS, booted_at - start, now - start)
                time.sleep(0.2)
        status_file = job / "status"
        if not status_file.exists():
            raise GuestError(
                f"the guest ended without an exit status (qemu exit {qemu.returncode})",
                (_tail(job / "qemu.log", 10) + "\n" + _tail(console)).strip(),
            )
        end = time.monotonic()
        return Result(int(status_file.read_text()), (booted_at or end) - start, end - start)
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        shutil.rmtree(job, ignore_errors=True)


def choose_accel(tree: Tree, log=sys.stderr) -> str:
    """kvm if one bounded test boot under KVM works here, else tcg. Cached.

    Nested KVM hangs at boot on some hosts although /dev/kvm exists, so its
    presence proves nothing. VMTEST_ACCEL=kvm|tcg skips the probe.
    """
    forced = os.environ.get("VMTEST_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        answer = "tcg"
    else:
        probe = cache_root() / f"kvm-probe-{os.uname().release}"
        if probe.exists():
            answer = probe.read_text().strip()
        else:
            try:
                with open(os.devnull, "wb") as devnull:
                    result = run(
                        tree,
                        ["true"],
                        accel="kvm",
                        cwd="/",
                        env={},
                        timeout=60,
                        boot_timeout=30,
                        stream=devnull,
                    )
                answer = "kvm" if result.status == 0 else "tcg"
            except GuestError:
                answer = "tcg"
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_text(answer + "\n")
    if answer == "tcg":
        print("vmtest: KVM does not boot a guest here: using TCG (slower)", file=log, flush=True)
    return answer
