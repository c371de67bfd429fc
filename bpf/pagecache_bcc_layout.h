/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The BCC engine's layout constants from kernel headers, for a kernel
 * without BTF whose headers match it exactly (the loader checks the
 * version). With BTF the same names come from the kernel itself instead.
 */
#include <linux/version.h>
#include <linux/mm_types.h>
#include <linux/memcontrol.h>
#include <linux/cgroup-defs.h>
#include <linux/kernfs.h>
#include <linux/fs.h>
#include <linux/sched.h>
#include <linux/pid.h>
#include <linux/mm.h>
#include <linux/uio.h>

/* struct folio arrived in 5.16; before it the head struct page stands in
 * (order 0), and named its memcg by pointer until 5.11 (see pagecache.bpf.c). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 16, 0)
#define HAS_FOLIO 1
#define OFF_FOLIO_FLAGS offsetof(struct folio, flags)
#define OFF_FOLIO_MAPPING offsetof(struct folio, mapping)
#define OFF_FOLIO_INDEX offsetof(struct folio, index)
#define OFF_FOLIO_MEMCG_DATA offsetof(struct folio, memcg_data)
#define OFF_FOLIO_FLAGS_1 offsetof(struct folio, _flags_1)
#define OFF_FOLIO_ORDER -1
/* 6.9 renamed _folio_nr_pages to _nr_pages (64-bit kernels keep both forms' meaning). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
#define OFF_FOLIO_NR_PAGES offsetof(struct folio, _nr_pages)
#else
#define OFF_FOLIO_NR_PAGES offsetof(struct folio, _folio_nr_pages)
#endif
#else
#define OFF_FOLIO_FLAGS offsetof(struct page, flags)
#define OFF_FOLIO_MAPPING offsetof(struct page, mapping)
#define OFF_FOLIO_INDEX offsetof(struct page, index)
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 11, 0)
#define OFF_FOLIO_MEMCG_DATA offsetof(struct page, memcg_data)
#else
#define OFF_FOLIO_MEMCG_DATA offsetof(struct page, mem_cgroup)
#endif
#define OFF_FOLIO_FLAGS_1 -1
#define OFF_FOLIO_ORDER -1
#define OFF_FOLIO_NR_PAGES -1
#endif
/* Only read with MEMCG_DATA_IS_OBJCG, which needs BTF to be told (7.x). */
#define OFF_OBJCG_MEMCG -1
#define OFF_CSS_CGROUP offsetof(struct cgroup_subsys_state, cgroup)
#define OFF_MEMCG_CSS offsetof(struct mem_cgroup, css)
#define OFF_CGROUP_KN offsetof(struct cgroup, kn)
#define OFF_KN_ID offsetof(struct kernfs_node, id)
#define OFF_MAPPING_HOST offsetof(struct address_space, host)
#define OFF_INODE_INO offsetof(struct inode, i_ino)
#define OFF_INODE_SB offsetof(struct inode, i_sb)
#define OFF_SB_DEV offsetof(struct super_block, s_dev)
#define OFF_TASK_FLAGS offsetof(struct task_struct, flags)
#define OFF_TASK_PID offsetof(struct task_struct, pid)
#define OFF_TASK_RECLAIM_STATE offsetof(struct task_struct, reclaim_state)
#define OFF_TASK_CGROUPS offsetof(struct task_struct, cgroups)
#define OFF_CSS_SET_SUBSYS offsetof(struct css_set, subsys)
#define OFF_TASK_TGID offsetof(struct task_struct, tgid)
#define OFF_TASK_GROUP_LEADER offsetof(struct task_struct, group_leader)
#define OFF_TASK_THREAD_PID offsetof(struct task_struct, thread_pid)
#define OFF_TASK_STACK offsetof(struct task_struct, stack)
#define OFF_PID_LEVEL offsetof(struct pid, level)
#define OFF_PID_NUMBERS offsetof(struct pid, numbers)
#define OFF_KIOCB_FILP offsetof(struct kiocb, ki_filp)
#define OFF_KIOCB_POS offsetof(struct kiocb, ki_pos)
#define OFF_FILE_MAPPING offsetof(struct file, f_mapping)
#define OFF_INODE_SIZE offsetof(struct inode, i_size)
#define OFF_ITER_COUNT offsetof(struct iov_iter, count)
#define OFF_VMF_VMA offsetof(struct vm_fault, vma)
#define OFF_VMF_PGOFF offsetof(struct vm_fault, pgoff)
#define OFF_VMA_FILE offsetof(struct vm_area_struct, vm_file)
#define SIZE_UPID sizeof(struct upid)
#define MEMORY_CGRP_ID memory_cgrp_id
#define PG_HEAD PG_head
