/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Minimal kernel types for pagecache.bpf.c, written by hand for CO-RE: only
 * the fields the program reads, in no particular layout. Every struct carries
 * preserve_access_index, so libbpf relocates each field access against the
 * running kernel's BTF (/sys/kernel/btf/vmlinux) at load time; offsets here
 * do not matter and the build needs neither kernel headers nor the build
 * host's BTF. Field names are those of Linux 6.18; older spellings are
 * declared as "___flavour" structs beside them (see pagecache.bpf.c).
 */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

typedef unsigned char __u8;
typedef short unsigned int __u16;
typedef unsigned int __u32;
typedef long long unsigned int __u64;
typedef signed char __s8;
typedef short int __s16;
typedef int __s32;
typedef long long int __s64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
typedef __u32 __be32;
typedef __u16 __be16;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };
typedef long unsigned int pgoff_t;
typedef __u32 dev_t;
typedef long unsigned int ino_t;
typedef long long int loff_t;

/* Only to ask, by CO-RE enum relocation, whether the running kernel has
 * these helpers (5.11+, 5.15+). */
enum bpf_func_id {
	BPF_FUNC_get_current_task_btf = 158,
	BPF_FUNC_task_pt_regs = 175,
};

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#ifndef BPF_NO_PRESERVE_ACCESS_INDEX
#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)
#endif

struct kernfs_node {
	u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct cgroup_subsys_state {
	struct cgroup *cgroup;
};

/* The array's real length is CGROUP_SUBSYS_COUNT of the running kernel; the
 * index used is a CO-RE enum relocation, and the slot is a direct (BTF-typed)
 * load the verifier checks against the running kernel's own type, so the
 * declared length only bounds our own code. */
struct css_set {
	struct cgroup_subsys_state *subsys[16];
};

enum cgroup_subsys_id {
	memory_cgrp_id = 4,
};

struct mem_cgroup {
	struct cgroup_subsys_state css;
};

/* 7.x: an LRU folio's memcg_data points here (is_root came with that). */
struct obj_cgroup {
	struct mem_cgroup *memcg;
	bool is_root;
};

struct reclaim_state;
struct pid_namespace;

struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	unsigned int level;
	struct upid numbers[1];
};

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct reclaim_state *reclaim_state;
	struct css_set *cgroups;
	void *stack;
};

struct super_block {
	dev_t s_dev;
};

struct inode {
	long unsigned int i_ino;
	struct super_block *i_sb;
	loff_t i_size;
};

struct address_space {
	struct inode *host;
};

/* The read and fault functions hooked before 6.12 (mm_filemap_get_pages). */
struct file {
	struct address_space *f_mapping;
};

struct kiocb {
	struct file *ki_filp;
	loff_t ki_pos;
};

struct iov_iter {
	long unsigned int count;
};

/* The folios filemap_get_pages() found for a read's batch (5.16+; shared
 * hits' exact mode): 15 until 6.x, 31 since; only nr of them are read. */
struct folio_batch {
	unsigned char nr;
	struct folio *folios[31];
};

struct vm_area_struct {
	struct file *vm_file;
};

struct vm_fault {
	struct vm_area_struct *vma;
	pgoff_t pgoff;
};

/* x86-64 argument registers, for BPF_KPROBE (bpf_tracing.h), and a
 * syscall's (orig_ax is its number; its fourth argument is in r10). */
struct pt_regs {
	long unsigned int di;
	long unsigned int si;
	long unsigned int dx;
	long unsigned int cx;
	long unsigned int r8;
	long unsigned int r9;
	long unsigned int r10;
	long unsigned int sp;
	long unsigned int bp;
	long unsigned int ax;
	long unsigned int ip;
	long unsigned int orig_ax;
};

/* Linux 6.18: folio->flags is a memdesc_flags_t. */
typedef struct {
	long unsigned int f;
} memdesc_flags_t;

struct folio {
	memdesc_flags_t flags;
	struct address_space *mapping;
	pgoff_t index;
	long unsigned int memcg_data;
	long unsigned int _flags_1;
	unsigned int _nr_pages;
};

/* Before 6.18 folio->flags was a plain unsigned long. */
struct folio___ulong_flags {
	long unsigned int flags;
};

/* 5.17 .. 6.5 kept the order in its own byte of the first tail page. */
struct folio___folio_order {
	unsigned char _folio_order;
};

/* Before 5.17 the filemap tracepoints passed the head struct page *. */
struct page {
	long unsigned int flags;
	struct address_space *mapping;
	pgoff_t index;
	long unsigned int memcg_data;
};

/* Before 5.11 a page named its memcg by pointer. */
struct page___mem_cgroup {
	struct mem_cgroup *mem_cgroup;
};

#ifndef BPF_NO_PRESERVE_ACCESS_INDEX
#pragma clang attribute pop
#endif

#endif /* __VMLINUX_H__ */
