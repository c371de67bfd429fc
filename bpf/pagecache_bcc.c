// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The BCC engine's programs: the same counters as pagecache.bpf.c, compiled
 * at run time by BCC against whatever kernel headers exist. Nothing here
 * trusts those headers' struct layouts: every offset (OFF_*), the memory
 * controller's subsystem id and PG_head come from the running kernel's BTF
 * (otel_pagecache/probes/btf_offsets.py) as -D definitions, and structs are
 * read with bpf_probe_read_kernel at those offsets. Raw tracepoints carry the
 * tracepoint's arguments in ctx->args. The kernel drift (the why of each:
 * pagecache.bpf.c) arrives as -D flags chosen from BTF by the loader:
 *   HAS_FOLIO            struct folio exists (else order-0 struct page)
 *   MEMCG_DATA_IS_OBJCG  memcg_data holds an obj_cgroup (7.x)
 *   DIRTY_PAGE_TRACEPOINT  writeback_dirty_page, before writeback_dirty_folio
 *   RECLAIM_BEGIN_GFP_FIRST  *_reclaim_begin(gfp, order, memcg) (7.x)
 *   THROTTLE_THRESH_ARGS balance_dirty_pages with ten numbers (up to 6.12)
 *   KPROBE_LOOKUPS       no lookup tracepoints (before 6.12): lookups from
 *                        kprobes on the read and fault functions, which the
 *                        loader attaches (lookup_read_* to the read function
 *                        this kernel has, lookup_fault_entry, lookup_map_pages_entry)
 *   WITH_SHARING         shared hits in extent mode (pagecache_sharing.h),
 *                        where lookups are counted; "mapping" there is the
 *                        address_space pointer, as on the lookup paths here
 */
#ifdef KPROBE_LOOKUPS
#include <uapi/linux/ptrace.h> /* struct pt_regs, as bcc's own tools include it */
#endif
#include "pagecache.h"
#include "pagecache_bcc_common.h"

static __always_inline u64 rd64(const void *p)
{
	u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), p);
	return v;
}

static __always_inline u32 rd32(const void *p)
{
	u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), p);
	return v;
}

static __always_inline u64 kn_id_of_css(void *css)
{
	void *cgroup = (void *)rd64(css + OFF_CSS_CGROUP);
	void *kn = (void *)rd64(cgroup + OFF_CGROUP_KN);
	return rd64(kn + OFF_KN_ID);
}

/* OFF_FOLIO_* are struct page's offsets where the kernel has no folio. */
static __always_inline u64 folio_memcg_id(void *folio)
{
	u64 data = rd64(folio + OFF_FOLIO_MEMCG_DATA);

	if (!data || (data & 1))
		return 0;
#ifdef MEMCG_DATA_IS_OBJCG
	data = rd64((void *)(data & ~7UL) + OFF_OBJCG_MEMCG);
	if (!data)
		return 0;
#endif
	return kn_id_of_css((void *)(data & ~7UL) + OFF_MEMCG_CSS);
}

static __always_inline u64 folio_pages(void *folio)
{
#ifdef HAS_FOLIO
	if (!(rd64(folio + OFF_FOLIO_FLAGS) & (1UL << PG_HEAD)))
		return 1;
	if (OFF_FOLIO_NR_PAGES >= 0)
		return rd32(folio + OFF_FOLIO_NR_PAGES);
	if (OFF_FOLIO_ORDER >= 0)
		return 1UL << (rd32(folio + OFF_FOLIO_ORDER) & 0xff);
	return 1UL << (rd64(folio + OFF_FOLIO_FLAGS_1) & 0xff);
#else
	return 1;
#endif
}

/* ---- The engine's side of pagecache_bookkeeping.h ------------------------- */

#define TASK_T void *

static __always_inline u32 task_tid(void *task)
{
	return (u32)bpf_get_current_pid_tgid();
}

static __always_inline u32 task_process_id(void *task)
{
	return bpf_get_current_pid_tgid() >> 32;
}

static __always_inline u64 task_cset(void *task)
{
	return rd64(task + OFF_TASK_CGROUPS);
}

static __always_inline u64 task_memcg_id(void *task)
{
	void *cset = (void *)rd64(task + OFF_TASK_CGROUPS);
	void *css = (void *)rd64(cset + OFF_CSS_SET_SUBSYS + MEMORY_CGRP_ID * 8);

	return css ? kn_id_of_css(css) : 0;
}

static __always_inline u32 task_flags(void *task)
{
	return rd32(task + OFF_TASK_FLAGS);
}

static __always_inline u64 task_reclaim_state(void *task)
{
	return rd64(task + OFF_TASK_RECLAIM_STATE);
}

#ifdef WITH_STALLS
#define PAGECACHE_STALLS
static __always_inline u32 task_ns_tid(void *task)
{
	void *pid = (void *)rd64(task + OFF_TASK_THREAD_PID);
	u32 level = rd32(pid + OFF_PID_LEVEL);

	if (level > 32)
		return 0;
	return rd32(pid + OFF_PID_NUMBERS + level * SIZE_UPID);
}

static __always_inline void stall_event_task(struct stall_event *event, void *task)
{
	event->pid = task_process_id(task);
	event->tid = task_tid(task);
	event->ns_tid = task_ns_tid(task);
	event->ns_pid = task_ns_tid((void *)rd64(task + OFF_TASK_GROUP_LEADER));
	bpf_get_current_comm(&event->comm, sizeof(event->comm));
}

/* The registers saved at the running syscall's entry: from bpf_task_pt_regs
 * where the kernel has it (5.15+; the loader defines HAVE_TASK_PT_REGS from
 * BTF), else from the top of the task's kernel stack (see X86_64_THREAD_SIZE
 * in pagecache.h). Read as raw words: x86-64's struct pt_regs is the ptrace
 * layout, fixed. */
#define PT_REGS_WORD_R10 7
#define PT_REGS_WORD_R8 9
#define PT_REGS_WORD_DX 12
#define PT_REGS_WORD_SI 13
#define PT_REGS_WORD_DI 14
#define PT_REGS_WORD_ORIG_AX 15
static __always_inline int current_syscall_args(u64 *nr, u64 args[5])
{
	u64 regs[16] = {};
#ifdef HAVE_TASK_PT_REGS
	void *saved = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
#else
	void *saved;

	if (OFF_TASK_STACK < 0)
		return 0;
	saved = (void *)(rd64((void *)bpf_get_current_task() + OFF_TASK_STACK) +
			 X86_64_THREAD_SIZE - X86_64_PT_REGS_SIZE);
#endif
	if (bpf_probe_read_kernel(regs, sizeof(regs), saved))
		return 0;
	*nr = regs[PT_REGS_WORD_ORIG_AX];
	args[0] = regs[PT_REGS_WORD_DI];
	args[1] = regs[PT_REGS_WORD_SI];
	args[2] = regs[PT_REGS_WORD_DX];
	args[3] = regs[PT_REGS_WORD_R10];
	args[4] = regs[PT_REGS_WORD_R8];
	return 1;
}
#endif

#ifdef WITH_SHARING
#define PAGECACHE_SHARING
static __always_inline bool sharing_on(void)
{
	return true;
}

/* fexit (exact mode) is the CO-RE engine's alone. */
static __always_inline bool reads_shared_exactly(void)
{
	return false;
}

static __always_inline bool file_mode_used(void)
{
	struct sharing_state *state = sharing_state_get();

	return state && state->file_mode;
}

static __always_inline void file_mode_started(void)
{
	struct sharing_state *state = sharing_state_get();

	if (state)
		state->file_mode = 1;
}

static __always_inline u64 owners_generation(void)
{
	struct sharing_state *state = sharing_state_get();

	return state ? *(volatile u64 *)&state->generation : 0;
}

static __always_inline void owners_changed(void)
{
	struct sharing_state *state = sharing_state_get();

	if (state)
		__sync_fetch_and_add(&state->generation, 1);
}
#define SHARING_PAGES_CHANGED(owner, folio, nr) \
	sharing_pages_changed(owner, rd64((folio) + OFF_FOLIO_MAPPING), \
			      rd64((folio) + OFF_FOLIO_INDEX), nr)
#else
#define SHARING_PAGES_CHANGED(owner, folio, nr) do {} while (0)
#endif

#include "pagecache_bookkeeping.h"

/* ---- Insertions, dirtying, removals (by owner) ---------------------------- */

static __always_inline void file_pages_add(u64 memcg, void *folio, s64 delta, bool create)
{
	void *host = (void *)rd64((void *)rd64(folio + OFF_FOLIO_MAPPING) + OFF_MAPPING_HOST);

	file_key_add(memcg, rd64(host + OFF_INODE_INO),
		     rd32((void *)rd64(host + OFF_INODE_SB) + OFF_SB_DEV), delta, create);
}

RAW_TRACEPOINT_PROBE(mm_filemap_add_to_page_cache)
{
	void *folio = (void *)ctx->args[0];
	void *task = (void *)bpf_get_current_task();
	u64 owner = folio_memcg_id(folio), nr = folio_pages(folio);

	count(INSERTIONS_MAP, &owner, nr);
	file_pages_add(owner, folio, nr, true);
	SHARING_PAGES_CHANGED(owner, folio, (s64)nr);
	note_insertion(task, task_flags(task), rd64(folio + OFF_FOLIO_MAPPING), nr);
	return 0;
}

static __always_inline int dirtied(struct bpf_raw_tracepoint_args *ctx)
{
	u64 owner = folio_memcg_id((void *)ctx->args[0]);

	count(DIRTIED_MAP, &owner, folio_pages((void *)ctx->args[0]));
	note_dirtying((void *)bpf_get_current_task(), ctx->args[1]);
	return 0;
}

#ifdef DIRTY_PAGE_TRACEPOINT
RAW_TRACEPOINT_PROBE(writeback_dirty_page)
{
	return dirtied(ctx);
}
#else
RAW_TRACEPOINT_PROBE(writeback_dirty_folio)
{
	return dirtied(ctx);
}
#endif

RAW_TRACEPOINT_PROBE(mm_filemap_delete_from_page_cache)
{
	void *folio = (void *)ctx->args[0];
	struct removal_key key = {};
	u64 nr = folio_pages(folio);

	key.memcg = folio_memcg_id(folio);
	key.reason = removal_reason((void *)bpf_get_current_task());
	count(REMOVALS_MAP, &key, nr);
	file_pages_add(key.memcg, folio, -(s64)nr, false);
	SHARING_PAGES_CHANGED(key.memcg, folio, -(s64)nr);
	return 0;
}

#ifdef WITH_LOOKUPS
RAW_TRACEPOINT_PROBE(mm_filemap_get_pages)
{
	lookup_read((void *)bpf_get_current_task(), ctx->args[0], ctx->args[1], ctx->args[2]);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_filemap_fault)
{
	lookup_fault((void *)bpf_get_current_task(), ctx->args[0], ctx->args[1]);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_filemap_map_pages)
{
	lookup_fault_around((void *)bpf_get_current_task(), ctx->args[0], ctx->args[1],
			    ctx->args[2]);
	return 0;
}
#endif

#ifdef KPROBE_LOOKUPS
/* Lookups before 6.12, as bcc's cachestat takes them: kprobes on the read
 * function (filemap_get_pages from 5.12, generic_file_buffered_read before)
 * and the fault functions; the rules are the CO-RE engine's kprobe hooks'
 * (pagecache_bookkeeping.h, "Lookups from the read and fault functions"). */
static __always_inline s64 mapping_size(u64 mapping)
{
	return (s64)rd64((void *)rd64((void *)mapping + OFF_MAPPING_HOST) + OFF_INODE_SIZE);
}

static __always_inline void read_entered(void *iocb, u64 count)
{
	u64 mapping = rd64((void *)rd64(iocb + OFF_KIOCB_FILP) + OFF_FILE_MAPPING);

	lookup_read_entered((void *)bpf_get_current_task(), mapping,
			    (s64)rd64(iocb + OFF_KIOCB_POS), count, mapping_size(mapping));
}

/* (iocb, iter, ...): generic_file_buffered_read, filemap_get_pages to 6.4 */
int lookup_read_iter(struct pt_regs *ctx)
{
	read_entered((void *)PT_REGS_PARM1(ctx), rd64((void *)PT_REGS_PARM2(ctx) + OFF_ITER_COUNT));
	return 0;
}

/* (iocb, count, ...): filemap_get_pages from 6.5 */
int lookup_read_count(struct pt_regs *ctx)
{
	read_entered((void *)PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx));
	return 0;
}

static __always_inline u64 vmf_mapping(void *vmf)
{
	void *file = (void *)rd64((void *)rd64(vmf + OFF_VMF_VMA) + OFF_VMA_FILE);

	return rd64(file + OFF_FILE_MAPPING);
}

/* filemap_fault(vmf) */
int lookup_fault_entry(struct pt_regs *ctx)
{
	void *vmf = (void *)PT_REGS_PARM1(ctx);

	lookup_fault((void *)bpf_get_current_task(), vmf_mapping(vmf), rd64(vmf + OFF_VMF_PGOFF));
	return 0;
}

/* filemap_map_pages(vmf, start_pgoff, end_pgoff) */
int lookup_map_pages_entry(struct pt_regs *ctx)
{
	u64 mapping = vmf_mapping((void *)PT_REGS_PARM1(ctx));

	lookup_fault_around_entered((void *)bpf_get_current_task(), mapping, PT_REGS_PARM2(ctx),
				    PT_REGS_PARM3(ctx), mapping_size(mapping));
	return 0;
}
#endif

#ifdef WITH_STALLS
/* ---- Stalls (the logic: pagecache_bookkeeping.h) --------------------------- */
#ifdef RECLAIM_BEGIN_GFP_FIRST
#define BEGIN_ORDER 1
#define BEGIN_GFP 0
#else
#define BEGIN_ORDER 0
#define BEGIN_GFP 1
#endif

RAW_TRACEPOINT_PROBE(mm_vmscan_memcg_reclaim_begin)
{
	stall_begin((void *)bpf_get_current_task(), STALL_MEMCG_RECLAIM,
		    (int)ctx->args[BEGIN_ORDER], ctx->args[BEGIN_GFP]);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_memcg_reclaim_end)
{
	stall_end((void *)bpf_get_current_task(), STALL_MEMCG_RECLAIM, ctx->args[0]);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_direct_reclaim_begin)
{
	stall_begin((void *)bpf_get_current_task(), STALL_DIRECT_RECLAIM,
		    (int)ctx->args[BEGIN_ORDER], ctx->args[BEGIN_GFP]);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_direct_reclaim_end)
{
	stall_end((void *)bpf_get_current_task(), STALL_DIRECT_RECLAIM, ctx->args[0]);
	return 0;
}

/* task_rename(task, comm): the current thread renamed; see slots_announced. */
RAW_TRACEPOINT_PROBE(task_rename)
{
	slots_announced((void *)bpf_get_current_task(), (const void *)ctx->args[1]);
	return 0;
}

/* balance_dirty_pages(wb, dtc, dirty_ratelimit, task_ratelimit, dirtied,
 * period, pause, start_time); up to 6.12 ten numbers stood for dtc:
 * (wb, thresh, bg_thresh, dirty, bdi_thresh, bdi_dirty, dirty_ratelimit,
 * task_ratelimit, dirtied, period, pause, start_time). */
#ifdef THROTTLE_THRESH_ARGS
#define THROTTLE_ARG(n) ctx->args[(n) + 4]
#else
#define THROTTLE_ARG(n) ctx->args[n]
#endif
RAW_TRACEPOINT_PROBE(balance_dirty_pages)
{
	stall_dirty_throttle((void *)bpf_get_current_task(), (long)THROTTLE_ARG(6), KERNEL_HZ,
			     THROTTLE_ARG(4), THROTTLE_ARG(3));
	return 0;
}
#endif
