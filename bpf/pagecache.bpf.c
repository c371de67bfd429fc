// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Page-cache activity per memory cgroup, from tracepoints only.
 *
 * Two memcgs matter for each event:
 *   - the OWNER: the memcg the folio is charged to (folio->memcg_data), for
 *     insertions, dirtying and removals. Pages keep their owner when another
 *     container reads or evicts them; attributing by owner is what lets an
 *     operator see who evicts whom.
 *   - the ACCESSOR: the memcg of the task doing the read or fault, for
 *     lookups and misses (the reader paid the latency).
 * A memcg is named by its cgroup id (kernfs_node->id), which is the inode
 * number of its directory in cgroupfs, v1 or v2; user space joins on it.
 *
 * Every program does O(1) work in preallocated maps: no loops, no walks.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "pagecache.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* include/linux/memcontrol.h: low bits of folio->memcg_data are flags. */
#define MEMCG_DATA_OBJEXTS 1UL
#define MEMCG_DATA_FLAGS_MASK 7UL

enum pageflags___local {
	PG_head = 6,
};

#define PERCPU_COUNTER_MAP(_name, _key)                                        \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);                        \
		__uint(max_entries, PAGECACHE_MAX_MEMCGS);                     \
		__type(key, _key);                                             \
		__type(value, __u64);                                          \
	} _name SEC(".maps")

PERCPU_COUNTER_MAP(pagecache_lookups, __u64);    /* by accessor */
PERCPU_COUNTER_MAP(pagecache_misses, __u64);     /* by accessor */
PERCPU_COUNTER_MAP(pagecache_insertions, __u64); /* by owner */
PERCPU_COUNTER_MAP(pagecache_dirtied, __u64);    /* by owner */
PERCPU_COUNTER_MAP(pagecache_removals, struct removal_key); /* by owner */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PAGECACHE_MAX_FILES);
	__type(key, struct file_key);
	__type(value, __s64);
} pagecache_file_pages SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOST_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} pagecache_lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_slots);
} cpu_slots SEC(".maps");

/* Multi-page reads in progress, by thread (see struct read_progress). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PAGECACHE_MAX_READING_THREADS);
	__type(key, __u32);
	__type(value, struct read_progress);
} reads_in_progress SEC(".maps");

/* Shared hits (pagecache_sharing.h): owners per (file, 2 MiB extent), per
 * file once the extents are full, and the hits by (reader, owner). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHARING_MAX_EXTENTS);
	__type(key, struct extent_key);
	__type(value, struct extent_owners);
} sharing_extents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHARING_MAX_FILES);
	__type(key, struct extent_key);
	__type(value, struct extent_owners);
} sharing_files SEC(".maps");

PERCPU_COUNTER_MAP(pagecache_shared_hits, struct shared_key); /* (reader, owner) */

/* Set once a file went to file mode: lookups look in sharing_files only then. */
__u32 sharing_file_mode = 0;

/* Moves on whenever an extent or file gains an owner (struct share_memo). */
__u64 sharing_generation = 0;

/* Stalls: a thread's start waits here, keyed by thread id, until its end. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PAGECACHE_MAX_STALLING_THREADS);
	__type(key, __u32);
	__type(value, struct stall_start);
} stall_starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PAGECACHE_STALL_RINGBUF_BYTES);
} stall_events SEC(".maps");

/* Keeps struct stall_event in the object's BTF (ring buffers have no value
 * type), so tests/test_bpf_layout.py can check the Python mirror. */
const volatile struct stall_event *unused_stall_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PAGECACHE_MAX_TRACED_PROCESSES);
	__type(key, __u32); /* tgid */
	__type(value, struct span_slot_base);
} span_slot_bases SEC(".maps");

/* Processes that may just have published span slots (slots_announced). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PAGECACHE_ANNOUNCEMENT_RINGBUF_BYTES);
} slot_announcements SEC(".maps");

const volatile struct slots_announcement *unused_slots_announcement __attribute__((unused));

extern unsigned long CONFIG_HZ __kconfig __weak;
/* Not a kernel option: the loader's switch for shared hits (CoreProbe's
 * sharing). A constant at load, so with it off the verifier drops the
 * feature's code: the same build with sharing off, for bench/. */
extern unsigned long CONFIG_PAGECACHE_SHARING __kconfig __weak;
/* Also the loader's: 1 when fexit_shared_* is attached, so that reads count
 * shared hits by the folios they found, not by extents (exact mode). */
extern unsigned long CONFIG_PAGECACHE_SHARED_EXACT __kconfig __weak;

/* Drift: where a kernel may preempt a program on a tracepoint mid-run (7.x
 * boots with lazy preemption), another program's update of this CPU's slots
 * must not land in the middle of ours: those updates run with preemption
 * off, through the kfuncs of 6.10+ (absent before: nothing to do there, as
 * tracepoints and this program's fentry hooks are not preempted there). */
extern void bpf_preempt_disable(void) __weak __ksym;
extern void bpf_preempt_enable(void) __weak __ksym;
#define SLOTS_EXCLUSIVE(call)                                                              \
	do {                                                                               \
		if (bpf_preempt_disable && bpf_preempt_enable) {                           \
			bpf_preempt_disable();                                             \
			call;                                                              \
			bpf_preempt_enable();                                              \
		} else {                                                                   \
			call;                                                              \
		}                                                                          \
	} while (0)

static __always_inline struct cpu_slots *cpu_slots_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_slots, &zero);
}

static __always_inline struct read_progress *read_progress_find(__u32 *tid)
{
	return bpf_map_lookup_elem(&reads_in_progress, tid);
}

static __always_inline void read_progress_save(__u32 *tid, struct read_progress *progress)
{
	bpf_map_update_elem(&reads_in_progress, tid, progress, BPF_ANY);
}

static __always_inline void lost(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&pagecache_lost, &reason);

	if (n)
		*n += 1;
}

/* ---- Kernel-version drift, all of it here -------------------------------
 *
 * Chosen by what the running kernel's BTF holds: CO-RE existence checks here,
 * and tracepoint/function signatures in the loader (probes/core.py), which
 * autoloads one program of each variant pair below. Never by version number;
 * the versions only say why, for the reader:
 *
 * - bpf_get_current_task_btf() arrived in 5.11. Before it, the task comes
 *   from bpf_get_current_task() and each field through a probe read (slower,
 *   and only there); TASK_READ picks, and the verifier drops the other way.
 * - struct folio arrived in 5.16, and the filemap tracepoints switched from
 *   the head struct page * to struct folio * in 5.17. The head page's first
 *   words (flags, mapping, memcg) overlay the folio's, so only the size
 *   differs: before folios, page-cache pages were order 0 outside tmpfs THP.
 * - page->mem_cgroup (a pointer, in a union with obj_cgroups) became
 *   memcg_data (pointer | flags) in 5.11.
 * - 7.x: an LRU folio's memcg_data holds an obj_cgroup, not a mem_cgroup
 *   ("mm: memcontrol: eliminate the problem of dying memory cgroup for LRU
 *   folios", Muchun Song, the last step of Qi Zheng's "reparent LRU folios"
 *   series, 2026), so that a dying memcg's folios move to its parent by
 *   swapping objcg->memcg. The same series added obj_cgroup.is_root, which
 *   is how that meaning is told from the older one.
 * - folio->flags became memdesc_flags_t in 6.18 (same 8 bytes, new type).
 * - The folio order lived in _folio_order (5.17 .. 6.5), then in the low
 *   byte of _flags_1; 64-bit kernels since 6.9 also keep _nr_pages.
 * - writeback_dirty_page(page, mapping) became writeback_dirty_folio in 5.17:
 *   on_dirty_page / on_dirty_folio.
 * - mm_vmscan_{memcg,direct}_reclaim_begin took (order, gfp) and take
 *   (gfp, order, memcg) in 7.x: on_*_reclaim_begin / on_*_reclaim_begin_gfp.
 * - balance_dirty_pages passed ten numbers (thresh, bg_thresh, dirty, ...)
 *   up to 6.12 and the dirty_throttle_control pointer in their place later
 *   (6.18 has it): on_balance_dirty_pages_thresh / on_balance_dirty_pages.
 * - mm_filemap_get_pages/_fault/_map_pages arrived in 6.12 (one patch; not in
 *   6.1, nor 6.6 .. 6.11). Before, lookups come from the read and fault
 *   functions, by fentry or else kprobe (see "Lookups before 6.12").
 * - kernfs_node.parent became __parent (6.15); this program never walks
 *   parents (user space maps ids to paths), so it is unaffected.
 * - Shared hits (pagecache_sharing.h) need the insertion event's folio (its
 *   memcg, index, order: page->index before folios) and any lookup hook:
 *   extent mode on every kernel the rest runs on; choose_programs reports it.
 *   Exact mode for reads: fexit on filemap_get_pages, whose third argument
 *   is the folio_batch of 5.16+ (a pagevec of pages before: not read here),
 *   with the iov_iter (up to 6.x) or the byte count second; fexit_shared_*.
 */
#define HAVE_TASK_BTF bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf)
#define TASK_READ(task, field) (HAVE_TASK_BTF ? (task)->field : BPF_CORE_READ(task, field))

static __always_inline struct task_struct *current_task(void)
{
	if (HAVE_TASK_BTF)
		return bpf_get_current_task_btf();
	return (struct task_struct *)bpf_get_current_task();
}

/* The registers saved at the running syscall's entry: bpf_task_pt_regs
 * arrived in 5.15; before it, the top of the task's kernel stack (see
 * X86_64_THREAD_SIZE in pagecache.h). */
#define HAVE_TASK_PT_REGS bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs)

static __always_inline int current_syscall_args(__u64 *nr, __u64 args[5])
{
	struct pt_regs *regs;

	if (HAVE_TASK_BTF && HAVE_TASK_PT_REGS)
		regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	else
		regs = (struct pt_regs *)((__u64)BPF_CORE_READ(current_task(), stack) +
					  X86_64_THREAD_SIZE - X86_64_PT_REGS_SIZE);
	*nr = BPF_CORE_READ(regs, orig_ax);
	args[0] = BPF_CORE_READ(regs, di);
	args[1] = BPF_CORE_READ(regs, si);
	args[2] = BPF_CORE_READ(regs, dx);
	args[3] = BPF_CORE_READ(regs, r10);
	args[4] = BPF_CORE_READ(regs, r8);
	return 1;
}

/* The page-cache event's page or folio: a struct folio * from 5.17, the
 * head struct page * before. */
static __always_inline struct address_space *folio_mapping(void *folio)
{
	if (bpf_core_type_exists(struct folio))
		return BPF_CORE_READ((struct folio *)folio, mapping);
	return BPF_CORE_READ((struct page *)folio, mapping);
}

static __always_inline unsigned long folio_flags(struct folio *folio)
{
	if (bpf_core_type_exists(memdesc_flags_t))
		return BPF_CORE_READ(folio, flags.f);
	return BPF_CORE_READ((struct folio___ulong_flags *)folio, flags);
}

static __always_inline __u64 folio_pages(void *page_or_folio)
{
	unsigned long head = 1UL << bpf_core_enum_value(enum pageflags___local, PG_head);
	struct folio *folio = page_or_folio;

	if (!bpf_core_type_exists(struct folio))
		return 1;
	if (!(folio_flags(folio) & head))
		return 1;
	if (bpf_core_field_exists(folio->_nr_pages))
		return BPF_CORE_READ(folio, _nr_pages);
	if (bpf_core_field_exists(struct folio___folio_order, _folio_order))
		return 1UL << BPF_CORE_READ((struct folio___folio_order *)folio, _folio_order);
	return 1UL << (BPF_CORE_READ(folio, _flags_1) & 0xff);
}

static __always_inline __u64 folio_index(void *folio)
{
	if (bpf_core_type_exists(struct folio))
		return BPF_CORE_READ((struct folio *)folio, index);
	return BPF_CORE_READ((struct page *)folio, index);
}

/* The memcg a page or folio is charged to, or 0 if none (not charged, or slab). */
static __always_inline __u64 folio_memcg_id(void *folio)
{
	unsigned long data;
	struct mem_cgroup *memcg;

	if (bpf_core_field_exists(struct folio, memcg_data))
		data = BPF_CORE_READ((struct folio *)folio, memcg_data);
	else if (bpf_core_field_exists(struct page, memcg_data))
		data = BPF_CORE_READ((struct page *)folio, memcg_data);
	else
		data = (unsigned long)BPF_CORE_READ((struct page___mem_cgroup *)folio, mem_cgroup);
	if (!data || (data & MEMCG_DATA_OBJEXTS))
		return 0;
	memcg = (struct mem_cgroup *)(data & ~MEMCG_DATA_FLAGS_MASK);
	if (bpf_core_field_exists(struct obj_cgroup, is_root))
		memcg = BPF_CORE_READ((struct obj_cgroup *)memcg, memcg);
	return BPF_CORE_READ(memcg, css.cgroup, kn, id);
}

/* ---- The engine's side of pagecache_bookkeeping.h ------------------------- */

#define TASK_T struct task_struct *

static __always_inline __u32 task_tid(struct task_struct *task)
{
	return TASK_READ(task, pid);
}

static __always_inline __u32 task_process_id(struct task_struct *task)
{
	return TASK_READ(task, tgid);
}

static __always_inline __u64 task_cset(struct task_struct *task)
{
	return (__u64)TASK_READ(task, cgroups);
}

static __always_inline __u32 task_flags(struct task_struct *task)
{
	return TASK_READ(task, flags);
}

static __always_inline __u64 task_reclaim_state(struct task_struct *task)
{
	return (__u64)TASK_READ(task, reclaim_state);
}

/*
 * The current task's memcg, through its memory-controller css: right on v1
 * and v2 alike (bpf_get_current_cgroup_id() is the v2 cgroup, which on a v1
 * host is not where memory is accounted).
 *
 * With bpf_get_current_task_btf()'s trusted pointer this is a chain of plain
 * loads the verifier turns into faulting-safe reads: no helper calls, which
 * is what keeps the lookup path near the cost of an empty program.
 */
static __always_inline __u64 task_memcg_id(struct task_struct *task)
{
	int memory = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct cgroup_subsys_state *css = 0;
	struct css_set *cset;

	if (HAVE_TASK_BTF) {
		css = task->cgroups->subsys[memory];
		if (!css)
			return 0;
		return css->cgroup->kn->id;
	}
	cset = BPF_CORE_READ(task, cgroups);
	bpf_core_read(&css, sizeof(css), &cset->subsys[memory]);
	if (!css)
		return 0;
	return BPF_CORE_READ(css, cgroup, kn, id);
}

#define MAP_T void *
#define LOOKUPS_MAP (&pagecache_lookups)
#define MISSES_MAP (&pagecache_misses)
#define FILE_PAGES_MAP (&pagecache_file_pages)

static __always_inline void *map_find(void *map, void *key)
{
	return bpf_map_lookup_elem(map, key);
}

static __always_inline long map_insert(void *map, void *key, void *value)
{
	return bpf_map_update_elem(map, key, value, BPF_NOEXIST);
}

#define EXTENTS_MAP (&sharing_extents)
#define SHARING_FILES_MAP (&sharing_files)
#define SHARED_MAP (&pagecache_shared_hits)

static __always_inline long map_remove(void *map, void *key)
{
	return bpf_map_delete_elem(map, key);
}

static __always_inline bool sharing_on(void)
{
	return CONFIG_PAGECACHE_SHARING != 0;
}

static __always_inline bool reads_shared_exactly(void)
{
	return CONFIG_PAGECACHE_SHARED_EXACT != 0;
}

static __always_inline bool file_mode_used(void)
{
	return sharing_file_mode != 0;
}

static __always_inline void file_mode_started(void)
{
	sharing_file_mode = 1;
}

static __always_inline u64 owners_generation(void)
{
	return *(volatile __u64 *)&sharing_generation;
}

static __always_inline void owners_changed(void)
{
	__sync_fetch_and_add(&sharing_generation, 1);
}

/* A task's id in its innermost PID namespace (what getpid()/gettid() return
 * inside a container): thread_pid->numbers[thread_pid->level].nr. */
static __always_inline __u32 task_ns_tid(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid upid = {};

	if (level > 32)
		return 0;
	bpf_probe_read_kernel(&upid, sizeof(upid),
			      (void *)pid + bpf_core_field_offset(struct pid, numbers) +
				      level * bpf_core_type_size(struct upid));
	return upid.nr;
}

static __always_inline int stall_start_save(__u32 *tid, struct stall_start *start)
{
	return bpf_map_update_elem(&stall_starts, tid, start, BPF_ANY);
}

static __always_inline struct stall_start *stall_start_find(__u32 *tid)
{
	return bpf_map_lookup_elem(&stall_starts, tid);
}

static __always_inline void stall_start_drop(__u32 *tid)
{
	bpf_map_delete_elem(&stall_starts, tid);
}

static __always_inline struct stall_event *stall_event_reserve(void)
{
	return bpf_ringbuf_reserve(&stall_events, sizeof(struct stall_event), 0);
}

static __always_inline void stall_event_submit(struct stall_event *event)
{
	bpf_ringbuf_submit(event, 0);
}

static __always_inline struct span_slot_base *span_base_find(__u32 *tgid)
{
	return bpf_map_lookup_elem(&span_slot_bases, tgid);
}

static __always_inline int span_base_save(__u32 *tgid, struct span_slot_base *base)
{
	return bpf_map_update_elem(&span_slot_bases, tgid, base, BPF_ANY);
}

static __always_inline int slots_announcement_output(struct slots_announcement *announcement)
{
	return bpf_ringbuf_output(&slot_announcements, announcement, sizeof(*announcement), 0);
}

static __always_inline void stall_event_task(struct stall_event *event, struct task_struct *task)
{
	event->pid = task_process_id(task);
	event->tid = task_tid(task);
	event->ns_tid = task_ns_tid(task);
	event->ns_pid = task_ns_tid(BPF_CORE_READ(task, group_leader));
	bpf_get_current_comm(event->comm, sizeof(event->comm));
}

/* The what-if curve's samples (pagecache_whatif.h): off until user space
 * writes whatif_config. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct whatif_config);
} whatif_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PAGECACHE_WHATIF_RINGBUF_BYTES);
} whatif_samples SEC(".maps");

const volatile struct whatif_sample *unused_whatif_sample __attribute__((unused));

static __always_inline struct whatif_config *whatif_config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&whatif_config, &zero);
}

static __always_inline struct whatif_sample *whatif_reserve(void)
{
	return bpf_ringbuf_reserve(&whatif_samples, sizeof(struct whatif_sample), 0);
}

static __always_inline void whatif_submit(struct whatif_sample *sample)
{
	bpf_ringbuf_submit(sample, PAGECACHE_WHATIF_SUBMIT_FLAGS);
}

#define PAGECACHE_STALLS
#define PAGECACHE_WHATIF
#define PAGECACHE_SHARING
#include "pagecache_bookkeeping.h"

/* ---- Insertions, dirtying, removals (by owner) ---------------------------- */

/*
 * A mapping as a plain number, the file's name for the lookup bookkeeping,
 * the what-if sampling and the shared hits' extents alike. The verifier keeps
 * a tp_btf argument a trusted pointer even cast to an integer, and refuses
 * any arithmetic on it but this: the difference of two pointers is a scalar
 * (to programs allowed pointer leaks, as these are). Against a fixed address
 * (a map's), it names the mapping as well as its address does, and the
 * what-if sampling can hash it.
 */
static __always_inline __u64 mapping_number(struct address_space *mapping)
{
	return (__u64)mapping - (__u64)&whatif_config;
}

/* The same number for a mapping read from memory (a scalar, from which the
 * verifier refuses to subtract a pointer): the map's address as a scalar,
 * taken once. Insertions, removals and the lookup hooks before 6.12 read
 * theirs; the extents they record must match the lookups' numbers. */
__u64 mapping_base = 0;

static __always_inline __u64 read_mapping_number(__u64 mapping)
{
	__u64 base = mapping_base;

	if (!base) {
		void *map = &whatif_config;

		bpf_probe_read_kernel(&base, sizeof(base), &map);
		mapping_base = base;
	}
	return mapping - base;
}


static __always_inline void file_pages_add(__u64 memcg, struct address_space *mapping,
					   __s64 delta, bool create)
{
	struct inode *host = BPF_CORE_READ(mapping, host);

	file_key_add(memcg, BPF_CORE_READ(host, i_ino), BPF_CORE_READ(host, i_sb, s_dev), delta,
		     create);
}

/* tp_btf arguments: struct folio * from 5.17, struct page * before (see the
 * drift block); every read of them goes through the helpers above. */
SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(on_add_to_page_cache, void *folio)
{
	__u64 owner = folio_memcg_id(folio);
	__u64 nr = folio_pages(folio);
	struct address_space *mapping = folio_mapping(folio);
	struct task_struct *task = current_task();

	count(&pagecache_insertions, &owner, nr);
	file_pages_add(owner, mapping, nr, true);
	sharing_pages_changed(owner, read_mapping_number((__u64)mapping), folio_index(folio), nr);
	SLOTS_EXCLUSIVE(note_insertion(task, task_flags(task), (__u64)mapping, nr));
	return 0;
}

static __always_inline int dirtied(void *folio, struct address_space *mapping)
{
	__u64 owner = folio_memcg_id(folio);

	count(&pagecache_dirtied, &owner, folio_pages(folio));
	SLOTS_EXCLUSIVE(note_dirtying(current_task(), (__u64)mapping));
	return 0;
}

SEC("tp_btf/writeback_dirty_folio")
int BPF_PROG(on_dirty_folio, void *folio, struct address_space *mapping)
{
	return dirtied(folio, mapping);
}

SEC("tp_btf/writeback_dirty_page")
int BPF_PROG(on_dirty_page, void *page, struct address_space *mapping)
{
	return dirtied(page, mapping);
}

SEC("tp_btf/mm_filemap_delete_from_page_cache")
int BPF_PROG(on_delete_from_page_cache, void *folio)
{
	struct removal_key key = {
		.memcg = folio_memcg_id(folio),
		.reason = removal_reason(current_task()),
	};
	__u64 nr = folio_pages(folio);

	count(&pagecache_removals, &key, nr);
	file_pages_add(key.memcg, folio_mapping(folio), -(__s64)nr, false);
	sharing_pages_changed(key.memcg, read_mapping_number((__u64)folio_mapping(folio)),
			      folio_index(folio), -(__s64)nr);
	return 0;
}

/* ---- Lookups (by accessor): the hot path, from 6.12's tracepoints --------- */

SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(on_get_pages, struct address_space *mapping, pgoff_t index, pgoff_t last_index)
{
	SLOTS_EXCLUSIVE(lookup_read(bpf_get_current_task_btf(), mapping_number(mapping), index, last_index));
	return 0;
}

SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(on_fault, struct address_space *mapping, pgoff_t index)
{
	SLOTS_EXCLUSIVE(lookup_fault(bpf_get_current_task_btf(), mapping_number(mapping), index));
	return 0;
}

SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(on_map_pages, struct address_space *mapping, pgoff_t start, pgoff_t last)
{
	SLOTS_EXCLUSIVE(lookup_fault_around(bpf_get_current_task_btf(), mapping_number(mapping), start, last));
	return 0;
}

/* ---- Lookups before 6.12: the read and fault functions --------------------
 *
 * Entered once per read() (generic_file_buffered_read, up to 5.11) or once
 * per batch of it (filemap_get_pages, 5.12 .. 6.11, whose second argument
 * was the iov_iter until 6.x made it the byte count), and once per fault
 * (filemap_fault) and fault-around (filemap_map_pages). The range is what
 * the tracepoints report: from ki_pos, count bytes, clamped to i_size. The
 * loader attaches one fentry or, where fentry is refused, one kprobe per
 * function, whichever this kernel's BTF says exists.
 */
static __always_inline void read_at_entry(struct kiocb *iocb, __u64 count)
{
	struct address_space *mapping = BPF_CORE_READ(iocb, ki_filp, f_mapping);

	lookup_read_entered(current_task(), read_mapping_number((__u64)mapping),
			    BPF_CORE_READ(iocb, ki_pos), count,
			    BPF_CORE_READ(mapping, host, i_size));
}

static __always_inline void fault_at_entry(struct vm_fault *vmf)
{
	lookup_fault(current_task(),
		     read_mapping_number((__u64)BPF_CORE_READ(vmf, vma, vm_file, f_mapping)),
		     BPF_CORE_READ(vmf, pgoff));
}

static __always_inline void fault_around_at_entry(struct vm_fault *vmf, __u64 start, __u64 end)
{
	struct address_space *mapping = BPF_CORE_READ(vmf, vma, vm_file, f_mapping);

	lookup_fault_around_entered(current_task(), read_mapping_number((__u64)mapping), start, end,
				    BPF_CORE_READ(mapping, host, i_size));
}

/* A read function taking (iocb, iter): the byte count is iter->count. */
#define ITER_READ_HOOK(kind, PROG, function, name)                                         \
	SEC(#kind "/" #function)                                                           \
	int PROG(kind##_##name, struct kiocb *iocb, struct iov_iter *iter)                 \
	{                                                                                  \
		read_at_entry(iocb, BPF_CORE_READ(iter, count));                           \
		return 0;                                                                  \
	}

#define LOOKUP_HOOKS(kind, PROG)                                                           \
	ITER_READ_HOOK(kind, PROG, generic_file_buffered_read, buffered_read)              \
	ITER_READ_HOOK(kind, PROG, filemap_get_pages, get_pages_iter)                      \
	SEC(#kind "/filemap_get_pages")                                                    \
	int PROG(kind##_get_pages_count, struct kiocb *iocb, __u64 count)                  \
	{                                                                                  \
		read_at_entry(iocb, count);                                                \
		return 0;                                                                  \
	}                                                                                  \
	SEC(#kind "/filemap_fault")                                                        \
	int PROG(kind##_fault, struct vm_fault *vmf)                                       \
	{                                                                                  \
		fault_at_entry(vmf);                                                       \
		return 0;                                                                  \
	}                                                                                  \
	SEC(#kind "/filemap_map_pages")                                                    \
	int PROG(kind##_map_pages, struct vm_fault *vmf, __u64 start, __u64 end)           \
	{                                                                                  \
		fault_around_at_entry(vmf, start, end);                                    \
		return 0;                                                                  \
	}

LOOKUP_HOOKS(fentry, BPF_PROG)
LOOKUP_HOOKS(kprobe, BPF_KPROBE)

/* ---- Shared hits, exact mode: the folios a read found ---------------------
 *
 * At its exit, filemap_get_pages() has put in fbatch the folios filemap_read()
 * copies the read's next batch from (on its partial-batch path, less the one
 * it dropped), so each folio's memcg is the owner of exactly the pages read
 * from it. The read's own range limits what a large folio counts. fexit
 * only: where it is refused (the host), extent mode serves reads too. Faults
 * keep extent mode: their hooks give a page index, not a folio
 * (docs/sharing.md, "Modes").
 */
#define FOLIO_BATCH_MAX 31 /* PAGEVEC_SIZE since 6.x; 15 before, and nr bounds it */

static __always_inline void shared_read_found(struct kiocb *iocb, __u64 count,
					      struct folio_batch *fbatch)
{
	unsigned int nr = BPF_CORE_READ(fbatch, nr);
	struct address_space *mapping;
	__u64 first, last, reader, owner = 0, pages = 0;
	void *folios;
	int i;

	if (!nr)
		return;
	mapping = BPF_CORE_READ(iocb, ki_filp, f_mapping);
	if (!read_range(BPF_CORE_READ(iocb, ki_pos), count, BPF_CORE_READ(mapping, host, i_size),
			&first, &last))
		return;
	reader = task_memcg_id(current_task());
	folios = (void *)fbatch + bpf_core_field_offset(struct folio_batch, folios);
	/* Consecutive folios of one owner go to pagecache_shared_hits at once. */
	for (i = 0; i < FOLIO_BATCH_MAX && i < nr; i++) {
		void *folio = NULL;
		__u64 folio_owner, n;

		bpf_probe_read_kernel(&folio, sizeof(folio), folios + i * sizeof(folio));
		if (!folio)
			break;
		folio_owner = folio_memcg_id(folio);
		n = pages_in_range(folio_index(folio), folio_pages(folio), first, last);
		if (folio_owner != owner) {
			share_found(reader, owner, pages);
			owner = folio_owner;
			pages = 0;
		}
		pages += n;
	}
	share_found(reader, owner, pages);
}

SEC("fexit/filemap_get_pages")
int BPF_PROG(fexit_shared_iter, struct kiocb *iocb, struct iov_iter *iter,
	     struct folio_batch *fbatch)
{
	SLOTS_EXCLUSIVE(shared_read_found(iocb, BPF_CORE_READ(iter, count), fbatch));
	return 0;
}

SEC("fexit/filemap_get_pages")
int BPF_PROG(fexit_shared_count, struct kiocb *iocb, __u64 count, struct folio_batch *fbatch)
{
	SLOTS_EXCLUSIVE(shared_read_found(iocb, count, fbatch));
	return 0;
}

/* ---- Stalls (the logic: pagecache_bookkeeping.h) --------------------------- */

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(on_memcg_reclaim_begin, int order, unsigned int gfp_flags)
{
	stall_begin(current_task(), STALL_MEMCG_RECLAIM, order, gfp_flags);
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(on_memcg_reclaim_begin_gfp, unsigned int gfp_flags, int order)
{
	stall_begin(current_task(), STALL_MEMCG_RECLAIM, order, gfp_flags);
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(on_memcg_reclaim_end, unsigned long nr_reclaimed)
{
	stall_end(current_task(), STALL_MEMCG_RECLAIM, nr_reclaimed);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(on_direct_reclaim_begin, int order, unsigned int gfp_flags)
{
	stall_begin(current_task(), STALL_DIRECT_RECLAIM, order, gfp_flags);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(on_direct_reclaim_begin_gfp, unsigned int gfp_flags, int order)
{
	stall_begin(current_task(), STALL_DIRECT_RECLAIM, order, gfp_flags);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(on_direct_reclaim_end, unsigned long nr_reclaimed)
{
	stall_end(current_task(), STALL_DIRECT_RECLAIM, nr_reclaimed);
	return 0;
}

/* task_rename(task, comm): the current thread renamed; see slots_announced. */
SEC("tp_btf/task_rename")
int BPF_PROG(on_task_rename, struct task_struct *task, const char *comm)
{
	slots_announced(current_task(), comm);
	return 0;
}

/* balance_dirty_pages(wb, dtc, dirty_ratelimit, task_ratelimit, dirtied,
 * period, pause, start_time): the planned pause. */
SEC("tp_btf/balance_dirty_pages")
int BPF_PROG(on_balance_dirty_pages, void *wb, void *dtc, unsigned long dirty_ratelimit,
	     unsigned long task_ratelimit, unsigned long dirtied, unsigned long period,
	     long pause)
{
	stall_dirty_throttle(current_task(), pause, CONFIG_HZ, dirtied, task_ratelimit);
	return 0;
}

/* Up to 6.12: (wb, thresh, bg_thresh, dirty, bdi_thresh, bdi_dirty,
 * dirty_ratelimit, task_ratelimit, dirtied, period, pause, start_time). */
SEC("tp_btf/balance_dirty_pages")
int BPF_PROG(on_balance_dirty_pages_thresh, void *wb, unsigned long thresh,
	     unsigned long bg_thresh, unsigned long dirty, unsigned long bdi_thresh,
	     unsigned long bdi_dirty, unsigned long dirty_ratelimit, unsigned long task_ratelimit,
	     unsigned long dirtied, unsigned long period, long pause)
{
	stall_dirty_throttle(current_task(), pause, CONFIG_HZ, dirtied, task_ratelimit);
	return 0;
}
