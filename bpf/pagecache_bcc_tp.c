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
BCC_COMMON

/* Insertions are misses unless the same thread dirties the same inode next
 * (the "mapping" of the slots holds the inode number here). */
TRACEPOINT_PROBE(filemap, mm_filemap_add_to_page_cache)
{
	u64 memcg = bpf_get_current_cgroup_id(), nr = 1ULL << args->order;
	u32 tid = (u32)bpf_get_current_pid_tgid(), zero = 0;
	struct cpu_slots *slots;

	count_insertions(&memcg, nr);
	file_key_add(memcg, args->i_ino, args->s_dev, nr, true);
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
	file_key_add(key.memcg, args->i_ino, args->s_dev, -(s64)nr, false);
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
	u32 zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);
	u64 pages;

	if (!slots)
		return 0;
	pages = read_pages(slots, args->i_ino, args->index, args->last_index);
	if (pages)
		count_lookups(slots, pages);
	return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_fault)
{
	u32 zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);

	if (!slots)
		return 0;
	note_fault(&slots->lookup, args->i_ino, args->index);
	count_lookups(slots, 1);
	return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_map_pages)
{
	u32 zero = 0;
	struct cpu_slots *slots = cpu_slots.lookup(&zero);

	if (!slots)
		return 0;
	count_lookups(slots, fault_around_pages(&slots->lookup, args->i_ino, args->index, args->last_index));
	return 0;
}
#endif
