// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The BCC engine's programs: the same counters as pagecache.bpf.c, compiled
 * at run time by BCC against whatever kernel headers exist. Nothing here
 * trusts those headers' struct layouts: every offset (OFF_*), the memory
 * controller's subsystem id and PG_head come from the running kernel's BTF
 * (otel_pagecache/probes/btf_offsets.py) as -D definitions, and structs are
 * read with bpf_probe_read_kernel at those offsets. Raw tracepoints carry the
 * tracepoint's arguments in ctx->args. pagecache.h is prepended by the loader.
 */
#define PF_MEMALLOC 0x00000800
#define PF_KSWAPD 0x00020000
#define PF_MEMALLOC_NOFS 0x00040000

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

BCC_COMMON

static __always_inline u64 kn_id_of_css(void *css)
{
	void *cgroup = (void *)rd64(css + OFF_CSS_CGROUP);
	void *kn = (void *)rd64(cgroup + OFF_CGROUP_KN);
	return rd64(kn + OFF_KN_ID);
}

static __always_inline u64 folio_memcg_id(void *folio)
{
	u64 data = rd64(folio + OFF_FOLIO_MEMCG_DATA);

	if (!data || (data & 1))
		return 0;
	return kn_id_of_css((void *)(data & ~7UL) + OFF_MEMCG_CSS);
}

static __always_inline u64 task_memcg_id(void *task)
{
	void *cset = (void *)rd64(task + OFF_TASK_CGROUPS);
	void *css = (void *)rd64(cset + OFF_CSS_SET_SUBSYS + MEMORY_CGRP_ID * 8);

	return css ? kn_id_of_css(css) : 0;
}

static __always_inline u64 folio_pages(void *folio)
{
	if (!(rd64(folio + OFF_FOLIO_FLAGS) & (1UL << PG_HEAD)))
		return 1;
	if (OFF_FOLIO_NR_PAGES >= 0)
		return rd32(folio + OFF_FOLIO_NR_PAGES);
	return 1UL << (rd64(folio + OFF_FOLIO_FLAGS_1) & 0xff);
}

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
	u64 mapping = rd64(folio + OFF_FOLIO_MAPPING);
	u32 tid = (u32)bpf_get_current_pid_tgid(), zero = 0;
	struct cpu_slots *slots;

	count_insertions(&owner, nr);
	file_pages_add(owner, folio, nr, true);
	if (rd32(task + OFF_TASK_FLAGS) & PF_MEMALLOC_NOFS) {
		u64 accessor = task_memcg_id(task);
		count_misses(&accessor, nr);
		return 0;
	}
	slots = cpu_slots.lookup(&zero);
	if (!slots)
		return 0;
	if (slots->insert.tid == tid && slots->insert.mapping == mapping) {
		slots->insert.pages += nr;
		return 0;
	}
	resolve_pending(&slots->insert, true);
	slots->insert.tid = tid;
	slots->insert.mapping = mapping;
	slots->insert.memcg = task_memcg_id(task);
	slots->insert.pages = nr;
	return 0;
}

RAW_TRACEPOINT_PROBE(writeback_dirty_folio)
{
	void *folio = (void *)ctx->args[0];
	u64 mapping = ctx->args[1];
	u64 owner = folio_memcg_id(folio);
	u32 tid = (u32)bpf_get_current_pid_tgid(), zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);

	count_dirtied(&owner, folio_pages(folio));
	if (slots && slots->insert.tid == tid && slots->insert.mapping == mapping)
		resolve_pending(&slots->insert, false);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_filemap_delete_from_page_cache)
{
	void *folio = (void *)ctx->args[0];
	void *task = (void *)bpf_get_current_task();
	struct removal_key key = {};
	u64 nr = folio_pages(folio);

	key.memcg = folio_memcg_id(folio);
	if ((rd32(task + OFF_TASK_FLAGS) & (PF_KSWAPD | PF_MEMALLOC)) ||
	    rd64(task + OFF_TASK_RECLAIM_STATE))
		key.reason = REMOVAL_EVICTION;
	else
		key.reason = REMOVAL_INVALIDATION;
	count_removals(&key, nr);
	file_pages_add(key.memcg, folio, -(s64)nr, false);
	return 0;
}

#ifdef WITH_LOOKUPS
static __always_inline void count_lookups(struct cpu_slots *slots, u64 pages)
{
	struct lookup_slot *slot = &slots->lookup;
	void *task = (void *)bpf_get_current_task();
	u64 cset = rd64(task + OFF_TASK_CGROUPS), memcg;

	if (slots->insert.pages)
		resolve_pending(&slots->insert, true);
	if (cset == slot->cset) {
		slot->lookups += pages;
		return;
	}
	memcg = task_memcg_id(task);
	slot->cset = cset;
	if (slot->memcg == memcg) {
		slot->lookups += pages;
		return;
	}
	if (slot->lookups) {
		u64 old = slot->memcg;
		count_lookups_map(&old, slot->lookups);
	}
	slot->memcg = memcg;
	slot->lookups = pages;
}

RAW_TRACEPOINT_PROBE(mm_filemap_get_pages)
{
	u32 zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);
	u64 pages;

	if (!slots)
		return 0;
	pages = read_pages(slots, ctx->args[0], ctx->args[1], ctx->args[2]);
	if (pages)
		count_lookups(slots, pages);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_filemap_fault)
{
	u32 zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);

	if (!slots)
		return 0;
	note_fault(&slots->lookup, ctx->args[0], ctx->args[1]);
	count_lookups(slots, 1);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_filemap_map_pages)
{
	u32 zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);

	if (!slots)
		return 0;
	count_lookups(slots, fault_around_pages(&slots->lookup, ctx->args[0], ctx->args[1], ctx->args[2]));
	return 0;
}
#endif

#ifdef WITH_STALLS
/* ---- Stalls (see pagecache.bpf.c for the why of each step) ------------- */
BPF_HASH(stall_starts, u32, struct stall_start, PAGECACHE_MAX_STALLING_THREADS);
BPF_RINGBUF_OUTPUT(stall_events, PAGECACHE_STALL_RINGBUF_BYTES / 4096);
BPF_HASH(span_slot_bases, u32, struct span_slot_base, PAGECACHE_MAX_TRACED_PROCESSES);

static __always_inline u32 ns_id(void *task)
{
	void *pid = (void *)rd64(task + OFF_TASK_THREAD_PID);
	u32 level = rd32(pid + OFF_PID_LEVEL);

	if (level > 32)
		return 0;
	return rd32(pid + OFF_PID_NUMBERS + level * SIZE_UPID);
}

static __always_inline void current_span(void *task, struct span_slot *slot)
{
	u32 tgid = rd32(task + OFF_TASK_TGID), tid = ns_id(task);
	struct span_slot_base *base = span_slot_bases.lookup(&tgid);
	u64 address;

	slot->tid = 0;
	if (!base || !base->count || base->size < sizeof(*slot))
		return;
	address = base->address + (u64)(tid % base->count) * base->size;
	if (bpf_probe_read_user(slot, sizeof(*slot), (void *)address) || slot->tid != tid)
		slot->tid = 0;
}

static __always_inline void stall_begin(u32 kind, int order, u64 gfp)
{
	void *task = (void *)bpf_get_current_task();
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct stall_start start = {};

	start.start_ns = bpf_ktime_get_boot_ns();
	start.memcg = task_memcg_id(task);
	start.gfp = gfp;
	start.order = order;
	start.kind = kind;
	current_span(task, &start.span);
	if (stall_starts.update(&tid, &start))
		lost(LOST_STALL_STARTS_FULL);
}

static __always_inline struct stall_event *stall_reserve(void *task)
{
	struct stall_event *event = stall_events.ringbuf_reserve(sizeof(struct stall_event));
	u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!event) {
		lost(LOST_STALL_RINGBUF_FULL);
		return NULL;
	}
	event->pid = pid_tgid >> 32;
	event->tid = (u32)pid_tgid;
	event->ns_tid = ns_id(task);
	event->ns_pid = ns_id((void *)rd64(task + OFF_TASK_GROUP_LEADER));
	event->pad = 0;
	bpf_get_current_comm(&event->comm, sizeof(event->comm));
	return event;
}

static __always_inline void stall_end(u32 kind, u64 nr_reclaimed)
{
	void *task = (void *)bpf_get_current_task();
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct stall_start *start = stall_starts.lookup(&tid);
	struct stall_event *event;
	u64 now = bpf_ktime_get_boot_ns();

	if (!start)
		return;
	if (start->kind != kind) {
		stall_starts.delete(&tid);
		return;
	}
	event = stall_reserve(task);
	if (event) {
		event->start_ns = start->start_ns;
		event->duration_ns = now - start->start_ns;
		event->memcg = start->memcg;
		event->pages = nr_reclaimed;
		event->gfp = start->gfp;
		event->ratelimit = 0;
		event->order = start->order;
		event->kind = kind;
		event->planned = 0;
		__builtin_memcpy(&event->span, &start->span, sizeof(event->span));
		stall_events.ringbuf_submit(event, 0);
	}
	stall_starts.delete(&tid);
}

RAW_TRACEPOINT_PROBE(mm_vmscan_memcg_reclaim_begin)
{
	stall_begin(STALL_MEMCG_RECLAIM, (int)ctx->args[0], ctx->args[1]);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_memcg_reclaim_end)
{
	stall_end(STALL_MEMCG_RECLAIM, ctx->args[0]);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_direct_reclaim_begin)
{
	stall_begin(STALL_DIRECT_RECLAIM, (int)ctx->args[0], ctx->args[1]);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_vmscan_direct_reclaim_end)
{
	stall_end(STALL_DIRECT_RECLAIM, ctx->args[0]);
	return 0;
}

/* balance_dirty_pages(wb, dtc, dirty_ratelimit, task_ratelimit, dirtied,
 * period, pause, start_time): the planned pause, as in pagecache.bpf.c. */
RAW_TRACEPOINT_PROBE(balance_dirty_pages)
{
	long pause = (long)ctx->args[6];
	void *task;
	struct stall_event *event;

	if (pause <= 0 || !KERNEL_HZ)
		return 0;
	task = (void *)bpf_get_current_task();
	event = stall_reserve(task);
	if (!event)
		return 0;
	event->start_ns = bpf_ktime_get_boot_ns();
	event->duration_ns = (u64)pause * (1000000000UL / KERNEL_HZ);
	event->memcg = task_memcg_id(task);
	event->pages = ctx->args[4];
	event->gfp = 0;
	event->ratelimit = ctx->args[3];
	event->order = 0;
	event->kind = STALL_DIRTY_THROTTLE;
	event->planned = 1;
	current_span(task, &event->span);
	stall_events.ringbuf_submit(event, 0);
	return 0;
}
#endif
