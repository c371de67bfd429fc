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
 *   - readahead's insertions are not told apart (PF_MEMALLOC_NOFS is a task
 *     flag): each waits for the thread's next event to say read or write;
 *   - writeback_dirty_folio carries no folio size: dirtied counts folios;
 *   - before 5.17 the filemap records have no order (TP_HAS_ORDER unset):
 *     every insertion and removal is one page, as page-cache pages then were
 *     outside tmpfs THP; writeback_dirty_page is the dirtying tracepoint.
 * "mapping" in the bookkeeping is the inode number here.
 */
#include "pagecache.h"
#include "pagecache_bcc_common.h"

/* The engine's side of pagecache_bookkeeping.h: the task is only ever the
 * current one, and its cgroup id stands for both its css_set and its memcg.
 * Its flags and reclaim_state are struct fields: removals' reason is unknown. */
#define TASK_T int
#define CURRENT 0
#define TASK_FIELDS_UNREADABLE

static __always_inline u32 task_tid(int task)
{
	return (u32)bpf_get_current_pid_tgid();
}

static __always_inline u64 task_cset(int task)
{
	return bpf_get_current_cgroup_id();
}

static __always_inline u64 task_memcg_id(int task)
{
	return bpf_get_current_cgroup_id();
}

#include "pagecache_bookkeeping.h"

#ifdef TP_HAS_ORDER
#define RECORD_PAGES(args) (1ULL << (args)->order)
#else
#define RECORD_PAGES(args) 1ULL
#endif

TRACEPOINT_PROBE(filemap, mm_filemap_add_to_page_cache)
{
	u64 memcg = bpf_get_current_cgroup_id(), nr = RECORD_PAGES(args);

	count(INSERTIONS_MAP, &memcg, nr);
	file_key_add(memcg, args->i_ino, args->s_dev, nr, true);
	note_insertion(CURRENT, 0, args->i_ino, nr);
	return 0;
}

#ifdef DIRTY_PAGE_TRACEPOINT
TRACEPOINT_PROBE(writeback, writeback_dirty_page)
#else
TRACEPOINT_PROBE(writeback, writeback_dirty_folio)
#endif
{
	u64 memcg = bpf_get_current_cgroup_id();

	count(DIRTIED_MAP, &memcg, 1);
	note_dirtying(CURRENT, args->ino);
	return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_delete_from_page_cache)
{
	struct removal_key key = {};
	u64 nr = RECORD_PAGES(args);

	key.memcg = bpf_get_current_cgroup_id();
	key.reason = removal_reason(CURRENT);
	count(REMOVALS_MAP, &key, nr);
	file_key_add(key.memcg, args->i_ino, args->s_dev, -(s64)nr, false);
	return 0;
}

#ifdef WITH_LOOKUPS
TRACEPOINT_PROBE(filemap, mm_filemap_get_pages)
{
	lookup_read(CURRENT, args->i_ino, args->index, args->last_index);
	return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_fault)
{
	lookup_fault(CURRENT, args->i_ino, args->index);
	return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_map_pages)
{
	lookup_fault_around(CURRENT, args->i_ino, args->index, args->last_index);
	return 0;
}
#endif
