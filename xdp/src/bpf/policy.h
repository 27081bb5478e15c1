/* Source ranges, the one piece of traffic policy the steering program
 * enforces itself: a frame to a VIP listener from a source the listener's
 * ranges do not admit is dropped here, before the fast path could replay
 * a cached flow and before a worker spends a cycle on it, so a policy
 * change reaches flows already open at once. The verdict is data the
 * daemon wrote (source_ranges in maps.h); the program only looks it up.
 * Limits that count flows (rates, flows at once) stay with the workers.
 */
#ifndef SWITCHYARD_POLICY_H
#define SWITCHYARD_POLICY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"
#include "consts.h"
#include "count.h"
#include "maps.h"
#include "structs.h"

static __always_inline bool ranges_on(__u32 family)
{
	__u32 zero = 0;
	__u32 *state = bpf_map_lookup_elem(&policy_state, &zero);

	return state && (*state & family);
}

static __always_inline void count_denied(const struct packet_desc *pkt)
{
	struct service_key key = {
		.addr = pkt->daddr,
		.port = pkt->dport,
		.proto = pkt->proto,
	};
	struct service_key6 key6 = {
		.port = pkt->dport,
		.proto = pkt->proto,
	};
	__u64 *value;

	count(DROP_SOURCE_DENIED);
	if (pkt->is_ipv6) {
		__builtin_memcpy(key6.addr, pkt->daddr6, sizeof(key6.addr));
		value = bpf_map_lookup_elem(&source_denied6, &key6);
	} else {
		value = bpf_map_lookup_elem(&source_denied, &key);
	}
	/* Per-CPU value: no other writer, no atomic needed. */
	if (likely(value))
		*value += 1;
}

static __always_inline bool denied_by_ranges(const struct packet_desc *pkt)
{
	struct source_range_key key = {
		.prefixlen = SOURCE_RANGE_LISTENER_BITS + 32,
		.port = pkt->dport,
		.proto = pkt->proto,
		.vip = pkt->daddr,
		.src = pkt->saddr,
	};
	struct source_range_key6 key6 = {
		.prefixlen = SOURCE_RANGE6_LISTENER_BITS + 128,
		.port = pkt->dport,
		.proto = pkt->proto,
	};
	__u8 *verdict;

	if (pkt->is_ipv6) {
		if (!ranges_on(POLICY_RANGES_V6))
			return false;
		__builtin_memcpy(key6.vip, pkt->daddr6, sizeof(key6.vip));
		__builtin_memcpy(key6.src, pkt->saddr6, sizeof(key6.src));
		verdict = bpf_map_lookup_elem(&source_ranges6, &key6);
	} else {
		if (!ranges_on(POLICY_RANGES_V4))
			return false;
		verdict = bpf_map_lookup_elem(&source_ranges, &key);
	}
	/* No entry: the destination is no listener with ranges. */
	return verdict && *verdict == SOURCE_DENY;
}

/* Whether the frame (TCP or UDP, parsed) is to be dropped for its source;
 * counted when it is.
 */
static __always_inline bool denied_source(const struct packet_desc *pkt)
{
	if (likely(!denied_by_ranges(pkt)))
		return false;
	count_denied(pkt);
	return true;
}

#endif /* SWITCHYARD_POLICY_H */
