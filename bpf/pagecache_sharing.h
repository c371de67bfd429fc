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
 *   bool reads_shared_exactly(void) true: exact mode counts reads' shared
 *                                  hits by the folios they found (the engine
 *                                  calls share_found), not by extents
 *   u64 owners_generation(void)    moves on after every owners_changed()
 *   void owners_changed(void)      an extent or file gained an owner
 *
 * The memo (struct share_memo): a lookup range within one extent that found
 * no owner but its reader is remembered per CPU with owners_generation(); the
 * same reader's next lookup there skips the extent map while the generation
 * stands. Whatever could give that reader shared hits there moves it on
 * first: a new entry, a slot taken by a new owner, or a slot's owner holding
 * pages again after none. (An owner's pages leaving, the only other change,
 * cannot make a reader's own extent shared.) The generation is read before
 * the map, and moved on after the change, so a memo never outlives one.
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
			bool again = delta > 0 && owners->pages[i] <= 0;

			__sync_fetch_and_add(&owners->pages[i], delta);
			if (again)
				owners_changed();
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
		owners_changed();
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
	if (map_find(EXTENTS_MAP, &key)) {
		owners_changed(); /* created, holding initial */
		return;
	}
	file_mode_started();
	key.extent = SHARING_WHOLE_FILE;
	owners = find_or_create(SHARING_FILES_MAP, &key, &initial, LOST_FILE_OWNERS_FULL);
	if (owners)
		owners_add(owners, owner, (__s32)nr);
	else
		owners_changed();
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

/* An owner's share of pages, pro rata of held of total, rounded up or down
 * at random in proportion to the remainder, so that it is right on average:
 * truncated, one-page reads of an extent two owners hold half each would
 * count no shared hits at all. */
static __always_inline u64 pro_rata(u64 pages, u64 held, u64 total)
{
	u64 share = pages * held;
	u64 n = share / total, rest = share % total;

	if (rest && (u64)bpf_get_prandom_u32() % total < rest)
		n++;
	return n;
}

/* pages looked up by reader in one extent (or file), apportioned to its
 * owners other than the reader, pro rata of the pages each holds there;
 * whether any such owner held pages there. */
static __always_inline bool share_owners(struct extent_owners *owners, u64 reader, u64 pages)
{
	bool shared = false;
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
		return false;
	for (i = 0; i < SHARING_EXTENT_OWNERS; i++) {
		if (held[i] && owners->memcg[i] != reader) {
			count_shared(reader, owners->memcg[i],
				     held[i] == total ? pages : pro_rata(pages, held[i], total));
			shared = true;
		}
	}
	return shared;
}

/* Exact mode: how many of a folio's pages [index, index + nr) a read of
 * pages [first, last] covers. */
static __always_inline u64 pages_in_range(u64 index, u64 nr, u64 first, u64 last)
{
	u64 from = index > first ? index : first;
	u64 to = index + nr - 1 < last ? index + nr - 1 : last;

	return nr && from <= to ? to - from + 1 : 0;
}

/* Exact mode: reader's read found pages owned by owner (0: not charged). */
static __always_inline void share_found(u64 reader, u64 owner, u64 pages)
{
	if (owner && owner != reader)
		count_shared(reader, owner, pages);
}

/* reader looked up pages [first, last] of mapping; memo is this CPU's. */
static __always_inline void share_range(struct share_memo *memo, u64 reader, u64 mapping,
					u64 first, u64 last)
{
	struct extent_key key = {.mapping = mapping};
	struct extent_owners *owners;
	u64 extent = first >> SHARING_EXTENT_SHIFT, end = last >> SHARING_EXTENT_SHIFT;
	u64 generation;
	int i;

	if (!sharing_on())
		return;
	generation = owners_generation();
	if (extent == end && memo->mapping == mapping && memo->extent == extent &&
	    memo->reader == reader && memo->generation == generation)
		return;
	if (file_mode_used()) {
		key.extent = SHARING_WHOLE_FILE;
		owners = map_find(SHARING_FILES_MAP, &key);
		if (owners) {
			share_owners(owners, reader, last - first + 1);
			return;
		}
	}
	if (extent == end) {
		/* One extent, the usual case: remembered when nobody else holds
		 * pages there. (Apart from the loop below, whose verification a
		 * flag carried through it would multiply.) */
		key.extent = extent;
		owners = map_find(EXTENTS_MAP, &key);
		if (!owners || !share_owners(owners, reader, last - first + 1)) {
			memo->reader = reader;
			memo->mapping = mapping;
			memo->extent = extent;
			memo->generation = generation;
		}
		return;
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

/* A read's range: by its extents' owners, unless exact mode counts the
 * folios it found. */
static __always_inline void share_read(struct share_memo *memo, u64 reader, u64 mapping,
				       u64 first, u64 last)
{
	if (!reads_shared_exactly())
		share_range(memo, reader, mapping, first, last);
}

#endif /* __PAGECACHE_SHARING_H__ */
