// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Test object for the loader's ring-buffer path: one record per
 * mm_filemap_get_pages event of the process named by target_tgid. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct record {
	__u32 tgid;
	__u32 pad;
	__u64 index;
	__u64 last;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target_tgid SEC(".maps");

SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(emit, struct address_space *mapping, pgoff_t index, pgoff_t last)
{
	__u32 zero = 0, tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *want = bpf_map_lookup_elem(&target_tgid, &zero);
	struct record *r;

	if (!want || *want != tgid)
		return 0;
	r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r)
		return 0;
	r->tgid = tgid;
	r->pad = 0;
	r->index = index;
	r->last = last;
	bpf_ringbuf_submit(r, 0);
	return 0;
}
