// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The BCC engine's last resort: a kernel without BTF whose headers do not
 * match it. No kernel struct is read at all; only the tracepoints' own
 * fields (classic tracepoints: tracefs must be mounted) and helpers.
 * What that costs, named in the agent's own metrics
 * (pagecache.attribution=current_task):
 *   - every count goes to the memcg of the *current task* as
 *     bpf_get_current_cgroup_id() sees it (its cgroup v2 cgroup), not to
 *     the page's owner; on a cgroup v1 host that is not the memory cgroup;
 *   - removals are not split into evictions and invalidations (the task's
 *     reclaim flags are a struct read): one reason, "unknown";
 *   - writeback_dirty_folio carries no folio size: dirtied counts folios.
 * pagecache.h is prepended by the loader.
 */
BPF_PERCPU_HASH(pagecache_lookups, u64, u64, PAGECACHE_MAX_MEMCGS);
BPF_PERCPU_HASH(pagecache_misses, u64, u64, PAGECACHE_MAX_MEMCGS);
BPF_PERCPU_HASH(pagecache_insertions, u64, u64, PAGECACHE_MAX_MEMCGS);
BPF_PERCPU_HASH(pagecache_dirtied, u64, u64, PAGECACHE_MAX_MEMCGS);
BPF_PERCPU_HASH(pagecache_removals, struct removal_key, u64, PAGECACHE_MAX_MEMCGS);
BPF_HASH(pagecache_file_pages, struct file_key, s64, PAGECACHE_MAX_FILES);
BPF_PERCPU_ARRAY(pagecache_lost, u64, LOST_REASONS);
BPF_PERCPU_ARRAY(cpu_slots, struct cpu_slots, 1);

static __always_inline void lost(u32 reason)
{
	u64 *n = pagecache_lost.lookup(&reason);
	if (n)
		*n += 1;
}

COUNT_FUNCTIONS

static __always_inline void file_pages_add(u64 memcg, u64 ino, u32 dev, s64 delta, bool create)
{
	struct file_key key = {};
	s64 *pages;

	key.memcg = memcg;
	key.ino = ino;
	key.dev = dev;
	pages = pagecache_file_pages.lookup(&key);
	if (pages) {
		__sync_fetch_and_add(pages, delta);
		return;
	}
	if (!create)
		return;
	if (pagecache_file_pages.insert(&key, &delta) == 0)
		return;
	pages = pagecache_file_pages.lookup(&key);
	if (pages)
		__sync_fetch_and_add(pages, delta);
	else
		lost(LOST_FILE_MAP_FULL);
}

static __always_inline void resolve_pending(struct insert_slot *slot, bool miss)
{
	if (slot->pages && miss) {
		u64 memcg = slot->memcg;
		count_misses(&memcg, slot->pages);
	}
	slot->pages = 0;
	slot->mapping = 0;
	slot->tid = 0;
}

/* Insertions are misses unless the same thread dirties the same inode next
 * (the "mapping" of the slots holds the inode number here). */
TRACEPOINT_PROBE(filemap, mm_filemap_add_to_page_cache)
{
	u64 memcg = bpf_get_current_cgroup_id(), nr = 1ULL << args->order;
	u32 tid = (u32)bpf_get_current_pid_tgid(), zero = 0;
	struct cpu_slots *slots;

	count_insertions(&memcg, nr);
	file_pages_add(memcg, args->i_ino, args->s_dev, nr, true);
	slots = cpu_slots.lookup(&zero);
	if (!slots)
		return 0;
	if (slots->insert.tid == tid && slots->insert.mapping == args->i_ino) {
		slots->insert.pages += nr;
		return 0;
	}
	resolve_pending(&slots->insert, true);
	slots->insert.tid = tid;
	slots->insert.mapping = args->i_ino;
	slots->insert.memcg = memcg;
	slots->insert.pages = nr;
	return 0;
}

TRACEPOINT_PROBE(writeback, writeback_dirty_folio)
{
	u64 memcg = bpf_get_current_cgroup_id();
	u32 tid = (u32)bpf_get_current_pid_tgid(), zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);

	count_dirtied(&memcg, 1);
	if (slots && slots->insert.tid == tid && slots->insert.mapping == args->ino)
		resolve_pending(&slots->insert, false);
	return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_delete_from_page_cache)
{
	struct removal_key key = {};
	u64 nr = 1ULL << args->order;

	key.memcg = bpf_get_current_cgroup_id();
	key.reason = REMOVAL_UNKNOWN;
	count_removals(&key, nr);
	file_pages_add(key.memcg, args->i_ino, args->s_dev, -(s64)nr, false);
	return 0;
}

#ifdef WITH_LOOKUPS
static __always_inline void count_lookups(struct cpu_slots *slots, u64 pages)
{
	struct lookup_slot *slot = &slots->lookup;
	u64 memcg = bpf_get_current_cgroup_id();

	if (slots->insert.pages)
		resolve_pending(&slots->insert, true);
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

TRACEPOINT_PROBE(filemap, mm_filemap_get_pages)
{
	u64 ino = args->i_ino, index = args->index, last = args->last_index;
	u32 tid = (u32)bpf_get_current_pid_tgid(), zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);
	struct lookup_slot *slot;

	if (!slots)
		return 0;
	slot = &slots->lookup;
	if (slot->tid == tid && slot->mapping == ino && slot->last == last && index > slot->index) {
		slot->index = index;
		return 0;
	}
	slot->tid = tid;
	slot->mapping = ino;
	slot->index = index;
	slot->last = last;
	count_lookups(slots, last - index + 1);
	return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_fault)
{
	u32 zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);

	if (!slots)
		return 0;
	slots->lookup.fault_tid = (u32)bpf_get_current_pid_tgid();
	slots->lookup.fault_mapping = args->i_ino;
	slots->lookup.fault_index = args->index;
	count_lookups(slots, 1);
	return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_map_pages)
{
	u64 pages = args->last_index - args->index + 1;
	u32 zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);

	if (!slots)
		return 0;
	if (slots->lookup.fault_tid == (u32)bpf_get_current_pid_tgid() &&
	    slots->lookup.fault_mapping == args->i_ino && slots->lookup.fault_index >= args->index &&
	    slots->lookup.fault_index <= args->last_index) {
		pages -= 1;
		slots->lookup.fault_mapping = 0;
	}
	count_lookups(slots, pages);
	return 0;
}
#endif
