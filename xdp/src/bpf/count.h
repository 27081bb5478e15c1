/* The steering program's per-reason frame counters (enum steer_counter). */
#ifndef SWITCHYARD_COUNT_H
#define SWITCHYARD_COUNT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"
#include "maps.h"

static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &counter);

	/* Per-CPU slot: no other writer, no atomic needed. */
	if (likely(value))
		*value += 1;
}

#endif /* SWITCHYARD_COUNT_H */
