"""A thin ctypes binding to the system libbpf (``libbpf.so.1``, libbpf >= 1.0).

Only what the loader needs: open/load/attach an object, find maps, read
and delete map entries (in batches where the kernel supports it), poll a ring
buffer, and a few BTF look-ups. libbpf 1.x returns ``-errno`` from int
functions and NULL with ``errno`` set from pointer functions; both become
``LibbpfError`` here. libbpf's own log lines are captured (the verifier log
says why a program was refused) and attached to errors.

Why ctypes over a library: the maintained Python options either compile
against a specific libbpf at install time or are BCC (a different engine);
the system libbpf.so.1 is ABI-stable across 1.x, so binding its C API costs
one small module and no build step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator

_log = logging.getLogger(__name__)

# enum bpf_map_type values the reader needs to know about.
MAP_PERCPU_TYPES = frozenset({5, 6, 10})  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
# The kernel's own ENOTSUPP (include/linux/errno.h), which the bpf() syscall
# returns for a command a map type does not have (not errno.ENOTSUP, 95).
_KERNEL_ENOTSUPP = 524


class LibbpfError(OSError):
    """A libbpf call failed; ``log`` holds what libbpf printed meanwhile."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.log = log

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n{self.log}" if self.log else text


class LibbpfMissing(RuntimeError):
    pass


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class _Log:
    """Collects libbpf's printouts (it formats with a va_list: use vsnprintf)."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._vsnprintf = libc.vsnprintf
        self._vsnprintf.argtypes = (
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_void_p,
        )
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self.callback = _PRINT_FN(self._print)

    def _print(self, level: int, fmt: bytes, args: int) -> int:
        buf = ctypes.create_string_buffer(4096)
        self._vsnprintf(buf, len(buf), fmt, args)
        line = buf.value.decode("utf-8", "replace").rstrip("\n")
        with self._lock:
            self._lines.append(line)
            if len(self._lines) > 2000:  # a verifier log can be huge: keep the tail
                del self._lines[:1000]
        _log.debug("libbpf: %s", line)
        return 0

    def take(self) -> str:
        with self._lock:
            text = "\n".join(self._lines[-60:])
            self._lines.clear()
        return text


class Libbpf:
    """The loaded library with argument types declared; one per process."""

    _instance: Libbpf | None = None
    _instance_lock = threading.Lock()

    def __init__(self, path: str | None = None) -> None:
        path = path or ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(path, use_errno=True)
        except OSError as e:
            raise LibbpfMissing(
                f"cannot load libbpf ({path}): install it (Debian/Ubuntu: apt-get install libbpf1)"
            ) from e
        self.lib = lib
        vp, ci, cu32, cs = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
        sigs = {
            "libbpf_set_print": (vp, (_PRINT_FN,)),
            "libbpf_num_possible_cpus": (ci, ()),
            "bpf_object__open_file": (vp, (cs, vp)),
            "bpf_object__load": (ci, (vp,)),
            "bpf_object__close": (None, (vp,)),
            "bpf_object__next_program": (vp, (vp, vp)),
            "bpf_object__find_map_by_name": (vp, (vp, cs)),
            "bpf_program__name": (cs, (vp,)),
            "bpf_program__set_autoload": (ci, (vp, ctypes.c_bool)),
            "bpf_program__attach": (vp, (vp,)),
            "bpf_program__fd": (ci, (vp,)),
            "bpf_link__destroy": (ci, (vp,)),
            "bpf_map__fd": (ci, (vp,)),
            "bpf_map__key_size": (cu32, (vp,)),
            "bpf_map__value_size": (cu32, (vp,)),
            "bpf_map__type": (ci, (vp,)),
            "bpf_map__max_entries": (cu32, (vp,)),
            "bpf_map__set_max_entries": (ci, (vp, cu32)),
            "bpf_map_lookup_elem": (ci, (ci, vp, vp)),
            "bpf_map_delete_elem": (ci, (ci, vp)),
            "bpf_map_lookup_and_delete_elem": (ci, (ci, vp, vp)),
            "bpf_map_update_elem": (ci, (ci, vp, vp, ctypes.c_uint64)),
            "bpf_map_get_next_key": (ci, (ci, vp, vp)),
            "bpf_map_lookup_batch": (ci, (ci, vp, vp, vp, vp, ctypes.POINTER(cu32), vp)),
            "bpf_prog_load": (ci, (ci, cs, cs, vp, ctypes.c_size_t, vp)),
            "bpf_link_create": (ci, (ci, ci, ci, vp)),
            "btf__load_vmlinux_btf": (vp, ()),
            "btf__find_by_name_kind": (ci, (vp, cs, cu32)),
            "btf__free": (None, (vp,)),
            "btf__type_by_id": (vp, (vp, cu32)),
            "btf__name_by_offset": (cs, (vp, cu32)),
            "ring_buffer__new": (vp, (ci, _SAMPLE_FN, vp, vp)),
            "ring_buffer__add": (ci, (vp, ci, _SAMPLE_FN, vp)),
            "ring_buffer__poll": (ci, (vp, ci)),
            "ring_buffer__consume": (ci, (vp,)),
            "ring_buffer__free": (None, (vp,)),
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        self.log = _Log(ctypes.CDLL(None))
        lib.libbpf_set_print(self.log.callback)
        self.ncpus = max(1, lib.libbpf_num_possible_cpus())

    @classmethod
    def get(cls) -> Libbpf:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = Libbpf()
            return cls._instance

    def check(self, rc: int, what: str) -> int:
        if rc < 0:
            raise LibbpfError(-rc, what, self.log.take())
        return rc

    def check_ptr(self, ptr: int | None, what: str) -> int:
        if not ptr:
            raise LibbpfError(ctypes.get_errno() or errno.EINVAL, what, self.log.take())
        return ptr


class BpfMap:
    """One map of a loaded object: typed-agnostic bytes in, bytes out."""

    def __init__(self, lib: Libbpf, handle: int, name: str) -> None:
        self.name = name
        self._lib = lib
        self.fd = lib.lib.bpf_map__fd(handle)
        self.key_size = lib.lib.bpf_map__key_size(handle)
        self.value_size = lib.lib.bpf_map__value_size(handle)
        self.max_entries = lib.lib.bpf_map__max_entries(handle)
        self.percpu = lib.lib.bpf_map__type(handle) in MAP_PERCPU_TYPES
        # Per-CPU values come back for every possible CPU, each 8-byte aligned.
        self.cpu_stride = (self.value_size + 7) & ~7
        self.full_value_size = self.cpu_stride * lib.ncpus if self.percpu else self.value_size
        self._batch_ok = True
        self._take_ok = True

    def lookup(self, key: bytes) -> bytes | None:
        value = ctypes.create_string_buffer(self.full_value_size)
        rc = self._lib.lib.bpf_map_lookup_elem(self.fd, key, value)
        if rc < 0:
            if -rc == errno.ENOENT:
                return None
            self._lib.check(rc, f"lookup in {self.name}")
        return value.raw

    def update(self, key: bytes, value: bytes) -> None:
        """Set one entry (for per-CPU maps, ``value`` holds every CPU's value)."""
        self._lib.check(
            self._lib.lib.bpf_map_update_elem(self.fd, key, value, 0), f"update {self.name}"
        )

    def delete(self, key: bytes) -> bool:
        rc = self._lib.lib.bpf_map_delete_elem(self.fd, key)
        if rc < 0 and -rc != errno.ENOENT:
            self._lib.check(rc, f"delete from {self.name}")
        return rc == 0

    def take(self, key: bytes) -> bytes | None:
        """Delete an entry and return its last value (None if there was none).
        One call where the kernel can (hash maps: 5.14+), so that nothing a
        program adds between reading and deleting is lost; elsewhere a lookup
        right before the delete leaves that window a syscall wide."""
        if self._take_ok:
            value = ctypes.create_string_buffer(self.full_value_size)
            rc = self._lib.lib.bpf_map_lookup_and_delete_elem(self.fd, key, value)
            if rc == 0:
                return value.raw
            if -rc == errno.ENOENT:
                return None
            if -rc not in (errno.EINVAL, errno.EOPNOTSUPP, _KERNEL_ENOTSUPP):
                self._lib.check(rc, f"take from {self.name}")
            self._take_ok = False
        value = self.lookup(key)
        self.delete(key)
        return value

    def items(self, chunk: int = 1024) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value); in batches of ``chunk`` where the kernel can (5.6+)."""
        if self._batch_ok:
            try:
                yield from self._items_batched(chunk)
                return
            except LibbpfError as e:
                if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                self._batch_ok = False
        yield from self._items_iterated()

    def _items_batched(self, chunk: int) -> Iterator[tuple[bytes, bytes]]:
        lib = self._lib.lib
        token_size = max(self.key_size, 8)
        in_batch = ctypes.create_string_buffer(token_size)
        out_batch = ctypes.create_string_buffer(token_size)
        keys = ctypes.create_string_buffer(self.key_size * chunk)
        values = ctypes.create_string_buffer(self.full_value_size * chunk)
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = lib.bpf_map_lookup_batch(
                self.fd,
                None if first else in_batch,
                out_batch,
                keys,
                values,
                ctypes.byref(count),
                None,
            )
            done = rc < 0 and -rc == errno.ENOENT
            if rc < 0 and not done:
                self._lib.check(rc, f"batch lookup in {self.name}")
            kraw, vraw = keys.raw, values.raw
            for i in range(count.value):
                yield (
                    kraw[i * self.key_size : (i + 1) * self.key_size],
                    vraw[i * self.full_value_size : (i + 1) * self.full_value_size],
                )
            if done:
                return
            ctypes.memmove(in_batch, out_batch, token_size)
            first = False

    def _items_iterated(self) -> Iterator[tuple[bytes, bytes]]:
        lib = self._lib.lib
        key = ctypes.create_string_buffer(self.key_size)
        next_key = ctypes.create_string_buffer(self.key_size)
        rc = lib.bpf_map_get_next_key(self.fd, None, next_key)
        while rc == 0:
            value = self.lookup(next_key.raw)
            if value is not None:  # deleted between the two calls: fine
                yield next_key.raw, value
            ctypes.memmove(key, next_key, self.key_size)
            rc = lib.bpf_map_get_next_key(self.fd, key, next_key)

    def per_cpu(self, value: bytes) -> list[bytes]:
        if not self.percpu:
            return [value]
        return [
            value[i * self.cpu_stride : i * self.cpu_stride + self.value_size]
            for i in range(len(value) // self.cpu_stride)
        ]


class RingBuffer:
    """Polls BPF ring buffer maps together; each map's ``callback(bytes)`` gets its records."""

    def __init__(self, lib: Libbpf, rings: list[tuple[BpfMap, Callable[[bytes], None]]]) -> None:
        self._lib = lib
        self._abandoned = False
        self._samples = [_SAMPLE_FN(self._sampler(callback)) for _, callback in rings]
        first, *more = rings
        self._rb = lib.check_ptr(
            lib.lib.ring_buffer__new(first[0].fd, self._samples[0], None, None),
            f"ring buffer on {first[0].name}",
        )
        for (bpf_map, _), sample in zip(more, self._samples[1:], strict=True):
            rc = lib.lib.ring_buffer__add(self._rb, bpf_map.fd, sample, None)
            if rc < 0:
                self.close()
                lib.check(rc, f"ring buffer on {bpf_map.name}")

    def _sampler(self, callback: Callable[[bytes], None]):
        def sample(_ctx: int, data: int, size: int) -> int:
            if self._abandoned:
                return -1  # libbpf ends the poll at a negative return
            try:
                callback(ctypes.string_at(data, size))
            except Exception:  # noqa: BLE001 - an exception must not cross into C
                _log.debug("ring buffer callback failed", exc_info=True)
            return 0

        return sample

    def poll(self, timeout_ms: int) -> int:
        """Handles ready records; returns how many (0 on timeout)."""
        rc = self._lib.lib.ring_buffer__poll(self._rb, timeout_ms)
        if rc < 0 and (-rc == errno.EINTR or self._abandoned):
            return 0  # interrupted, or ended by our own callback (abandon)
        return self._lib.check(rc, "ring buffer poll")

    def consume(self) -> int:
        """Handles every ready record without waiting, woken or not (records
        submitted with BPF_RB_NO_WAKEUP wake no poll); returns how many."""
        rc = self._lib.lib.ring_buffer__consume(self._rb)
        if rc < 0 and self._abandoned:
            return 0
        return self._lib.check(rc, "ring buffer consume")

    def abandon(self) -> None:
        """Make a poll in progress return at its next record, leaving the rest:
        a flood of records must not hold up a stop."""
        self._abandoned = True

    def close(self) -> None:
        if self._rb:
            self._lib.lib.ring_buffer__free(self._rb)
            self._rb = 0


class _ProgLoadOpts(ctypes.Structure):
    """struct bpf_prog_load_opts up to attach_btf_obj_fd (its sz says so)."""

    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("attempts", ctypes.c_int),
        ("expected_attach_type", ctypes.c_int),
        ("prog_btf_fd", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32),
        ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32),
    )


_PROG_TYPE_TRACING = 26
_TRACE_FEXIT = 25  # enum bpf_attach_type
_RETURN_ZERO = (0xB7, 0x95)  # r0 = 0; exit


def fexit_refused(btf_id: int) -> str:
    """Why an fexit program on the kernel function of BTF id ``btf_id``
    cannot run here, or "" when one loads and attaches: an empty one is tried
    and closed at once, so that the agent's object is not loaded in vain
    where the kernel refuses tracing programs (a full load costs ~0.5 s and
    ~10 MiB of RSS)."""
    libbpf = Libbpf.get()
    lib = libbpf.lib
    insns = (ctypes.c_uint64 * len(_RETURN_ZERO))(*_RETURN_ZERO)
    opts = _ProgLoadOpts(
        sz=ctypes.sizeof(_ProgLoadOpts), expected_attach_type=_TRACE_FEXIT, attach_btf_id=btf_id
    )
    prog = lib.bpf_prog_load(
        _PROG_TYPE_TRACING, b"fexit_probe", b"GPL", insns, len(insns), ctypes.byref(opts)
    )
    libbpf.log.take()  # the refusal's log lines: the errno says it
    if prog < 0:
        return f"load: {os.strerror(-prog)}"
    try:
        link = lib.bpf_link_create(prog, 0, _TRACE_FEXIT, None)
        if link < 0:
            return f"attach: {os.strerror(-link)}"
        os.close(link)
        return ""
    finally:
        os.close(prog)


class _OpenOpts(ctypes.Structure):
    """The head of libbpf's struct bpf_object_open_opts (stable since 0.x); ``sz``
    tells libbpf how much of it we pass."""

    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_removed_attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
    )


class BpfObject:
    """An opened object file; programs are attached one by one, all detached on close().

    ``kconfig`` ("CONFIG_X=y\n...") answers the object's ``__kconfig`` externs,
    so libbpf does not need /proc/config.gz or /boot/config-* on the host."""

    def __init__(self, path: str, kconfig: str | None = None) -> None:
        self._lib = Libbpf.get()
        lib = self._lib.lib
        self.path = path
        opts = None
        if kconfig is not None:
            self._kconfig = kconfig.encode()  # kept alive while libbpf may read it
            opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), kconfig=self._kconfig)
        self._obj = self._lib.check_ptr(
            lib.bpf_object__open_file(path.encode(), ctypes.byref(opts) if opts else None),
            f"open {path}",
        )
        self.programs: dict[str, int] = {}
        prog = lib.bpf_object__next_program(self._obj, None)
        while prog:
            self.programs[lib.bpf_program__name(prog).decode()] = prog
            prog = lib.bpf_object__next_program(self._obj, prog)
        self._links: dict[str, int] = {}
        self._maps: dict[str, BpfMap] = {}
        self.loaded = False

    def set_autoload(self, program: str, autoload: bool) -> None:
        self._lib.check(
            self._lib.lib.bpf_program__set_autoload(self.programs[program], autoload),
            f"set autoload of {program}",
        )

    def set_max_entries(self, name: str, entries: int) -> None:
        """Resize a map before load()."""
        lib = self._lib
        handle = lib.check_ptr(
            lib.lib.bpf_object__find_map_by_name(self._obj, name.encode()), f"find map {name}"
        )
        lib.check(lib.lib.bpf_map__set_max_entries(handle, entries), f"resize map {name}")

    def load(self) -> None:
        self._lib.log.take()
        self._lib.check(self._lib.lib.bpf_object__load(self._obj), f"load {self.path}")
        self.loaded = True

    def attach(self, program: str) -> None:
        link = self._lib.check_ptr(
            self._lib.lib.bpf_program__attach(self.programs[program]), f"attach {program}"
        )
        self._links[program] = link

    @property
    def attached(self) -> list[str]:
        return list(self._links)

    def program_fd(self, program: str) -> int:
        return self._lib.lib.bpf_program__fd(self.programs[program])

    def map(self, name: str) -> BpfMap:
        found = self._maps.get(name)
        if found is None:
            handle = self._lib.check_ptr(
                self._lib.lib.bpf_object__find_map_by_name(self._obj, name.encode()),
                f"find map {name}",
            )
            found = self._maps[name] = BpfMap(self._lib, handle, name)
        return found

    def ring_buffer(self, rings: dict[str, Callable[[bytes], None]]) -> RingBuffer:
        """One poller over the ring buffer maps named in ``rings``, each with its callback."""
        return RingBuffer(self._lib, [(self.map(name), cb) for name, cb in rings.items()])

    def detach_all(self) -> None:
        for name, link in list(self._links.items()):
            self._lib.lib.bpf_link__destroy(link)
            del self._links[name]

    def close(self) -> None:
        """Detach every program and free the object (maps and programs go with it)."""
        self.detach_all()
        if self._obj:
            self._lib.lib.bpf_object__close(self._obj)
            self._obj = 0
