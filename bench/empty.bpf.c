// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Empty programs on the agent's tracepoints: the cost floor of a BPF
 * program being attached at all (bench/bpf_cost.py compares against it). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(empty_add, struct folio *folio) { return 0; }

SEC("tp_btf/mm_filemap_delete_from_page_cache")
int BPF_PROG(empty_delete, struct folio *folio) { return 0; }

SEC("tp_btf/writeback_dirty_folio")
int BPF_PROG(empty_dirty, struct folio *folio, struct address_space *mapping) { return 0; }

SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(empty_get_pages, struct address_space *mapping, pgoff_t index, pgoff_t last)
{
	return 0;
}

SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(empty_fault, struct address_space *mapping, pgoff_t index) { return 0; }

SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(empty_map_pages, struct address_space *mapping, pgoff_t start, pgoff_t last)
{
	return 0;
}

/* The BCC engine attaches raw tracepoints (RAW_TRACEPOINT_PROBE in
 * bpf/pagecache_bcc.c): its floor is an empty program of that attach type. */
SEC("raw_tp/mm_filemap_get_pages")
int empty_raw_get_pages(void *ctx) { return 0; }

SEC("raw_tp/mm_filemap_fault")
int empty_raw_fault(void *ctx) { return 0; }

SEC("raw_tp/mm_filemap_map_pages")
int empty_raw_map_pages(void *ctx) { return 0; }
