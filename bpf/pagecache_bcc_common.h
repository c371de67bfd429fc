/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What both BCC programs (pagecache_bcc.c, pagecache_bcc_tp.c) share: the
 * maps, named after the metrics they feed, and the map side of
 * pagecache_bookkeeping.h. BCC compiles one text and its map calls only work
 * in that text, so the loader pastes each #include "..." of ours in place
 * (probes/bcc.py) rather than letting the preprocessor include it.
 */
BPF_PERCPU_HASH(pagecache_lookups, u64, u64, PAGECACHE_MAX_MEMCGS);
BPF_PERCPU_HASH(pagecache_misses, u64, u64, PAGECACHE_MAX_MEMCGS);
BPF_PERCPU_HASH(pagecache_insertions, u64, u64, PAGECACHE_MAX_MEMCGS);
BPF_PERCPU_HASH(pagecache_dirtied, u64, u64, PAGECACHE_MAX_MEMCGS);
BPF_PERCPU_HASH(pagecache_removals, struct removal_key, u64, PAGECACHE_MAX_MEMCGS);
BPF_HASH(pagecache_file_pages, struct file_key, s64, PAGECACHE_MAX_FILES);
BPF_PERCPU_ARRAY(pagecache_lost, u64, LOST_REASONS);
BPF_PERCPU_ARRAY(cpu_slots, struct cpu_slots, 1);
BPF_TABLE("lru_hash", u32, struct read_progress, reads_in_progress, PAGECACHE_MAX_READING_THREADS);

static __always_inline struct cpu_slots *cpu_slots_get(void)
{
	u32 zero = 0;

	return cpu_slots.lookup(&zero);
}

static __always_inline struct read_progress *read_progress_find(u32 *tid)
{
	return reads_in_progress.lookup(tid);
}

static __always_inline void read_progress_save(u32 *tid, struct read_progress *progress)
{
	reads_in_progress.update(tid, progress);
}

static __always_inline void lost(u32 reason)
{
	u64 *n = pagecache_lost.lookup(&reason);
	if (n)
		*n += 1;
}

/* The maps pagecache_bookkeeping.h adds to (count, file_key_add), by handle:
 * BCC's rewriter wants each map named at its call, outside any macro, so
 * map_find and map_insert switch on a constant that inlining folds away. */
#define MAP_T enum map_handle
enum map_handle {
	LOOKUPS_MAP,
	MISSES_MAP,
	INSERTIONS_MAP,
	DIRTIED_MAP,
	REMOVALS_MAP,
	FILE_PAGES_MAP,
	EXTENTS_MAP,
	SHARING_FILES_MAP,
	SHARED_MAP,
};

#ifdef WITH_SHARING
/* Shared hits in extent mode (pagecache_sharing.h), as pagecache.bpf.c keeps
 * them; the two globals there (file mode used, the owners' generation) are
 * one array entry here: BCC has no global data. */
BPF_HASH(sharing_extents, struct extent_key, struct extent_owners, SHARING_MAX_EXTENTS);
BPF_HASH(sharing_files, struct extent_key, struct extent_owners, SHARING_MAX_FILES);
BPF_PERCPU_HASH(pagecache_shared_hits, struct shared_key, u64, PAGECACHE_MAX_MEMCGS);
struct sharing_state {
	u64 generation;
	u32 file_mode;
	u32 unused;
};
BPF_ARRAY(sharing_state, struct sharing_state, 1);

static __always_inline struct sharing_state *sharing_state_get(void)
{
	u32 zero = 0;

	return sharing_state.lookup(&zero);
}
#endif

static __always_inline void *map_find(enum map_handle map, void *key)
{
	switch (map) {
	case LOOKUPS_MAP: return pagecache_lookups.lookup(key);
	case MISSES_MAP: return pagecache_misses.lookup(key);
	case INSERTIONS_MAP: return pagecache_insertions.lookup(key);
	case DIRTIED_MAP: return pagecache_dirtied.lookup(key);
	case REMOVALS_MAP: return pagecache_removals.lookup(key);
	case FILE_PAGES_MAP: return pagecache_file_pages.lookup(key);
#ifdef WITH_SHARING
	case EXTENTS_MAP: return sharing_extents.lookup(key);
	case SHARING_FILES_MAP: return sharing_files.lookup(key);
	case SHARED_MAP: return pagecache_shared_hits.lookup(key);
#endif
	default: return 0;
	}
	return 0;
}

/* BCC's insert() is an update with BPF_NOEXIST. */
static __always_inline long map_insert(enum map_handle map, void *key, void *value)
{
	switch (map) {
	case LOOKUPS_MAP: return pagecache_lookups.insert(key, value);
	case MISSES_MAP: return pagecache_misses.insert(key, value);
	case INSERTIONS_MAP: return pagecache_insertions.insert(key, value);
	case DIRTIED_MAP: return pagecache_dirtied.insert(key, value);
	case REMOVALS_MAP: return pagecache_removals.insert(key, value);
	case FILE_PAGES_MAP: return pagecache_file_pages.insert(key, value);
#ifdef WITH_SHARING
	case EXTENTS_MAP: return sharing_extents.insert(key, value);
	case SHARING_FILES_MAP: return sharing_files.insert(key, value);
	case SHARED_MAP: return pagecache_shared_hits.insert(key, value);
#endif
	default: return -1;
	}
	return -1;
}

#ifdef WITH_SHARING
static __always_inline long map_remove(enum map_handle map, void *key)
{
	switch (map) {
	case EXTENTS_MAP: return sharing_extents.delete(key);
	case SHARING_FILES_MAP: return sharing_files.delete(key);
	default: return -1;
	}
	return -1;
}
#endif

#ifdef WITH_STALLS
BPF_HASH(stall_starts, u32, struct stall_start, PAGECACHE_MAX_STALLING_THREADS);
BPF_RINGBUF_OUTPUT(stall_events, PAGECACHE_STALL_RINGBUF_BYTES / 4096);
BPF_HASH(span_slot_bases, u32, struct span_slot_base, PAGECACHE_MAX_TRACED_PROCESSES);
BPF_RINGBUF_OUTPUT(slot_announcements, PAGECACHE_ANNOUNCEMENT_RINGBUF_BYTES / 4096);

static __always_inline int stall_start_save(u32 *tid, struct stall_start *start)
{
	return stall_starts.update(tid, start);
}

static __always_inline struct stall_start *stall_start_find(u32 *tid)
{
	return stall_starts.lookup(tid);
}

static __always_inline void stall_start_drop(u32 *tid)
{
	stall_starts.delete(tid);
}

static __always_inline struct stall_event *stall_event_reserve(void)
{
	return stall_events.ringbuf_reserve(sizeof(struct stall_event));
}

static __always_inline void stall_event_submit(struct stall_event *event)
{
	stall_events.ringbuf_submit(event, 0);
}

static __always_inline struct span_slot_base *span_base_find(u32 *tgid)
{
	return span_slot_bases.lookup(tgid);
}

static __always_inline int span_base_save(u32 *tgid, struct span_slot_base *base)
{
	return span_slot_bases.update(tgid, base);
}

static __always_inline int slots_announcement_output(struct slots_announcement *announcement)
{
	return slot_announcements.ringbuf_output(announcement, sizeof(*announcement), 0);
}
#endif

#ifdef WITH_WHATIF
/* The what-if curve's samples (pagecache_whatif.h). */
#define PAGECACHE_WHATIF
BPF_ARRAY(whatif_config, struct whatif_config, 1);
BPF_RINGBUF_OUTPUT(whatif_samples, PAGECACHE_WHATIF_RINGBUF_BYTES / 4096);

static __always_inline struct whatif_config *whatif_config_get(void)
{
	u32 zero = 0;

	return whatif_config.lookup(&zero);
}

static __always_inline struct whatif_sample *whatif_reserve(void)
{
	return whatif_samples.ringbuf_reserve(sizeof(struct whatif_sample));
}

static __always_inline void whatif_submit(struct whatif_sample *sample)
{
	whatif_samples.ringbuf_submit(sample, PAGECACHE_WHATIF_SUBMIT_FLAGS);
}
#endif
