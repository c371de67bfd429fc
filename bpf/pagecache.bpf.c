// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Page-cache activity per memory cgroup, from tracepoints only.
 *
 * Two memcgs matter for each event:
 *   - the OWNER: the memcg the folio is charged to (folio->memcg_data), for
 *     insertions, dirtying and removals. Pages keep their owner when another
 *     container reads or evicts them; attributing by owner is what lets an
 *     operator see who evicts whom.
 *   - the ACCESSOR: the memcg of the task doing the read or fault, for
 *     lookups and misses (the reader paid the latency).
 * A memcg is named by its cgroup id (kernfs_node->id), which is the inode
 * number of its directory in cgroupfs, v1 or v2; user space joins on it.
 *
 * Every program does O(1) work in preallocated maps: no loops, no walks.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "pagecache.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* include/linux/sched.h: stable for many years. */
#define PF_MEMALLOC 0x00000800 /* in reclaim, or allocating on its behalf */
#define PF_KSWAPD 0x00020000   /* the kswapd thread */
#define PF_MEMALLOC_NOFS 0x00040000 /* set by readahead around its insertions */

/* include/linux/memcontrol.h: low bits of folio->memcg_data are flags. */
#define MEMCG_DATA_OBJEXTS 1UL
#define MEMCG_DATA_FLAGS_MASK 7UL

enum pageflags___local {
	PG_head = 6,
};

#define PERCPU_COUNTER_MAP(_name, _key)                                        \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);                        \
		__uint(max_entries, PAGECACHE_MAX_MEMCGS);                     \
		__type(key, _key);                                             \
		__type(value, __u64);                                          \
	} _name SEC(".maps")

PERCPU_COUNTER_MAP(pagecache_lookups, __u64);    /* by accessor */
PERCPU_COUNTER_MAP(pagecache_misses, __u64);     /* by accessor */
PERCPU_COUNTER_MAP(pagecache_insertions, __u64); /* by owner */
PERCPU_COUNTER_MAP(pagecache_dirtied, __u64);    /* by owner */
PERCPU_COUNTER_MAP(pagecache_removals, struct removal_key); /* by owner */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PAGECACHE_MAX_FILES);
	__type(key, struct file_key);
	__type(value, __s64);
} pagecache_file_pages SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOST_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} pagecache_lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_slots);
} cpu_slots SEC(".maps");

static __always_inline struct cpu_slots *cpu_slots_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_slots, &zero);
}

static __always_inline void lost(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&pagecache_lost, &reason);

	if (n)
		*n += 1;
}

/* Add n to a per-CPU counter, creating it if needed. */
static __always_inline void count(void *map, const void *key, __u64 n)
{
	__u64 *value = bpf_map_lookup_elem(map, key);

	if (value) {
		*value += n;
		return;
	}
	if (bpf_map_update_elem(map, key, &n, BPF_NOEXIST) == 0)
		return;
	/* Another CPU created it between our lookup and update. */
	value = bpf_map_lookup_elem(map, key);
	if (value)
		*value += n;
	else
		lost(LOST_MEMCG_MAP_FULL);
}

/* ---- Kernel-version drift, all of it here -------------------------------
 *
 * - struct folio arrived in 5.16 and the filemap tracepoints switched from
 *   the head struct page * to struct folio * in 5.17. The head page's first
 *   words (flags, mapping, memcg_data) overlay the folio's, so only the size
 *   differs: before folios, page-cache pages were order 0 outside tmpfs THP.
 * - folio->flags became memdesc_flags_t in 6.18 (same 8 bytes, new type).
 * - The folio order lived in _folio_order (5.17 .. 6.5), then in the low
 *   byte of _flags_1; 64-bit kernels since 6.9 also keep _nr_pages.
 * - kernfs_node.parent became __parent (6.15); this program never walks
 *   parents (user space maps ids to paths), so it is unaffected.
 * - mm_filemap_get_pages/_fault/_map_pages do not exist before 6.6 (not in
 *   6.1): the loader leaves those programs unloaded and reports that
 *   lookups and hit ratio are unavailable.
 */
static __always_inline unsigned long folio_flags(struct folio *folio)
{
	if (bpf_core_type_exists(memdesc_flags_t))
		return BPF_CORE_READ(folio, flags.f);
	return BPF_CORE_READ((struct folio___ulong_flags *)folio, flags);
}

static __always_inline __u64 folio_pages(struct folio *folio)
{
	unsigned long head = 1UL << bpf_core_enum_value(enum pageflags___local, PG_head);

	if (!bpf_core_type_exists(struct folio))
		return 1;
	if (!(folio_flags(folio) & head))
		return 1;
	if (bpf_core_field_exists(folio->_nr_pages))
		return BPF_CORE_READ(folio, _nr_pages);
	if (bpf_core_field_exists(struct folio___folio_order, _folio_order))
		return 1UL << BPF_CORE_READ((struct folio___folio_order *)folio, _folio_order);
	return 1UL << (BPF_CORE_READ(folio, _flags_1) & 0xff);
}

/* ---- Memcg ids ------------------------------------------------------------ */

/* The memcg a folio is charged to, or 0 if none (not charged, or slab). */
static __always_inline __u64 folio_memcg_id(struct folio *folio)
{
	unsigned long data = BPF_CORE_READ(folio, memcg_data);
	struct mem_cgroup *memcg;

	if (!data || (data & MEMCG_DATA_OBJEXTS))
		return 0;
	memcg = (struct mem_cgroup *)(data & ~MEMCG_DATA_FLAGS_MASK);
	return BPF_CORE_READ(memcg, css.cgroup, kn, id);
}

/*
 * The current task's memcg, through its memory-controller css: right on v1
 * and v2 alike (bpf_get_current_cgroup_id() is the v2 cgroup, which on a v1
 * host is not where memory is accounted).
 *
 * bpf_get_current_task_btf() gives a trusted pointer, so this is a chain of
 * plain loads the verifier turns into faulting-safe reads: no helper calls,
 * which is what keeps the lookup path near the cost of an empty program.
 */
static __always_inline __u64 task_memcg_id(struct task_struct *task)
{
	struct cgroup_subsys_state *css;

	css = task->cgroups->subsys[bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id)];
	if (!css)
		return 0;
	return css->cgroup->kn->id;
}


/* ---- Misses -------------------------------------------------------------
 *
 * A miss is a page inserted on the read or fault path. Readahead (which
 * serves nearly every read and fault miss) inserts with PF_MEMALLOC_NOFS set
 * on the task (memalloc_nofs_save in page_cache_ra_unbounded/_order): those
 * count at once. Other insertions are held in a per-CPU slot until the same
 * thread's next event says what they were: dirtying the same mapping means a
 * write filling new pages (not a miss); anything else means a read.
 */

static __always_inline void resolve_pending(struct insert_slot *slot, bool miss)
{
	if (slot->pages && miss)
		count(&pagecache_misses, &slot->memcg, slot->pages);
	slot->pages = 0;
	slot->mapping = 0;
	slot->tid = 0;
}

/* ---- Insertions, dirtying, removals (by owner) ---------------------------- */

static __always_inline void file_pages_add(__u64 memcg, struct folio *folio, __s64 delta,
					   bool create)
{
	struct inode *host = BPF_CORE_READ(folio, mapping, host);
	struct file_key key = {
		.memcg = memcg,
		.ino = BPF_CORE_READ(host, i_ino),
		.dev = BPF_CORE_READ(host, i_sb, s_dev),
	};
	__s64 *pages = bpf_map_lookup_elem(&pagecache_file_pages, &key);

	if (pages) {
		__sync_fetch_and_add(pages, delta);
		return;
	}
	/* Files cached before we started are not tracked, so their removals
	 * are ignored rather than recorded as negative entries. */
	if (!create)
		return;
	if (bpf_map_update_elem(&pagecache_file_pages, &key, &delta, BPF_NOEXIST) == 0)
		return;
	pages = bpf_map_lookup_elem(&pagecache_file_pages, &key);
	if (pages)
		__sync_fetch_and_add(pages, delta);
	else
		lost(LOST_FILE_MAP_FULL);
}

SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(on_add_to_page_cache, struct folio *folio)
{
	__u64 owner = folio_memcg_id(folio);
	__u64 nr = folio_pages(folio);
	__u64 mapping = (__u64)BPF_CORE_READ(folio, mapping);
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tid = task->pid;
	struct cpu_slots *slots;
	struct insert_slot *slot;

	count(&pagecache_insertions, &owner, nr);
	file_pages_add(owner, folio, nr, true);

	if (task->flags & PF_MEMALLOC_NOFS) {
		__u64 accessor = task_memcg_id(task);

		count(&pagecache_misses, &accessor, nr);
		return 0;
	}
	slots = cpu_slots_get();
	if (!slots)
		return 0;
	slot = &slots->insert;
	if (slot->tid == tid && slot->mapping == mapping) {
		slot->pages += nr;
		return 0;
	}
	resolve_pending(slot, true);
	slot->tid = tid;
	slot->mapping = mapping;
	slot->memcg = task_memcg_id(task);
	slot->pages = nr;
	return 0;
}

SEC("tp_btf/writeback_dirty_folio")
int BPF_PROG(on_dirty_folio, struct folio *folio, struct address_space *mapping)
{
	__u64 owner = folio_memcg_id(folio);
	__u32 tid = bpf_get_current_task_btf()->pid;
	struct cpu_slots *slots = cpu_slots_get();

	count(&pagecache_dirtied, &owner, folio_pages(folio));
	/* The same thread inserting then dirtying the same mapping is a write
	 * filling new pages: those insertions were not read misses. */
	if (slots && slots->insert.tid == tid && slots->insert.mapping == (__u64)mapping)
		resolve_pending(&slots->insert, false);
	return 0;
}

SEC("tp_btf/mm_filemap_delete_from_page_cache")
int BPF_PROG(on_delete_from_page_cache, struct folio *folio)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct removal_key key = { .memcg = folio_memcg_id(folio) };
	__u64 nr = folio_pages(folio);

	/* Reclaim runs in kswapd, or in a task in direct/memcg reclaim, which
	 * sets PF_MEMALLOC and a reclaim_state; anything else removing a folio
	 * (truncate, fadvise, invalidation) is not an eviction. */
	if ((task->flags & (PF_KSWAPD | PF_MEMALLOC)) || task->reclaim_state)
		key.reason = REMOVAL_EVICTION;
	else
		key.reason = REMOVAL_INVALIDATION;
	count(&pagecache_removals, &key, nr);
	file_pages_add(key.memcg, folio, -(__s64)nr, false);
	return 0;
}

/* ---- Lookups (by accessor): the hot path --------------------------------- */

/* Count pages looked up; the slot holds a running count for one memcg and is
 * flushed into pagecache_lookups only when another memcg reads on this CPU. */
static __always_inline void count_lookups(struct cpu_slots *slots, __u64 pages,
					  struct task_struct *task)
{
	struct lookup_slot *slot = &slots->lookup;
	__u64 cset = (__u64)task->cgroups;
	__u64 memcg;

	/* A lookup ends any pending insertions as misses (see insert_slot). */
	if (slots->insert.pages)
		resolve_pending(&slots->insert, true);
	/* Tasks sharing a css_set share every css, the memory one included: one
	 * load instead of walking to the memcg id. (Should a css_set be freed and
	 * its memory reused for another while this CPU's slot still names it,
	 * lookups would go to the old memcg until another memcg reads here.) */
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
	if (slot->lookups)
		count(&pagecache_lookups, &slot->memcg, slot->lookups);
	slot->memcg = memcg;
	slot->lookups = pages;
}

/*
 * One read() reports its whole remaining range on every batch:
 * [pos, end], [pos + batch, end], ... Count the range once, on its first
 * event; a later event of the same thread with the same mapping and end and
 * a higher start is the same read continuing.
 */
SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(on_get_pages, struct address_space *mapping, pgoff_t index, pgoff_t last_index)
{
	struct cpu_slots *slots = cpu_slots_get();
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tid = task->pid;
	struct lookup_slot *slot;

	if (!slots)
		return 0;
	slot = &slots->lookup;
	if (slot->tid == tid && slot->mapping == (__u64)mapping && slot->last == last_index &&
	    index > slot->index) {
		slot->index = index;
		/* The read continuing still ends pending insertions: its misses. */
		if (slots->insert.pages)
			resolve_pending(&slots->insert, true);
		return 0;
	}
	slot->tid = tid;
	slot->mapping = (__u64)mapping;
	slot->index = index;
	slot->last = last_index;
	count_lookups(slots, last_index - index + 1, task);
	return 0;
}

/* A page fault that found no mapped page: one page looked up. */
SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(on_fault, struct address_space *mapping, pgoff_t index)
{
	struct cpu_slots *slots = cpu_slots_get();
	struct task_struct *task = bpf_get_current_task_btf();

	if (!slots)
		return 0;
	slots->lookup.fault_tid = task->pid;
	slots->lookup.fault_mapping = (__u64)mapping;
	slots->lookup.fault_index = index;
	count_lookups(slots, 1, task);
	return 0;
}

/*
 * Fault-around mapped the cached pages [start, last] of a mapping: counted
 * as looked up, except the page a fault of the same thread just counted
 * (that page is mapped again as part of the next fault-around range).
 */
SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(on_map_pages, struct address_space *mapping, pgoff_t start, pgoff_t last)
{
	struct cpu_slots *slots = cpu_slots_get();
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 pages = last - start + 1;
	struct lookup_slot *slot;

	if (!slots)
		return 0;
	slot = &slots->lookup;
	if (slot->fault_tid == task->pid &&
	    slot->fault_mapping == (__u64)mapping && slot->fault_index >= start &&
	    slot->fault_index <= last) {
		pages -= 1;
		slot->fault_mapping = 0;
	}
	count_lookups(slots, pages, task);
	return 0;
}

/* ---- Stalls ------------------------------------------------------------------
 *
 * A thread's stall starts at a *_begin tracepoint and ends at the matching
 * *_end of the same thread: the start waits in stall_starts (bounded, keyed
 * by thread id) and the finished stall goes to user space through the ring
 * buffer, which applies the threshold and the rate limit. Stalls are rare
 * next to lookups, so every one is sent.
 */
extern unsigned long CONFIG_HZ __kconfig __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PAGECACHE_MAX_STALLING_THREADS);
	__type(key, __u32);
	__type(value, struct stall_start);
} stall_starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PAGECACHE_STALL_RINGBUF_BYTES);
} stall_events SEC(".maps");

/* Keeps struct stall_event in the object's BTF (ring buffers have no value
 * type), so tests/test_bpf_layout.py can check the Python mirror. */
const volatile struct stall_event *unused_stall_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PAGECACHE_MAX_TRACED_PROCESSES);
	__type(key, __u32); /* tgid */
	__type(value, struct span_slot_base);
} span_slot_bases SEC(".maps");

/* A task's id in its innermost PID namespace (what getpid()/gettid() return
 * inside a container): thread_pid->numbers[thread_pid->level].nr. */
static __always_inline __u32 ns_id(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid upid = {};

	if (level > 32)
		return 0;
	bpf_probe_read_kernel(&upid, sizeof(upid),
			      (void *)pid + bpf_core_field_offset(struct pid, numbers) +
				      level * bpf_core_type_size(struct upid));
	return upid.nr;
}

/* The application span the current thread is running, if its process
 * published span slots; slot->tid is 0 otherwise. The slots are indexed and
 * tagged by the thread id the application sees. */
static __always_inline void current_span(struct task_struct *task, struct span_slot *slot)
{
	__u32 tgid = task->tgid, tid = ns_id(task);
	struct span_slot_base *base = bpf_map_lookup_elem(&span_slot_bases, &tgid);
	__u64 address;

	slot->tid = 0;
	if (!base || !base->count || base->size < sizeof(*slot))
		return;
	address = base->address + (__u64)(tid % base->count) * base->size;
	if (bpf_probe_read_user(slot, sizeof(*slot), (void *)address) || slot->tid != tid)
		slot->tid = 0; /* unreadable, or another thread's: no link rather than a wrong one */
}

static __always_inline void stall_begin(__u32 kind, int order, __u64 gfp)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tid = task->pid;
	struct stall_start start = {
		.start_ns = bpf_ktime_get_boot_ns(),
		.memcg = task_memcg_id(task),
		.gfp = gfp,
		.order = order,
		.kind = kind,
	};

	current_span(task, &start.span);
	if (bpf_map_update_elem(&stall_starts, &tid, &start, BPF_ANY))
		lost(LOST_STALL_STARTS_FULL);
}

static __always_inline struct stall_event *stall_reserve(struct task_struct *task)
{
	struct stall_event *event = bpf_ringbuf_reserve(&stall_events, sizeof(*event), 0);

	if (!event) {
		lost(LOST_STALL_RINGBUF_FULL);
		return NULL;
	}
	event->pid = task->tgid;
	event->tid = task->pid;
	event->ns_tid = ns_id(task);
	event->ns_pid = ns_id(BPF_CORE_READ(task, group_leader));
	event->pad = 0;
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	return event;
}

static __always_inline void stall_end(__u32 kind, __u64 nr_reclaimed)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tid = task->pid;
	struct stall_start *start = bpf_map_lookup_elem(&stall_starts, &tid);
	struct stall_event *event;
	__u64 now = bpf_ktime_get_boot_ns();

	if (!start)
		return; /* began before we attached */
	if (start->kind != kind) {
		bpf_map_delete_elem(&stall_starts, &tid);
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
		event->span = start->span;
		bpf_ringbuf_submit(event, 0);
	}
	bpf_map_delete_elem(&stall_starts, &tid);
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(on_memcg_reclaim_begin, int order, unsigned int gfp_flags)
{
	stall_begin(STALL_MEMCG_RECLAIM, order, gfp_flags);
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(on_memcg_reclaim_end, unsigned long nr_reclaimed)
{
	stall_end(STALL_MEMCG_RECLAIM, nr_reclaimed);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(on_direct_reclaim_begin, int order, unsigned int gfp_flags)
{
	stall_begin(STALL_DIRECT_RECLAIM, order, gfp_flags);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(on_direct_reclaim_end, unsigned long nr_reclaimed)
{
	stall_end(STALL_DIRECT_RECLAIM, nr_reclaimed);
	return 0;
}

/*
 * The writer is about to sleep for `pause` jiffies so writeback can catch up.
 * The sleep itself has no end event short of tracing the scheduler, so the
 * span is the planned pause, marked as such (pagecache.stall.planned).
 */
SEC("tp_btf/balance_dirty_pages")
int BPF_PROG(on_balance_dirty_pages, void *wb, void *dtc, unsigned long dirty_ratelimit,
	     unsigned long task_ratelimit, unsigned long dirtied, unsigned long period,
	     long pause, unsigned long start_time)
{
	struct task_struct *task;
	struct stall_event *event;
	unsigned long hz = CONFIG_HZ;

	if (pause <= 0 || !hz)
		return 0;
	task = bpf_get_current_task_btf();
	event = stall_reserve(task);
	if (!event)
		return 0;
	event->start_ns = bpf_ktime_get_boot_ns();
	event->duration_ns = (__u64)pause * (1000000000UL / hz);
	event->memcg = task_memcg_id(task);
	event->pages = dirtied;
	event->gfp = 0;
	event->ratelimit = task_ratelimit;
	event->order = 0;
	event->kind = STALL_DIRTY_THROTTLE;
	event->planned = 1;
	current_span(task, &event->span);
	bpf_ringbuf_submit(event, 0);
	return 0;
}
