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

/* Add n to a per-CPU counter map, creating the entry if needed. BCC's map
 * calls cannot sit in a macro, so one function per map. */
static __always_inline void count_lookups_map(u64 *key, u64 n)
{
	u64 *v = pagecache_lookups.lookup(key);

	if (v) {
		*v += n;
		return;
	}
	if (pagecache_lookups.insert(key, &n) == 0)
		return;
	v = pagecache_lookups.lookup(key);
	if (v)
		*v += n;
	else
		lost(LOST_MEMCG_MAP_FULL);
}

static __always_inline void count_misses(u64 *key, u64 n)
{
	u64 *v = pagecache_misses.lookup(key);

	if (v) {
		*v += n;
		return;
	}
	if (pagecache_misses.insert(key, &n) == 0)
		return;
	v = pagecache_misses.lookup(key);
	if (v)
		*v += n;
	else
		lost(LOST_MEMCG_MAP_FULL);
}

static __always_inline void count_insertions(u64 *key, u64 n)
{
	u64 *v = pagecache_insertions.lookup(key);

	if (v) {
		*v += n;
		return;
	}
	if (pagecache_insertions.insert(key, &n) == 0)
		return;
	v = pagecache_insertions.lookup(key);
	if (v)
		*v += n;
	else
		lost(LOST_MEMCG_MAP_FULL);
}

static __always_inline void count_dirtied(u64 *key, u64 n)
{
	u64 *v = pagecache_dirtied.lookup(key);

	if (v) {
		*v += n;
		return;
	}
	if (pagecache_dirtied.insert(key, &n) == 0)
		return;
	v = pagecache_dirtied.lookup(key);
	if (v)
		*v += n;
	else
		lost(LOST_MEMCG_MAP_FULL);
}

static __always_inline void count_removals(struct removal_key *key, u64 n)
{
	u64 *v = pagecache_removals.lookup(key);

	if (v) {
		*v += n;
		return;
	}
	if (pagecache_removals.insert(key, &n) == 0)
		return;
	v = pagecache_removals.lookup(key);
	if (v)
		*v += n;
	else
		lost(LOST_MEMCG_MAP_FULL);
}

/* Files cached before we started are not tracked (create = false on
 * removal), so their removals are ignored rather than recorded negative. */
static __always_inline void file_key_add(u64 memcg, u64 ino, u32 dev, s64 delta, bool create)
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

static __always_inline int slots_announcement_output(struct slots_announcement *announcement)
{
	return slot_announcements.ringbuf_output(announcement, sizeof(*announcement), 0);
}
#endif
