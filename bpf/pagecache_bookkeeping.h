/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The bookkeeping every attachment shares, in one copy: counters created on
 * first use, lookup ranges, read continuation, pending insertions (misses),
 * removal reasons, fault-around, and stall begin/end. Included by the CO-RE
 * program (pagecache.bpf.c: tracepoints, and the fentry/kprobe hooks of
 * kernels before 6.12) and by both BCC programs (pagecache_bcc.c,
 * pagecache_bcc_tp.c).
 *
 * Nothing here reads a kernel struct or names a map: each engine defines,
 * before including this file, how it does that (CO-RE relocations, BTF
 * offsets for BCC, or tracepoint fields only):
 *
 *   TASK_T                        a handle on the current task
 *   u32 task_tid(TASK_T)          its thread id (global PID namespace)
 *   u64 task_cset(TASK_T)         a cheap value equal for tasks of one memcg
 *                                 (the css_set pointer; BCC's tracepoint-only
 *                                 program uses the cgroup id itself)
 *   u64 task_memcg_id(TASK_T)     the memcg id the task is charged to
 *   u32 task_flags(TASK_T), u64 task_reclaim_state(TASK_T)  (its PF_* flags,
 *                                 its reclaim_state pointer) unless the engine
 *                                 defines TASK_FIELDS_UNREADABLE (BCC's
 *                                 tracepoint-only program: removals' reason
 *                                 is then "unknown")
 *   MAP_T                         a handle on a map: its address (CO-RE), or
 *                                 a constant the accessors switch on (BCC,
 *                                 whose rewriter wants each map named at its
 *                                 call); LOOKUPS_MAP, MISSES_MAP, FILE_PAGES_MAP
 *   void *map_find(MAP_T, void *key)
 *   long map_insert(MAP_T, void *key, void *value)  only if absent
 *                                 (BPF_NOEXIST): 0 on success
 *   void lost(u32 reason)
 *   struct cpu_slots *cpu_slots_get(void)
 *   struct read_progress *read_progress_find(u32 *tid)
 *   void read_progress_save(u32 *tid, struct read_progress *)  create or replace
 * and, for stalls (PAGECACHE_STALLS defined):
 *   int stall_start_save(u32 *tid, struct stall_start *)    0 on success
 *   struct stall_start *stall_start_find(u32 *tid)
 *   void stall_start_drop(u32 *tid)
 *   struct stall_event *stall_event_reserve(void)
 *   void stall_event_submit(struct stall_event *)
 *   struct span_slot_base *span_base_find(u32 *tgid)
 *   int span_base_save(u32 *tgid, struct span_slot_base *)  create or replace
 *   int current_syscall_args(u64 *nr, u64 args[5])  the running syscall's
 *                                 number and first five arguments (from
 *                                 the registers saved at its entry); 0
 *                                 where the engine cannot read them
 *   int slots_announcement_output(struct slots_announcement *)  0 on success
 *   void stall_event_task(struct stall_event *, TASK_T)  pid, tid, ns ids, comm
 *   u32 task_process_id(TASK_T), u32 task_ns_tid(TASK_T)
 * and, for the what-if curve's samples (PAGECACHE_WHATIF defined): the
 * functions pagecache_whatif.h names.
 *
 * "mapping" is whatever the program sees that names the file: an
 * address_space pointer, or the inode number in the tracepoint-only program.
 */
#ifndef __PAGECACHE_BOOKKEEPING_H__
#define __PAGECACHE_BOOKKEEPING_H__

/* ---- Counters ----------------------------------------------------------------
 *
 * Entries are created by the first event that adds to them, with BPF_NOEXIST
 * so that two CPUs creating one entry at once do not overwrite each other:
 * the loser finds the winner's entry and adds to it.
 */

/* The entry for key in map, to add to; 0 when there is nothing to add to:
 * the entry was just created holding *initial, or the map is full (counted
 * as lost for reason full). */
static __always_inline void *find_or_create(MAP_T map, void *key, void *initial, u32 full)
{
	void *value = map_find(map, key);

	if (value)
		return value;
	if (map_insert(map, key, initial) == 0)
		return 0;
	/* Another CPU created it between our lookup and insertion. */
	value = map_find(map, key);
	if (!value)
		lost(full);
	return value;
}

/* Add n to a per-CPU counter. */
static __always_inline void count(MAP_T map, void *key, u64 n)
{
	u64 *value = find_or_create(map, key, &n, LOST_MEMCG_MAP_FULL);

	if (value)
		*value += n;
}

/* Add delta to one file's pages in one memcg (one entry for all CPUs: an
 * atomic add). Files cached before we started are not tracked (create is
 * false on removal), so their removals are ignored rather than recorded as
 * negative entries. */
static __always_inline void file_key_add(u64 memcg, u64 ino, u32 dev, s64 delta, bool create)
{
	struct file_key key = {.memcg = memcg, .ino = ino, .dev = dev};
	s64 *pages;

	if (create)
		pages = find_or_create(FILE_PAGES_MAP, &key, &delta, LOST_FILE_MAP_FULL);
	else
		pages = map_find(FILE_PAGES_MAP, &key);
	if (pages)
		__sync_fetch_and_add(pages, delta);
}

/* ---- Misses ------------------------------------------------------------------
 *
 * A miss is a page inserted on the read or fault path. Readahead (which
 * serves nearly every read and fault miss) inserts with PF_MEMALLOC_NOFS set
 * on the task (memalloc_nofs_save in page_cache_ra_unbounded/_order): those
 * count at once. Other insertions are held in a per-CPU slot until the same
 * thread's next event says what they were: dirtying the same mapping means a
 * write filling new pages (not a miss); anything else means a read.
 */
#define PF_MEMALLOC 0x00000800      /* in reclaim, or allocating on its behalf */
#define PF_KSWAPD 0x00020000        /* the kswapd thread */
#define PF_MEMALLOC_NOFS 0x00040000 /* set by readahead around its insertions */

static __always_inline void resolve_pending(struct insert_slot *slot, bool miss)
{
	if (slot->pages && miss) {
		u64 memcg = slot->memcg;

		count(MISSES_MAP, &memcg, slot->pages);
	}
	slot->pages = 0;
	slot->mapping = 0;
	slot->tid = 0;
}

/* nr pages were inserted into mapping by the current task; readahead says so
 * with task_flags & PF_MEMALLOC_NOFS (0 where the flags cannot be read). */
static __always_inline void note_insertion(TASK_T task, u32 task_flags, u64 mapping, u64 nr)
{
	u32 tid = task_tid(task);
	struct cpu_slots *slots;
	struct insert_slot *slot;

	if (task_flags & PF_MEMALLOC_NOFS) {
		u64 accessor = task_memcg_id(task);

		count(MISSES_MAP, &accessor, nr);
		return;
	}
	slots = cpu_slots_get();
	if (!slots)
		return;
	slot = &slots->insert;
	if (slot->tid == tid && slot->mapping == mapping) {
		slot->pages += nr;
		return;
	}
	resolve_pending(slot, true);
	slot->tid = tid;
	slot->mapping = mapping;
	slot->memcg = task_memcg_id(task);
	slot->pages = nr;
}

/* The same thread inserting then dirtying the same mapping is a write
 * filling new pages: those insertions were not read misses. */
static __always_inline void note_dirtying(TASK_T task, u64 mapping)
{
	struct cpu_slots *slots = cpu_slots_get();

	if (slots && slots->insert.tid == task_tid(task) && slots->insert.mapping == mapping)
		resolve_pending(&slots->insert, false);
}

/* ---- Removals ---------------------------------------------------------------
 *
 * Why a folio left the page cache. Reclaim runs in kswapd, or in a task in
 * direct or memcg reclaim, which sets PF_MEMALLOC and a reclaim_state;
 * anything else removing a folio (truncate, fadvise, invalidation) is not an
 * eviction. Without the task's fields there is no telling.
 */
static __always_inline u32 removal_reason(TASK_T task)
{
#ifdef TASK_FIELDS_UNREADABLE
	return REMOVAL_UNKNOWN;
#else
	if ((task_flags(task) & (PF_KSWAPD | PF_MEMALLOC)) || task_reclaim_state(task))
		return REMOVAL_EVICTION;
	return REMOVAL_INVALIDATION;
#endif
}

/* ---- Shared hits: lookups of pages another memcg owns ------------------------ */

#ifdef PAGECACHE_SHARING
#include "pagecache_sharing.h"
#define SHARE_RANGE(slots, reader, mapping, first, last) \
	share_range(&(slots)->share, reader, mapping, first, last)
#define SHARE_READ(slots, reader, mapping, first, last) \
	share_read(&(slots)->share, reader, mapping, first, last)
#else
#define SHARE_RANGE(slots, reader, mapping, first, last) do {} while (0)
#define SHARE_READ(slots, reader, mapping, first, last) do {} while (0)
#endif

/* ---- Lookups (by accessor): the hot path ----------------------------------- */

#include "pagecache_whatif.h"

/* Count pages looked up; the slot holds a running count for one memcg and is
 * flushed into pagecache_lookups only when another memcg reads on this CPU. */
static __always_inline void count_lookups(struct cpu_slots *slots, u64 pages, TASK_T task)
{
	struct lookup_slot *slot = &slots->lookup;
	u64 cset = task_cset(task);
	u64 memcg;

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
	if (slot->lookups) {
		u64 old = slot->memcg;

		count(LOOKUPS_MAP, &old, slot->lookups);
		slot->flushes++;
	}
	slot->memcg = memcg;
	slot->lookups = pages;
}

/*
 * A read looks up pages [index, last] of mapping. The mm_filemap_get_pages
 * tracepoint and filemap_get_pages() see one read() once per batch, each time
 * with its whole remaining range: [pos, end], [pos + batch, end], ... Count
 * the range once, on its first event; a later event of the same thread with
 * the same mapping and end and a higher start is the same read continuing,
 * which still ends pending insertions: they were its misses. The read in
 * progress is this CPU's slot while the thread keeps the CPU, and its
 * reads_in_progress entry when it comes back after another thread's lookups
 * or from another CPU (a cold read sleeps between batches: both happen).
 */
static __always_inline bool continues(u64 mapping, u64 index, u64 last, u64 prev_mapping,
				      u64 prev_index, u64 prev_last)
{
	return mapping == prev_mapping && last == prev_last && index > prev_index;
}

/* Whether this event continues the thread's read kept in reads_in_progress
 * (started or left on another CPU); the slot then takes that read over. */
static __always_inline bool resume_from_map(struct lookup_slot *slot, u32 tid, u64 mapping,
					    u64 index, u64 last)
{
	struct read_progress *progress = read_progress_find(&tid);

	if (!progress || !continues(mapping, index, last, progress->mapping, progress->index,
				    progress->last))
		return false;
	progress->index = index;
	slot->tid = tid;
	slot->mapping = mapping;
	slot->last = last;
	return true;
}

/*
 * The slot names another thread: carry that thread's progress over to its
 * reads_in_progress entry before this thread takes the slot.
 *
 * Only progress, never a read: every multi-page read is saved there when it
 * starts, so the entry is always the thread's latest read, and a slot whose
 * read differs from it is stale (the thread went on reading on another CPU).
 * Writing a stale slot's read over the entry made the thread's next batch
 * look like a new read: a reader moved between CPUs while another reader
 * used them counted up to 1,515 pages too many for 8,192 (6.1 guest).
 */
static __always_inline void carry_progress(struct lookup_slot *slot)
{
	u32 left_tid = slot->tid;
	struct read_progress *left;

	if (!left_tid || slot->last <= slot->index)
		return;
	left = read_progress_find(&left_tid);
	if (left && continues(slot->mapping, slot->index, slot->last, left->mapping, left->index,
			      left->last))
		left->index = slot->index;
}

/*
 * Same read continuing? This CPU's slot when it names this thread and its
 * read; else, for a range of more than one page, the thread's entry in
 * reads_in_progress (the slot may name another thread, or hold an older read
 * of this one from before it ran on another CPU).
 *
 * A one-page range never looks in the map: small reads never touch it, and
 * a thread's entry outlives its read, so a new file whose address_space
 * reuses a deleted one's address could otherwise match an old read (one page
 * too few, 2 of 20 runs of 4 KiB reads in a 6.1 guest). The price: a read
 * whose one-page last batch comes on a CPU whose slot is stale counts that
 * page twice.
 */
static __always_inline bool read_continues(struct lookup_slot *slot, u32 tid, u64 mapping,
					   u64 index, u64 last)
{
	if (slot->tid == tid) {
		if (continues(mapping, index, last, slot->mapping, slot->index, slot->last))
			return true;
	} else {
		carry_progress(slot);
	}
	return last > index && resume_from_map(slot, tid, mapping, index, last);
}

/*
 * A new read of more than one page: later batches may come after a switch,
 * so it becomes the thread's entry in reads_in_progress. A thread that has an
 * entry (it read more than one page before) has it rewritten in place: a
 * look-up costs a fraction of an LRU map update, which a cached 1 MiB read
 * (one event per read with large folios) otherwise paid on every read
 * (bench/bpf_cost.py: +250 ns per event over an empty program, +130 ns in
 * place). The map's other writer, carry_progress on another CPU, only moves
 * the index of a read that its slot continues, so it cannot match a read
 * being written here unless it is of the same file with the same end.
 */
static __always_inline void read_started(u32 tid, u64 mapping, u64 index, u64 last)
{
	struct read_progress *progress = read_progress_find(&tid);
	struct read_progress started = {.mapping = mapping, .index = index, .last = last};

	if (progress) {
		progress->mapping = mapping;
		progress->last = last;
		progress->index = index;
		return;
	}
	read_progress_save(&tid, &started);
}

static __always_inline void lookup_read(TASK_T task, u64 mapping, u64 index, u64 last)
{
	struct cpu_slots *slots = cpu_slots_get();
	u32 tid = task_tid(task);
	struct lookup_slot *slot;

	if (!slots)
		return;
	slot = &slots->lookup;
	if (read_continues(slot, tid, mapping, index, last)) {
		slot->index = index;
		if (slots->insert.pages)
			resolve_pending(&slots->insert, true);
		return;
	}
	slot->tid = tid;
	slot->mapping = mapping;
	slot->index = index;
	slot->last = last;
	if (last > index)
		read_started(tid, mapping, index, last);
	count_lookups(slots, last - index + 1, task);
	/* A read's first event only: its range is counted once, here.
	 * count_lookups left the reader's memcg in the slot. */
	whatif_sample(slot->memcg, mapping, index, last, ~0ULL);
	SHARE_READ(slots, slot->memcg, mapping, index, last);
}

/* A page fault that found no mapped page: one page looked up. Fault-around
 * maps that page again in its range, so the fault is remembered. */
static __always_inline void lookup_fault(TASK_T task, u64 mapping, u64 index)
{
	struct cpu_slots *slots = cpu_slots_get();

	if (!slots)
		return;
	slots->lookup.fault_tid = task_tid(task);
	slots->lookup.fault_mapping = mapping;
	slots->lookup.fault_index = index;
	count_lookups(slots, 1, task);
	whatif_sample(slots->lookup.memcg, mapping, index, index, ~0ULL);
	SHARE_RANGE(slots, slots->lookup.memcg, mapping, index, index);
}

/* Fault-around mapped the cached pages [start, last] of a mapping: counted as
 * looked up, less the page a fault of the same thread just counted. */
static __always_inline void lookup_fault_around(TASK_T task, u64 mapping, u64 start, u64 last)
{
	struct cpu_slots *slots = cpu_slots_get();
	u64 pages = last - start + 1, skip = ~0ULL;
	struct lookup_slot *slot;

	if (!slots)
		return;
	slot = &slots->lookup;
	if (slot->fault_tid == task_tid(task) && slot->fault_mapping == mapping &&
	    slot->fault_index >= start && slot->fault_index <= last) {
		pages -= 1;
		skip = slot->fault_index;
		slot->fault_mapping = 0;
	}
	count_lookups(slots, pages, task);
	whatif_sample(slot->memcg, mapping, start, last, skip);
	/* The whole range: a fault just counted in it is apportioned twice (one
	 * page per fault-around; docs/sharing.md, "Faults"). */
	if (pages)
		SHARE_RANGE(slots, slot->memcg, mapping, start, last);
}

/* ---- Lookups from the read and fault functions (kernels before 6.12) ---------
 *
 * Where mm_filemap_get_pages/_map_pages are missing, the engines hook the
 * functions behind them at entry (fentry or kprobe; the why: pagecache.bpf.c,
 * "Lookups before 6.12") and hand over what they read there: the read's byte
 * position and count and the file's size, or the fault-around range. The
 * range is then what the tracepoints report, from the same rules.
 */
#define LOOKUP_PAGE_SHIFT 12 /* 4 KiB pages: x86-64 and arm64, the builds' targets */

/* The pages [*first, *last] a read of count bytes from pos covers, clamped to
 * the file's size; false at or past the end of the file (none). Also exact
 * shared hits' range (pagecache.bpf.c, shared_read_found). */
static __always_inline bool read_range(s64 pos, u64 count, s64 size, u64 *first, u64 *last)
{
	s64 end = pos + (s64)count;

	if (end > size)
		end = size;
	if (pos < 0 || pos >= end)
		return false;
	*first = pos >> LOOKUP_PAGE_SHIFT;
	*last = (end - 1) >> LOOKUP_PAGE_SHIFT;
	return true;
}

/* A read of count bytes from pos. */
static __always_inline void lookup_read_entered(TASK_T task, u64 mapping, s64 pos, u64 count,
						s64 size)
{
	u64 first, last;

	if (read_range(pos, count, size, &first, &last))
		lookup_read(task, mapping, first, last);
}

/* Fault-around of pages [start, end], clamped to the file's last page. */
static __always_inline void lookup_fault_around_entered(TASK_T task, u64 mapping, u64 start,
							u64 end, s64 size)
{
	u64 last_in_file;

	if (size <= 0)
		return;
	last_in_file = (u64)(size - 1) >> LOOKUP_PAGE_SHIFT;
	if (end > last_in_file)
		end = last_in_file;
	if (start > end)
		return;
	lookup_fault_around(task, mapping, start, end);
}

/* ---- Stalls ------------------------------------------------------------------
 *
 * A thread's stall starts at a *_begin tracepoint and ends at the matching
 * *_end of the same thread: the start waits in stall_starts (bounded, keyed
 * by thread id) and the finished stall goes to user space through the ring
 * buffer, which applies the threshold and the rate limit. Stalls are rare
 * next to lookups, so every one is sent.
 */
#ifdef PAGECACHE_STALLS

/* The application span the current thread is running, if its process
 * published span slots (see struct span_slot); slot->tid is 0 otherwise. The
 * slots are indexed and tagged by the thread id the application sees. */
static __always_inline void current_span(TASK_T task, struct span_slot *slot)
{
	u32 tgid = task_process_id(task), tid = task_ns_tid(task);
	struct span_slot_base *base = span_base_find(&tgid);
	u64 address;

	slot->tid = 0;
	if (!base || !base->count || base->size < sizeof(*slot))
		return;
	address = base->address + (u64)(tid % base->count) * base->size;
	if (bpf_probe_read_user(slot, sizeof(*slot), (void *)address) || slot->tid != tid)
		slot->tid = 0; /* unreadable, or another thread's: no link rather than a wrong one */
}

/*
 * The slots a plugin's announcement carries (SPAN_SLOTS_MAGIC in
 * pagecache.h), if this rename is one: prctl(PR_SET_NAME, name, address,
 * count << 32 | size, SPAN_SLOTS_MAGIC). Any other rename (exec, a write to
 * /proc/<pid>/comm, a plain prctl) is not.
 */
static __always_inline int announced_slots(struct span_slot_base *base)
{
	u64 nr = 0, args[5] = {};

	if (!current_syscall_args(&nr, args) || nr != SYSCALL_PRCTL || args[0] != PRCTL_SET_NAME ||
	    args[4] != SPAN_SLOTS_MAGIC)
		return 0;
	base->address = args[2];
	base->count = args[3] >> 32;
	base->size = (u32)args[3];
	return base->address && base->count && base->count <= SPAN_SLOTS_MAX_COUNT &&
	       base->size == sizeof(struct span_slot);
}

/*
 * Span slots learnt at once, not at the next scan of /proc. The plugin writes
 * its registry file, then renames its thread to the name it already has
 * (correlation.announce): task_rename is rare, cheap to watch, and fired by
 * the process itself. The rename's spare arguments carry the slots, read
 * from the syscall's saved registers (bpf_task_pt_regs, or before 5.15 the
 * top of the kernel stack), so they go into span_slot_bases here, before the
 * rename returns: the process's first stall links, however late user space
 * runs. The process's pid also goes to user space, which reads the registry
 * file under its usual checks (and, where the registers could not be read,
 * fills span_slot_bases from it, racing the process's first stalls), and
 * forgets the process when it is gone. Known processes too: a process whose slots
 * are known may have new ones (a forked child published its parent's slots,
 * then exec'd an instrumented program; the instrumentation was set up
 * again). A real rename (a new name) sends nothing; an exec of a program of
 * the same name does, and user space finds no file or the same one.
 */
static __always_inline void slots_announced(TASK_T task, const void *new_name)
{
	u64 name[2] = {}, now[2] = {};
	struct slots_announcement announcement = {};
	struct span_slot_base base = {};

	bpf_probe_read_kernel_str(name, sizeof(name), new_name);
	bpf_get_current_comm(now, sizeof(now));
	if (name[0] != now[0] || name[1] != now[1])
		return;
	announcement.pid = task_process_id(task);
	/* A full map is not counted here: user space then fails to publish the
	 * same slots, and retries at each scan. */
	if (announced_slots(&base))
		span_base_save(&announcement.pid, &base);
	if (slots_announcement_output(&announcement))
		lost(LOST_ANNOUNCEMENT_RINGBUF_FULL);
}

static __always_inline void stall_begin(TASK_T task, u32 kind, int order, u64 gfp)
{
	u32 tid = task_tid(task);
	struct stall_start start = {};

	start.start_ns = bpf_ktime_get_boot_ns();
	start.memcg = task_memcg_id(task);
	start.gfp = gfp;
	start.order = order;
	start.kind = kind;
	current_span(task, &start.span);
	if (stall_start_save(&tid, &start))
		lost(LOST_STALL_STARTS_FULL);
}

static __always_inline struct stall_event *stall_reserve(TASK_T task)
{
	struct stall_event *event = stall_event_reserve();

	if (!event) {
		lost(LOST_STALL_RINGBUF_FULL);
		return 0;
	}
	event->pad = 0;
	stall_event_task(event, task);
	return event;
}

static __always_inline void stall_end(TASK_T task, u32 kind, u64 nr_reclaimed)
{
	u32 tid = task_tid(task);
	struct stall_start *start = stall_start_find(&tid);
	struct stall_event *event;
	u64 now = bpf_ktime_get_boot_ns();

	if (!start)
		return; /* began before we attached */
	if (start->kind != kind) {
		stall_start_drop(&tid);
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
		stall_event_submit(event);
	}
	stall_start_drop(&tid);
}

/*
 * The writer is about to sleep for `pause` jiffies so writeback can catch up.
 * The sleep itself has no end event short of tracing the scheduler, so the
 * span is the planned pause, marked as such (pagecache.stall.planned).
 */
static __always_inline void stall_dirty_throttle(TASK_T task, long pause, u64 hz, u64 dirtied,
						 u64 task_ratelimit)
{
	struct stall_event *event;

	if (pause <= 0 || !hz)
		return;
	event = stall_reserve(task);
	if (!event)
		return;
	event->start_ns = bpf_ktime_get_boot_ns();
	event->duration_ns = (u64)pause * (1000000000UL / hz);
	event->memcg = task_memcg_id(task);
	event->pages = dirtied;
	event->gfp = 0;
	event->ratelimit = task_ratelimit;
	event->order = 0;
	event->kind = STALL_DIRTY_THROTTLE;
	event->planned = 1;
	current_span(task, &event->span);
	stall_event_submit(event);
}
#endif /* PAGECACHE_STALLS */

#endif /* __PAGECACHE_BOOKKEEPING_H__ */
