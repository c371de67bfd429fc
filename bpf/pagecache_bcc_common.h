/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What both BCC programs (pagecache_bcc.c, pagecache_bcc_tp.c) share: the
 * maps, named after the metrics they feed, and the code that updates them.
 * BCC compiles one text and its map calls only work in that text, so the
 * loader pastes this in place of BCC_COMMON rather than #including it.
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

/* Shared by the BCC programs; substituted for BCC_COMMON by the loader
 * (probes/bcc.py: BCC compiles one text, so its map functions cannot come
 * from #include). */
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

/*
 * The lookup path's bookkeeping (why: see pagecache.bpf.c). "mapping" is
 * whatever the program can see that names the file: an address_space
 * pointer, or the inode number in the tracepoint-only program.
 */

/* Pages a get_pages event adds: its whole range on a read's first batch,
 * 0 on the same read continuing (same thread, mapping and end, later start).
 * A continuing read still ends pending insertions: they were its misses. */
static __always_inline u64 read_pages(struct cpu_slots *slots, u64 mapping, u64 index, u64 last)
{
	struct lookup_slot *slot = &slots->lookup;
	u32 tid = (u32)bpf_get_current_pid_tgid();

	if (slot->tid == tid && slot->mapping == mapping && slot->last == last &&
	    index > slot->index) {
		slot->index = index;
		if (slots->insert.pages)
			resolve_pending(&slots->insert, true);
		return 0;
	}
	slot->tid = tid;
	slot->mapping = mapping;
	slot->index = index;
	slot->last = last;
	return last - index + 1;
}

/* A fault counts its page; the next fault-around of the thread maps it again. */
static __always_inline void note_fault(struct lookup_slot *slot, u64 mapping, u64 index)
{
	slot->fault_tid = (u32)bpf_get_current_pid_tgid();
	slot->fault_mapping = mapping;
	slot->fault_index = index;
}

/* Pages a fault-around maps, less the page a fault of the same thread counted. */
static __always_inline u64 fault_around_pages(struct lookup_slot *slot, u64 mapping, u64 start,
					       u64 last)
{
	u64 pages = last - start + 1;

	if (slot->fault_tid == (u32)bpf_get_current_pid_tgid() && slot->fault_mapping == mapping &&
	    slot->fault_index >= start && slot->fault_index <= last) {
		pages -= 1;
		slot->fault_mapping = 0;
	}
	return pages;
}
