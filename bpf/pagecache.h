/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Map keys and values shared by pagecache.bpf.c and the Python loader
 * (otel_pagecache/probes/layout.py mirrors these; tests/test_bpf_layout.py
 * checks the two agree). Each map is named after the metric it feeds.
 */
#ifndef __PAGECACHE_H__
#define __PAGECACHE_H__

/* Bounds: every map is preallocated at load time, so memory is fixed.
 * OTEL_PAGECACHE_BPF_MAX_MEMCGS overrides the per-memcg maps' size: the CO-RE
 * loader resizes them before load, BCC compiles with it as -D. */
#ifndef PAGECACHE_MAX_MEMCGS
#define PAGECACHE_MAX_MEMCGS 16384
#endif
#define PAGECACHE_MAX_FILES 65536
#define PAGECACHE_MAX_STALLING_THREADS 16384
#define PAGECACHE_STALL_RINGBUF_BYTES (256 * 1024)

/* pagecache_removals key: why a folio left the page cache. */
enum removal_reason {
	REMOVAL_EVICTION = 0,     /* reclaim: kswapd, direct or memcg reclaim */
	REMOVAL_INVALIDATION = 1, /* truncate, fadvise(DONTNEED), drop, hole punch */
	REMOVAL_UNKNOWN = 2,      /* the BCC tracepoint-only mode cannot tell */
};

struct removal_key {
	__u64 memcg;  /* owner memcg id (cgroup id of the memcg) */
	__u32 reason; /* enum removal_reason */
	__u32 pad;
};

/* pagecache_file_pages key: one file's pages in one owner memcg. */
struct file_key {
	__u64 memcg; /* owner memcg id */
	__u64 ino;
	__u32 dev;   /* kernel dev_t: major << 20 | minor */
	__u32 pad;
};

/* pagecache_lost index: events the maps could not hold. */
enum lost_reason {
	LOST_MEMCG_MAP_FULL = 0, /* a per-memcg counter map had no room */
	LOST_FILE_MAP_FULL = 1,  /* pagecache_file_pages had no room */
	LOST_STALL_RINGBUF_FULL = 2, /* a stall event found the ring buffer full */
	LOST_STALL_STARTS_FULL = 3,  /* too many threads stalled at once to time them */
	LOST_ANNOUNCEMENT_RINGBUF_FULL = 4, /* a span-slot announcement found its ring full */
	LOST_WHATIF_CAPPED = 5,       /* a lookup had more sampled pages than max_pages */
	LOST_WHATIF_RINGBUF_FULL = 6, /* a what-if sample found its ring buffer full */
	LOST_EXTENT_MAP_FULL = 7,  /* an extent's owners went to file mode (extents full) */
	LOST_FILE_OWNERS_FULL = 8, /* ... and file mode was full too: owners not recorded */
	LOST_SHARED_MAP_FULL = 9,  /* pagecache_shared_hits had no room for a pair */
	LOST_SHARED_RANGE_CUT = 10, /* a lookup range over SHARING_MAX_EXTENTS extents */
	LOST_REASONS = 11,
};

/*
 * Shared hits (pagecache_sharing.h): the owners of each (file, 2 MiB extent)
 * of the page cache, so that a lookup can be apportioned to the memcgs that
 * own the pages it finds.
 */
#define SHARING_EXTENT_SHIFT 9 /* 512 pages of 4 KiB: 2 MiB */
#define SHARING_EXTENT_OWNERS 3
#define SHARING_WHOLE_FILE 0xffffffffffffffffULL /* file mode's extent number */
#define SHARING_MAX_EXTENTS 65536
#define SHARING_MAX_FILES 16384
#define SHARING_MAX_PAIRS 16384
#define SHARING_MAX_RANGE_EXTENTS 32 /* extents one lookup range is apportioned over */

/* sharing_extents and sharing_files key: mapping is what the engine names a
 * file by (see pagecache_bookkeeping.h), extent its page index >> 9, or
 * SHARING_WHOLE_FILE in file mode. */
struct extent_key {
	__u64 mapping;
	__u64 extent;
};

/* Pages of the extent (or file) each owner memcg holds; other: pages of
 * owners past the slots (their lookups are not apportioned to anyone). */
struct extent_owners {
	__u64 memcg[SHARING_EXTENT_OWNERS];
	__s32 pages[SHARING_EXTENT_OWNERS];
	__s32 other;
};

/* pagecache_shared_hits key: a reader memcg's lookups found pages that
 * another memcg owns. */
struct shared_key {
	__u64 reader;
	__u64 owner;
};

/*
 * Per-CPU slot on the lookup path (mm_filemap_get_pages and the fault
 * events): remembers the last read seen on this CPU, to tell a new read from
 * the next batch of the same read, and the memcg whose lookups it is
 * counting, so a one-page read touches no hash map until the memcg or the
 * thread on this CPU changes (multi-page reads: see struct read_progress).
 */
struct lookup_slot {
	__u64 memcg;   /* accessor memcg whose count this slot holds */
	__u64 lookups; /* pages looked up by memcg since it took the slot */
	__u64 mapping; /* address_space of the last get_pages event */
	__u64 index;   /* its first page */
	__u64 last;    /* its last page */
	__u64 fault_mapping; /* last filemap_fault: its page is in the next map_pages range */
	__u64 fault_index;
	__u64 cset;    /* css_set of the last task counted: same css_set, same memcg */
	__u64 flushes; /* times lookups went to pagecache_lookups: a reader that sees it
			* unchanged around its read of that map has a consistent sum */
	__u32 tid;
	__u32 fault_tid;
};

/*
 * Per-CPU slot of insertions not yet known to be misses: pages inserted by a
 * thread are misses unless that thread dirties the same mapping next (a
 * write filling a new page is not a miss).
 */
struct insert_slot {
	__u64 memcg;   /* accessor memcg */
	__u64 mapping;
	__u64 pages;
	__u32 tid;
	__u32 pad;
};

/*
 * reads_in_progress value, keyed by thread id: a read() of more than one
 * page, so that its next batch is still known as the same read when it comes
 * after another thread's lookups took this CPU's slot (the reader slept on a
 * cold page) or on another CPU (the reader woke up there). Written when such
 * a read starts and when another thread takes the slot from it; read only
 * when the slot names another thread, so a lone reader never touches it.
 */
#define PAGECACHE_MAX_READING_THREADS 16384

struct read_progress {
	__u64 mapping;
	__u64 index; /* first page of its latest batch seen */
	__u64 last;
};

/*
 * Shared hits' memo (pagecache_sharing.h): the last one-extent lookup range
 * on this CPU in which no memcg but its reader held pages (or whose extent
 * had no recorded owners), and sharing_generation when that was looked up.
 * The same reader looking there again, with no owner added to any extent
 * since, has no shared hits: it skips the extent map. A process re-reading
 * its own cache, the common case, so costs no hash look-up per read.
 */
struct share_memo {
	__u64 reader;
	__u64 mapping;
	__u64 extent;
	__u64 generation;
};

/* The slots in one per-CPU value: one map look-up per event, not several. */
struct cpu_slots {
	struct lookup_slot lookup;
	struct insert_slot insert;
	struct share_memo share;
};

/* Page-cache stalls, timed in the kernel and sent through a ring buffer. */
enum stall_kind {
	STALL_MEMCG_RECLAIM = 0,  /* vmscan:mm_vmscan_memcg_reclaim_begin/_end */
	STALL_DIRECT_RECLAIM = 1, /* vmscan:mm_vmscan_direct_reclaim_begin/_end */
	STALL_DIRTY_THROTTLE = 2, /* writeback:balance_dirty_pages (planned pause) */
};

/*
 * Correlation with application spans. The in-process plugin keeps, in its
 * own memory, an array of slots, one per thread (index = tid % count), each
 * holding the span that thread is running; the agent learns the array's
 * address (span_slot_bases, by process) and at a stall's start the program
 * copies the stalled thread's slot with bpf_probe_read_user. The stalled
 * thread is the current task and is in the kernel, so the slot cannot be
 * half-written at that moment.
 */
struct span_slot {
	__u32 tid;         /* the thread the slot belongs to now, as the process sees it */
	__u32 trace_flags;
	__u8 trace_id[16]; /* all zero: no span running */
	__u8 span_id[8];
};

struct span_slot_base {
	__u64 address; /* of slot 0, in the process's address space */
	__u32 count;   /* number of slots */
	__u32 size;    /* bytes per slot (sizeof(struct span_slot)) */
};

#define PAGECACHE_MAX_TRACED_PROCESSES 16384
#define PAGECACHE_ANNOUNCEMENT_RINGBUF_BYTES 4096

/*
 * The plugin's announcement carries its slots in the rename's spare
 * arguments, which the kernel ignores for PR_SET_NAME:
 *   prctl(PR_SET_NAME, name, address, count << 32 | size, SPAN_SLOTS_MAGIC)
 * so the program records them before the rename returns, and a process's
 * first stall links whatever user space is doing (correlation.announce).
 */
#define SPAN_SLOTS_MAGIC 0x6f74656c2d706373ULL /* "otel-pcs" */
#define SPAN_SLOTS_MAX_COUNT (1U << 20)
#define PRCTL_SET_NAME 15   /* PR_SET_NAME, include/uapi/linux/prctl.h */
#define SYSCALL_PRCTL 157   /* __NR_prctl on x86-64 */
/* Before bpf_task_pt_regs (5.15) a syscall's saved registers are found as
 * x86-64's task_pt_regs() finds them: the top of the task's kernel stack,
 * THREAD_SIZE (16 KiB without KASAN) above task->stack, with no padding
 * above them before FRED (6.9), struct pt_regs being 21 words. A kernel built
 * otherwise shows other words there, which fail the magic number: user
 * space then publishes the slots. */
#define X86_64_THREAD_SIZE (16 * 1024)
#define X86_64_PT_REGS_SIZE (21 * 8)

/* slot_announcements record: a process that may just have published span
 * slots (see slots_announced in pagecache_bookkeeping.h). */
struct slots_announcement {
	__u32 pid; /* thread group id (global PID namespace) */
	__u32 pad;
};

/* stall_starts value: a thread's stall in progress, keyed by thread id. */
struct stall_start {
	__u64 start_ns; /* CLOCK_BOOTTIME */
	__u64 memcg;
	__u64 gfp;
	__s32 order;
	__u32 kind;
	struct span_slot span; /* the application span running at the stall's start */
};

/* stall_events record. */
struct stall_event {
	__u64 start_ns;    /* CLOCK_BOOTTIME */
	__u64 duration_ns; /* measured; for a dirty throttle the planned pause */
	__u64 memcg;       /* the stalled task's memcg */
	__u64 pages;       /* reclaim: pages reclaimed; throttle: pages dirtied */
	__u64 gfp;
	__u64 ratelimit;   /* throttle: the task's dirty rate limit, pages/s */
	__u32 pid;         /* thread group id */
	__u32 tid;
	__s32 order;
	__u32 kind;        /* enum stall_kind */
	__u32 planned;     /* 1: duration is the planned pause, not measured */
	__u32 pad;
	char comm[16];
	struct span_slot span; /* tid 0: no application span known */
	__u32 ns_pid;      /* pid and tid as the process sees them (its own PID namespace) */
	__u32 ns_tid;
};

/*
 * The what-if curve's sampled page accesses (pagecache_whatif.h). One
 * whatif_config entry, written by user space; enabled 0 leaves the lookup
 * path as it is without the curve.
 */
#define PAGECACHE_WHATIF_RINGBUF_BYTES (1024 * 1024)
/* Submitted without waking the reader (BPF_RB_NO_WAKEUP): a wakeup per record
 * cost microseconds per event (bench/whatif_cost.py); user space consumes the
 * ring on a timer instead. */
#define PAGECACHE_WHATIF_SUBMIT_FLAGS 1

struct whatif_config {
	__u32 enabled;
	__u32 shift;     /* stride 2^shift: one page in 2^shift of each file is sampled */
	__u32 max_pages; /* sampled pages sent per lookup event, at most */
	__u32 pad;
};

/* whatif_samples record: pages first, first + 2^shift, ... (count of them),
 * but skip, looked up by memcg (the reader's) in the file named by mapping. */
struct whatif_sample {
	__u64 memcg;
	__u64 mapping;
	__u64 first;
	__u64 skip; /* a page of the range already counted (fault-around's fault), or ~0 */
	__u32 count;
	__u32 shift;
};

#endif /* __PAGECACHE_H__ */
