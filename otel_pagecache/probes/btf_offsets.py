"""Struct member offsets and enum values from the running kernel's BTF.

The BCC engine compiles against whatever kernel headers exist, which rarely
match a custom kernel; the layout it must trust is the running kernel's own,
read here from /sys/kernel/btf/vmlinux through libbpf and handed to the BCC
program as constants. Anonymous struct/union members are searched through
(``folio.memcg_data`` sits in one).
"""

from __future__ import annotations

import ctypes

from .libbpf import Libbpf

KIND_PTR, KIND_STRUCT, KIND_UNION, KIND_ENUM = 2, 4, 5, 6
KIND_TYPEDEF, KIND_FUNC, KIND_FUNC_PROTO = 8, 12, 13
_MODIFIERS = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag


class _BtfType(ctypes.Structure):
    _fields_ = (
        ("name_off", ctypes.c_uint32),
        ("info", ctypes.c_uint32),
        ("size_type", ctypes.c_uint32),
    )


class _BtfMember(ctypes.Structure):
    _fields_ = (
        ("name_off", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("offset", ctypes.c_uint32),
    )


class _BtfParam(ctypes.Structure):
    _fields_ = (("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32))


class _BtfEnum(ctypes.Structure):
    _fields_ = (("name_off", ctypes.c_uint32), ("val", ctypes.c_int32))


class KernelBtf:
    def __init__(self) -> None:
        self._lib = Libbpf.get().lib
        self._btf = self._lib.btf__load_vmlinux_btf()
        if not self._btf:
            raise OSError("no kernel BTF")

    def __enter__(self) -> KernelBtf:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._btf:
            self._lib.btf__free(self._btf)
            self._btf = None

    def _type(self, type_id: int) -> tuple[_BtfType, int]:
        ptr = self._lib.btf__type_by_id(self._btf, type_id)
        if not ptr:
            raise KeyError(type_id)
        return _BtfType.from_address(ptr), ptr

    def _name(self, offset: int) -> str:
        return (self._lib.btf__name_by_offset(self._btf, offset) or b"").decode()

    def _resolve(self, type_id: int) -> int:
        for _ in range(16):
            t, _ = self._type(type_id)
            if (t.info >> 24) & 0x1F not in _MODIFIERS:
                return type_id
            type_id = t.size_type
        return type_id

    def type_id(self, name: str, kind: int) -> int | None:
        """The BTF id of ``name`` of that kind (KIND_FUNC: a kernel function), or None."""
        try:
            return self._find(name, kind)
        except KeyError:
            return None

    def _find(self, name: str, kind: int) -> int:
        type_id = self._lib.btf__find_by_name_kind(self._btf, name.encode(), kind)
        if type_id < 0:
            raise KeyError(name)
        return type_id

    def member_offset(self, struct: str, member: str, kind: int = KIND_STRUCT) -> int | None:
        """Byte offset of ``member`` in ``struct``, or None if the kernel has no such member."""
        try:
            return self._member_in(self._find(struct, kind), member)
        except KeyError:
            return None

    def _member_in(self, type_id: int, member: str) -> int | None:
        t, ptr = self._type(type_id)
        kind = (t.info >> 24) & 0x1F
        if kind not in (KIND_STRUCT, KIND_UNION):
            return None
        kind_flag = t.info >> 31
        members = (_BtfMember * (t.info & 0xFFFF)).from_address(ptr + ctypes.sizeof(_BtfType))
        for m in members:
            bits = m.offset & 0xFFFFFF if kind_flag else m.offset
            name = self._name(m.name_off)
            if name == member:
                return bits // 8
            if not name:  # anonymous struct or union: look inside
                inner = self._member_in(self._resolve(m.type), member)
                if inner is not None:
                    return bits // 8 + inner
        return None

    def params(self, name: str, kind: int = KIND_FUNC) -> list[tuple[str, str]] | None:
        """(name, type) of each parameter of function ``name`` (KIND_FUNC) or of
        the function pointer typedef ``name`` (a tracepoint's btf_trace_<tp>);
        None when the kernel has no such function. A type is named as BTF has
        it: "gfp_t", "int", "*" for any pointer."""
        try:
            type_id = self._find(name, kind)
            t, _ = self._type(type_id)
            type_id = t.size_type
            if kind == KIND_TYPEDEF:  # typedef -> pointer -> prototype
                type_id = self._type(type_id)[0].size_type
            t, ptr = self._type(type_id)
        except KeyError:
            return None
        if (t.info >> 24) & 0x1F != KIND_FUNC_PROTO:
            return None
        out = []
        for p in (_BtfParam * (t.info & 0xFFFF)).from_address(ptr + ctypes.sizeof(_BtfType)):
            if p.type == 0:  # "..." of a variadic function
                continue
            pt, _ = self._type(p.type)
            pointer = (pt.info >> 24) & 0x1F == KIND_PTR
            out.append((self._name(p.name_off), "*" if pointer else self._name(pt.name_off)))
        return out

    def struct_size(self, struct: str) -> int:
        t, _ = self._type(self._find(struct, KIND_STRUCT))
        return t.size_type

    def enum_value(self, enum: str, name: str) -> int | None:
        """Value of enumerator ``name`` in any enum called ``enum``."""
        try:
            t, ptr = self._type(self._find(enum, KIND_ENUM))
        except KeyError:
            return None
        values = (_BtfEnum * (t.info & 0xFFFF)).from_address(ptr + ctypes.sizeof(_BtfType))
        for v in values:
            if self._name(v.name_off) == name:
                return v.val
        return None


# Every layout fact the BCC program needs: macro name -> (struct, member),
# with the older spellings to try after it (the why: pagecache.bpf.c's drift
# block). A struct page stands in for the folio before 5.16.
MEMBERS = {
    "OFF_FOLIO_FLAGS": (("folio", "flags"), ("page", "flags")),
    "OFF_FOLIO_MAPPING": (("folio", "mapping"), ("page", "mapping")),
    "OFF_FOLIO_INDEX": (("folio", "index"), ("page", "index")),
    "OFF_FOLIO_MEMCG_DATA": (
        ("folio", "memcg_data"),
        ("page", "memcg_data"),  # 5.11 .. 5.15
        ("page", "mem_cgroup"),  # up to 5.10
    ),
    "OFF_CSS_CGROUP": (("cgroup_subsys_state", "cgroup"),),
    "OFF_MEMCG_CSS": (("mem_cgroup", "css"),),
    "OFF_CGROUP_KN": (("cgroup", "kn"),),
    "OFF_KN_ID": (("kernfs_node", "id"),),
    "OFF_MAPPING_HOST": (("address_space", "host"),),
    "OFF_INODE_INO": (("inode", "i_ino"),),
    "OFF_INODE_SB": (("inode", "i_sb"),),
    "OFF_SB_DEV": (("super_block", "s_dev"),),
    "OFF_TASK_FLAGS": (("task_struct", "flags"),),
    "OFF_TASK_PID": (("task_struct", "pid"),),
    "OFF_TASK_RECLAIM_STATE": (("task_struct", "reclaim_state"),),
    "OFF_TASK_CGROUPS": (("task_struct", "cgroups"),),
    "OFF_CSS_SET_SUBSYS": (("css_set", "subsys"),),
    "OFF_TASK_TGID": (("task_struct", "tgid"),),
    "OFF_TASK_GROUP_LEADER": (("task_struct", "group_leader"),),
    "OFF_TASK_THREAD_PID": (("task_struct", "thread_pid"),),
    "OFF_PID_LEVEL": (("pid", "level"),),
    "OFF_PID_NUMBERS": (("pid", "numbers"),),
    # the kprobe lookups of kernels before 6.12 (KPROBE_LOOKUPS)
    "OFF_KIOCB_FILP": (("kiocb", "ki_filp"),),
    "OFF_KIOCB_POS": (("kiocb", "ki_pos"),),
    "OFF_FILE_MAPPING": (("file", "f_mapping"),),
    "OFF_INODE_SIZE": (("inode", "i_size"),),
    "OFF_ITER_COUNT": (("iov_iter", "count"),),
    "OFF_VMF_VMA": (("vm_fault", "vma"),),
    "OFF_VMF_PGOFF": (("vm_fault", "pgoff"),),
    "OFF_VMA_FILE": (("vm_area_struct", "vm_file"),),
}
# Folio size: -1 where the kernel has no such member.
OPTIONAL_MEMBERS = {
    "OFF_FOLIO_NR_PAGES": (("folio", "_nr_pages"), ("folio", "_folio_nr_pages")),
    "OFF_FOLIO_ORDER": (("folio", "_folio_order"),),  # 5.17 .. 6.5
    "OFF_FOLIO_FLAGS_1": (("folio", "_flags_1"),),
    "OFF_OBJCG_MEMCG": (("obj_cgroup", "memcg"),),
    "OFF_TASK_STACK": (("task_struct", "stack"),),  # syscall registers before 5.15
}


def _first_offset(btf: KernelBtf, spellings) -> int | None:
    for struct, member in spellings:
        offset = btf.member_offset(struct, member)
        if offset is not None:
            return offset
    return None


def layout_from_btf() -> dict[str, int]:
    """The constants for the BCC program; raises KeyError naming what is missing.
    HAS_FOLIO, MEMCG_DATA_IS_OBJCG and HAVE_TASK_PT_REGS are present only when
    true (#ifdef)."""
    btf = KernelBtf()
    try:
        out = {}
        for macro, spellings in MEMBERS.items():
            offset = _first_offset(btf, spellings)
            if offset is None:
                raise KeyError(" or ".join(f"{s}.{m}" for s, m in spellings))
            out[macro] = offset
        for macro, spellings in OPTIONAL_MEMBERS.items():
            offset = _first_offset(btf, spellings)
            out[macro] = -1 if offset is None else offset
        if btf.member_offset("folio", "flags") is not None:
            out["HAS_FOLIO"] = 1
        if btf.member_offset("obj_cgroup", "is_root") is not None:  # 7.x: see the drift block
            out["MEMCG_DATA_IS_OBJCG"] = 1
        # 5.15+: the stall programs read a syscall's arguments (slots_announced).
        if btf.enum_value("bpf_func_id", "BPF_FUNC_task_pt_regs") is not None:
            out["HAVE_TASK_PT_REGS"] = 1
        memory_id = btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")
        head = btf.enum_value("pageflags", "PG_head")
        if memory_id is None or head is None:
            raise KeyError("memory_cgrp_id or PG_head")
        out["MEMORY_CGRP_ID"] = memory_id
        out["PG_HEAD"] = head
        out["SIZE_UPID"] = btf.struct_size("upid")
        return out
    finally:
        btf.close()
