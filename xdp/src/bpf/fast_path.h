/* The fast path: replays a worker's decision for a flow it has already
 * decided, from flow_cache, without the AF_XDP round trip. It holds no policy
 * of its own. An entry applies only while it carries its listener's epoch
 * (fast_epochs) and the running L2 epoch, and only out of an interface the
 * kernel delivers XDP frames on; SYN, FIN and RST segments, and frames whose
 * L4 checksum the sender left partial, always go to the workers. The rewrite
 * is the workers' (dataplane/src/packet/rewrite.rs): same fields, same RFC 1624
 * arithmetic, so both paths emit the same bytes.
 */
#ifndef SWITCHYARD_FAST_PATH_H
#define SWITCHYARD_FAST_PATH_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"
#include "consts.h"
#include "count.h"
#include "maps.h"
#include "structs.h"

/* What the fast path did with a frame. */
enum fast_result {
	FAST_MISS,	/* no entry (or the fast path is off): slow path */
	FAST_SLOW,	/* entry not applicable to this frame: slow path */
	FAST_SENT_TX,	/* rewritten, verdict XDP_TX */
	FAST_SENT_REDIRECT,	/* rewritten, verdict XDP_REDIRECT */
};

static __always_inline __u64 fast_state_get(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&fast_state, &index);

	return value ? *value : 0;
}

/* Whether `action` was decided under its listener's current config. */
static __always_inline bool fast_epoch_current(const struct flow_action *action)
{
	__u32 slot = action->stats_slot;
	__u32 *epoch = bpf_map_lookup_elem(&fast_epochs, &slot);

	return epoch && *epoch == action->generation;
}

/* RFC 1071 fold with end-around carry; two rounds cover any __u32. */
static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* RFC 1624 eqn. 3, HC' = ~(~HC + m'-m), with the difference already folded:
 * the twin of checksum::adjust in dataplane/src/packet/checksum.rs.
 */
static __always_inline __u16 csum_adjust(__u16 check, __u16 diff)
{
	return ~csum_fold((__u32)(__u16)~check + diff);
}

/* Whether the frame's TCP/UDP checksum is one its sender left for the
 * device to finish (Linux CHECKSUM_PARTIAL: tx checksum offload on, the
 * default on veth): the field holds the pseudo-header sum, folded and not
 * inverted. No incremental update can finish it, so such a frame goes to a
 * worker, which computes the checksum in full. A complete checksum matches
 * by chance about once in 65,535 frames; the worker gets those right too.
 * A UDP field of 0 (no checksum) never matches: the sum is never 0. The
 * twin of switchyard_wire::checksum::is_partial.
 */
static __always_inline bool is_checksum_partial(const struct packet_desc *pkt)
{
	__u32 saddr = bpf_ntohl(pkt->saddr);
	__u32 daddr = bpf_ntohl(pkt->daddr);
	__u32 sum = (saddr >> 16) + (saddr & 0xffff) + (daddr >> 16) +
		    (daddr & 0xffff) + pkt->proto + pkt->l4_len;

	return csum_fold(sum) == pkt->l4_check;
}

/* Whether frames must not leave by interface slot `slot` (see
 * FAST_STATE_EGRESS_CLOSED): the kernel would drop them there, silently.
 */
static __always_inline bool egress_closed(__u16 slot)
{
	if (slot >= MAX_IFACES)
		return true;
	return (fast_state_get(FAST_STATE_EGRESS_CLOSED) >> slot) & 1;
}

static __always_inline void count_fast(const struct flow_action *action,
				       __u64 bytes)
{
	__u32 slot = action->stats_slot;
	struct fast_counters *stats;

	if (slot == STATS_SLOT_NONE)
		return;
	stats = bpf_map_lookup_elem(&fast_stats, &slot);
	/* Per-CPU slot: no other writer, no atomic needed. */
	if (likely(stats)) {
		stats->packets += 1;
		stats->bytes += bytes;
	}
}

/* Rewrites the frame as `action` says. The offsets come from parse_packet
 * and every access is bounds-checked again here, for the verifier.
 */
static __always_inline int fast_rewrite(void *data, void *data_end,
					const struct packet_desc *pkt,
					const struct flow_action *action)
{
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct tcphdr *tcp;
	struct udphdr *udp;
	__u16 check;

	iph = data + pkt->l3_off;
	if ((void *)(eth + 1) > data_end || (void *)(iph + 1) > data_end)
		return -1;
	if (pkt->proto == IPPROTO_TCP) {
		tcp = data + pkt->l4_off;
		if ((void *)(tcp + 1) > data_end)
			return -1;
		tcp->check = bpf_htons(csum_adjust(bpf_ntohs(tcp->check),
						   action->l4_csum_diff));
		tcp->source = action->sport;
		tcp->dest = action->dport;
	} else {
		udp = data + pkt->l4_off;
		if ((void *)(udp + 1) > data_end)
			return -1;
		check = bpf_ntohs(udp->check);
		/* 0 is "no checksum" (RFC 768) and stays so; a computed 0 is
		 * sent as all ones.
		 */
		if (check != 0) {
			check = csum_adjust(check, action->l4_csum_diff);
			udp->check = bpf_htons(check ? check : 0xffff);
		}
		udp->source = action->sport;
		udp->dest = action->dport;
	}
	iph->check = bpf_htons(csum_adjust(bpf_ntohs(iph->check),
					   action->ip_csum_diff));
	iph->saddr = action->saddr;
	iph->daddr = action->daddr;
	__builtin_memcpy(eth->h_dest, action->eth_dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, action->eth_src, ETH_ALEN);
	return 0;
}

/* Looks the frame's flow up in flow_cache and, if its entry applies,
 * rewrites the frame and says how to send it. *egress_slot is set for
 * FAST_SENT_REDIRECT.
 */
static __always_inline enum fast_result fast_path(struct xdp_md *ctx,
						  const struct packet_desc *pkt,
						  __u32 *egress_slot)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow_action *action;
	struct flow_key key = {
		.saddr = pkt->saddr,
		.daddr = pkt->daddr,
		.sport = pkt->sport,
		.dport = pkt->dport,
		.proto = pkt->proto,
	};
	__u64 bytes = data_end - data;

	if (!fast_state_get(FAST_STATE_ENABLED))
		return FAST_MISS;
	action = bpf_map_lookup_elem(&flow_cache, &key);
	if (!action)
		return FAST_MISS;
	if (unlikely(!fast_epoch_current(action) ||
		     action->l2_epoch != (__u32)fast_state_get(FAST_STATE_L2_EPOCH))) {
		count(FAST_STALE);
		return FAST_SLOW;
	}
	if (pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & TCP_CONTROL_FLAGS)) {
		count(FAST_TCP_CONTROL);
		return FAST_SLOW;
	}
	/* A frame the workers would drop as malformed is theirs to count. */
	if (unlikely(!pkt->fast_ok))
		return FAST_SLOW;
	if (unlikely(is_checksum_partial(pkt))) {
		count(FAST_PARTIAL_CHECKSUM);
		return FAST_SLOW;
	}
	/* The workers install no entry for a closed egress; this catches the
	 * ones installed before it closed.
	 */
	if (unlikely(egress_closed(action->egress_slot))) {
		count(FAST_EGRESS_CLOSED);
		return FAST_SLOW;
	}
	if (unlikely(fast_rewrite(data, data_end, pkt, action) != 0))
		return FAST_SLOW;

	/* Several CPUs may carry one flow: the entry's counters are shared. */
	__sync_fetch_and_add(&action->packets, 1);
	__sync_fetch_and_add(&action->bytes, bytes);
	action->last_seen = bpf_ktime_get_coarse_ns() >> LAST_SEEN_SHIFT;
	count_fast(action, bytes);

	if (action->egress_ifindex == ctx->ingress_ifindex) {
		count(FAST_TX);
		return FAST_SENT_TX;
	}
	*egress_slot = action->egress_slot;
	count(FAST_REDIRECT);
	return FAST_SENT_REDIRECT;
}

#endif /* SWITCHYARD_FAST_PATH_H */
