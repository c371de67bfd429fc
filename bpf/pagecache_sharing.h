/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared hits: lookups of one memcg that find pages another memcg owns
 * (issue 17), in one copy for both engines. Included by
 * pagecache_bookkeeping.h where the engine defines PAGECACHE_SHARING.
 *
 * Extent mode: the kernel tells the owner of a page at its insertion
 * (mm_filemap_add_to_page_cache: the folio's memcg, index and order) and at
 * its deletion, but not at a lookup: the lookup tracepoints and hooks give a
 * range of a file, not its folios. So the insertions and deletions keep, per
 * (file, 2 MiB extent), how many pages each owner memcg holds there
 * (sharing_extents), and a lookup range is apportioned to the owners of the
 * extents it covers, pro rata of their pages. Pages of the reader's own
 * memcg are not shared hits; the rest count in pagecache_shared_hits, by
 * (reader, owner).
 *
 * The extent map is a bounded hash, not an LRU: an LRU would drop a live
 * extent's owners silently when full, so a full map could never be told.
 * Entries go when their last page leaves the cache. When the map is full, a
 * new extent's owners are kept per file instead (file mode, sharing_files:
 * the same key with extent SHARING_WHOLE_FILE), counted once as
 * LOST_EXTENT_MAP_FULL; lookups of a file then apportion by its owners over
 * the whole file.
 *
 * Pages cached before the agent started have no recorded owner: lookups of
 * them count no shared hits.
 *
 * Besides the accessors of pagecache_bookkeeping.h, the engine defines:
 *   EXTENTS_MAP, SHARING_FILES_MAP, SHARED_MAP   map handles (MAP_T)
 *   long map_remove(MAP_T, void *key)
 *   bool sharing_on(void)          false: the whole feature compiled out by
 *                                  the verifier (the same build with it off)
 *   bool file_mode_used(void)      whether any file went to file mode, so
 *                                  that lookups look there only then
 *   void file_mode_started(void)
 */
#ifndef __PAGECACHE_SHARING_H__
#define __PAGECACHE_SHARING_H__

/* Add delta pages of owner to an extent's (or file's) owners; true when none
 * are left (the entry may go). */
static __always_inline bool owners_add(struct extent_owners *owners, u64 owner, __s32 delta)
{
	int i, free = -1;
	__s32 left = 0;

	for (i = 0; i < SHARING_EXTENT_OWNERS; i++) {
		if (owners->memcg[i] == owner) {
			__sync_fetch_and_add(&owners->pages[i], delta);
			free = -2;
			break;
		}
		if (free == -1 && owners->pages[i] <= 0)
			free = i;
	}
	if (free >= 0 && delta > 0) {
		/* A race with another CPU taking the same slot loses one side's
		 * first pages to the other's owner: rare, and never a crash. */
		owners->memcg[free] = owner;
		owners->pages[free] = delta;
	} else if (free != -2) {
		if (delta > 0 || owners->other > 0) {
			__sync_fetch_and_add(&owners->other, delta);
		} else {
			/* Deleted by an owner never recorded here: a kernel that
			 * moves a dying memcg's folios to its parent (7.x) names the
			 * parent at deletion. The pages were some slot's. */
			for (i = 0; i < SHARING_EXTENT_OWNERS; i++) {
				if (owners->pages[i] > 0) {
					__sync_fetch_and_add(&owners->pages[i], delta);
					break;
				}
			}
		}
	}
	for (i = 0; i < SHARING_EXTENT_OWNERS; i++)
		if (owners->pages[i] > 0)
			left += owners->pages[i];
	return left <= 0 && owners->other <= 0;
}

/* Pages [index, index + nr) of mapping were inserted (nr > 0) or deleted
 * (nr < 0), charged to owner. A folio never spans two extents: folios are
 * naturally aligned and at most 2 MiB here. */
static __always_inline void sharing_pages_changed(u64 owner, u64 mapping, u64 index, s64 nr)
{
	struct extent_key key = {.mapping = mapping, .extent = index >> SHARING_EXTENT_SHIFT};
	struct extent_owners initial = {};
	struct extent_owners *owners;

	if (!sharing_on())
		return;
	owners = map_find(EXTENTS_MAP, &key);
	if (owners) {
		if (owners_add(owners, owner, (__s32)nr))
			map_remove(EXTENTS_MAP, &key);
		return;
	}
	key.extent = SHARING_WHOLE_FILE;
	if (nr < 0) {
		/* Unknown extent: cached before we started, or in file mode. */
		if (file_mode_used()) {
			owners = map_find(SHARING_FILES_MAP, &key);
			if (owners && owners_add(owners, owner, (__s32)nr))
				map_remove(SHARING_FILES_MAP, &key);
		}
		return;
	}
	initial.memcg[0] = owner;
	initial.pages[0] = (__s32)nr;
	if (file_mode_used()) {
		/* A file already in file mode stays there: its pages are counted
		 * in one place. */
		owners = map_find(SHARING_FILES_MAP, &key);
		if (owners) {
			owners_add(owners, owner, (__s32)nr);
			return;
		}
	}
	/* find_or_create answers 0 both when it created the entry (holding
	 * initial) and when the map was full (counted as lost): a second look
	 * tells them apart, once per new extent. */
	key.extent = index >> SHARING_EXTENT_SHIFT;
	owners = find_or_create(EXTENTS_MAP, &key, &initial, LOST_EXTENT_MAP_FULL);
	if (owners) { /* another CPU created it first */
		owners_add(owners, owner, (__s32)nr);
		return;
	}
	if (map_find(EXTENTS_MAP, &key))
		return;
	file_mode_started();
	key.extent = SHARING_WHOLE_FILE;
	owners = find_or_create(SHARING_FILES_MAP, &key, &initial, LOST_FILE_OWNERS_FULL);
	if (owners)
		owners_add(owners, owner, (__s32)nr);
}

static __always_inline void count_shared(u64 reader, u64 owner, u64 pages)
{
	struct shared_key key = {.reader = reader, .owner = owner};
	u64 *value;

	if (!pages)
		return;
	value = find_or_create(SHARED_MAP, &key, &pages, LOST_SHARED_MAP_FULL);
	if (value)
		*value += pages;
}

/* pages looked up by reader in one extent (or file), apportioned to its
 * owners other than the reader, pro rata of the pages each holds there. */
static __always_inline void share_owners(struct extent_owners *owners, u64 reader, u64 pages)
{
	u64 held[SHARING_EXTENT_OWNERS], total = 0;
	int i;

	for (i = 0; i < SHARING_EXTENT_OWNERS; i++) {
		__s32 p = owners->pages[i];

		held[i] = p > 0 ? (u64)p : 0;
		total += held[i];
	}
	if (owners->other > 0)
		total += (u64)owners->other;
	if (!total)
		return;
	for (i = 0; i < SHARING_EXTENT_OWNERS; i++)
		if (held[i] && owners->memcg[i] != reader)
			count_shared(reader, owners->memcg[i],
				     held[i] == total ? pages : pages * held[i] / total);
}

/* reader looked up pages [first, last] of mapping. */
static __always_inline void share_range(u64 reader, u64 mapping, u64 first, u64 last)
{
	struct extent_key key = {.mapping = mapping};
	struct extent_owners *owners;
	u64 extent = first >> SHARING_EXTENT_SHIFT, end = last >> SHARING_EXTENT_SHIFT;
	int i;

	if (!sharing_on())
		return;
	if (file_mode_used()) {
		key.extent = SHARING_WHOLE_FILE;
		owners = map_find(SHARING_FILES_MAP, &key);
		if (owners) {
			share_owners(owners, reader, last - first + 1);
			return;
		}
	}
	for (i = 0; i < SHARING_MAX_RANGE_EXTENTS; i++) {
		u64 from = extent << SHARING_EXTENT_SHIFT;
		u64 to = from + (1ULL << SHARING_EXTENT_SHIFT) - 1;

		if (from < first)
			from = first;
		if (to > last)
			to = last;
		key.extent = extent;
		owners = map_find(EXTENTS_MAP, &key);
		if (owners)
			share_owners(owners, reader, to - from + 1);
		if (extent == end)
			return;
		extent++;
	}
	lost(LOST_SHARED_RANGE_CUT);
}

#endif /* __PAGECACHE_SHARING_H__ */
