/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
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

