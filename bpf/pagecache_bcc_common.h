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

/* Shared by the BCC programs; substituted for COUNT_FUNCTIONS by the loader
 * (BCC compiles one text, so its map functions cannot come from #include). */
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
