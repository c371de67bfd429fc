/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The what-if curve's sampling of page accesses, in one copy for every
 * engine (included by pagecache_bookkeeping.h; user space:
 * otel_pagecache/whatif.py).
 *
 * The curve (a miss-ratio curve, SHARDS: Waldspurger et al., FAST'15) needs
 * a sample of page accesses in which a sampled page is always sampled. The
 * rule here is a per-file hashed phase plus a stride: page i of a file is
 * sampled when i = phase(file) (mod 2^shift). Its sampled pages in any range
 * follow by arithmetic: the first one, then every 2^shift-th. So one event
 * costs O(1) whatever its range (a read() event covers the whole remaining
 * range; fault-around covers up to 16 pages), and sends at most one ring
 * buffer record: (first, count, shift), which user space expands. A range
 * with more than max_pages sampled pages is cut there and counted
 * (LOST_WHATIF_CAPPED); a full ring is counted too (LOST_WHATIF_RINGBUF_FULL).
 *
 * The engine defines, when it builds the curve (PAGECACHE_WHATIF):
 *   struct whatif_config *whatif_config_get(void)
 *   struct whatif_sample *whatif_reserve(void)   0 when the ring is full
 *   void whatif_submit(struct whatif_sample *)
 * and lost(u32 reason) (pagecache_bookkeeping.h's contract).
 */
#ifndef __PAGECACHE_WHATIF_H__
#define __PAGECACHE_WHATIF_H__

#ifdef PAGECACHE_WHATIF
/* Fibonacci hashing of the file's identity (an address_space address, or
 * the inode number in BCC's tracepoint-only program): its high bits are
 * well mixed even where the low bits of the input are all zero. */
#define WHATIF_HASH_MULTIPLIER 0x9E3779B97F4A7C15ULL

/* A lookup of pages [first, last] of mapping by memcg; skip is one page of
 * the range not to count again (fault-around's faulting page), else ~0. */
static __always_inline void whatif_sample(u64 memcg, u64 mapping, u64 first, u64 last, u64 skip)
{
	struct whatif_config *config = whatif_config_get();
	struct whatif_sample *sample;
	u64 shift, mask, phase, count;

	if (!config || !config->enabled)
		return;
	shift = config->shift & 31;
	mask = (1ULL << shift) - 1;
	phase = ((mapping * WHATIF_HASH_MULTIPLIER) >> 40) & mask;
	first += (phase - first) & mask; /* the first page >= first at the phase */
	if (first > last)
		return;
	count = ((last - first) >> shift) + 1;
	if (count > config->max_pages) {
		count = config->max_pages;
		lost(LOST_WHATIF_CAPPED);
	}
	sample = whatif_reserve();
	if (!sample) {
		lost(LOST_WHATIF_RINGBUF_FULL);
		return;
	}
	sample->memcg = memcg;
	sample->mapping = mapping;
	sample->first = first;
	sample->skip = skip;
	sample->count = count;
	sample->shift = shift;
	whatif_submit(sample);
}
#else
static __always_inline void whatif_sample(u64 memcg, u64 mapping, u64 first, u64 last, u64 skip)
{
}
#endif /* PAGECACHE_WHATIF */

#endif /* __PAGECACHE_WHATIF_H__ */
