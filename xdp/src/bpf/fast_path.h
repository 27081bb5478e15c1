/* The fast path: replays a worker's decision for a flow it has already
 * decided, from flow_cache (flow_cache6 for IPv6), without the AF_XDP round
 * trip. It holds no policy
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
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"
#include "consts.h"
#include "count.h"
#include "encap.h"
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

/* Whether an entry of stats slot `slot` carrying `generation` was decided
 * under its listener's current config.
 */
static __always_inline bool fast_epoch_current(__u32 slot, __u32 generation)
{
	__u32 *epoch = bpf_map_lookup_elem(&fast_epochs, &slot);

	return epoch && *epoch == generation;
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

/* The two 16-bit words of a network-order 32-bit field, summed. */
static __always_inline __u32 sum_be32(__be32 value)
{
	__u32 host = bpf_ntohl(value);

	return (host >> 16) + (host & 0xffff);
}

/* Whether the frame's TCP/UDP checksum is one its sender left for the
 * device to finish (Linux CHECKSUM_PARTIAL: tx checksum offload on, the
 * default on veth): the field holds the pseudo-header sum, folded and not
 * inverted. No incremental update can finish it, so such a frame goes to a
 * worker, which computes the checksum in full. A complete checksum matches
 * by chance about once in 65,535 frames; the worker gets those right too.
 * A UDP field of 0 (no checksum) never matches: the sum is never 0. The
 * twin of switchyard_wire::checksum::is_partial. The IPv6 pseudo-header
 * (RFC 8200 section 8.1) sums to the same words: the addresses, the
 * upper-layer length (below 65536 here) and the next header.
 */
static __always_inline bool is_checksum_partial(const struct packet_desc *pkt,
						bool ipv6)
{
	__u32 sum = pkt->proto + pkt->l4_len;
	int i;

	if (!ipv6)
		return csum_fold(sum + sum_be32(pkt->saddr) +
				 sum_be32(pkt->daddr)) == pkt->l4_check;
#pragma unroll
	for (i = 0; i < IPV6_ADDR_WORDS; i++)
		sum += sum_be32(pkt->saddr6[i]) + sum_be32(pkt->daddr6[i]);
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

static __always_inline void count_fast(__u32 slot, __u64 bytes)
{
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

/* Rewrites the TCP/UDP ports and checksum and the MACs, the part of a
 * rewrite both families share. The offsets come from parse_packet and
 * every access is bounds-checked again here, for the verifier.
 */
static __always_inline int fast_rewrite_l2_l4(void *data, void *data_end,
					      const struct packet_desc *pkt,
					      __be16 sport, __be16 dport,
					      __u16 l4_csum_diff,
					      const __u8 *eth_dst,
					      const __u8 *eth_src)
{
	struct ethhdr *eth = data;
	__u32 l4_off = pkt->l4_off;
	struct tcphdr *tcp;
	struct udphdr *udp;
	__u16 check;

	if ((void *)(eth + 1) > data_end || l4_off > MAX_HEADER_OFFSET)
		return -1;
	if (pkt->proto == IPPROTO_TCP) {
		tcp = data + l4_off;
		if ((void *)(tcp + 1) > data_end)
			return -1;
		tcp->check = bpf_htons(csum_adjust(bpf_ntohs(tcp->check),
						   l4_csum_diff));
		tcp->source = sport;
		tcp->dest = dport;
	} else {
		udp = data + l4_off;
		if ((void *)(udp + 1) > data_end)
			return -1;
		check = bpf_ntohs(udp->check);
		/* 0 is "no checksum" (RFC 768) and stays so; a computed 0 is
		 * sent as all ones. (A worker never caches an IPv6 datagram
		 * without one: RFC 8200 section 8.1 makes it mandatory.)
		 */
		if (check != 0) {
			check = csum_adjust(check, l4_csum_diff);
			udp->check = bpf_htons(check ? check : 0xffff);
		}
		udp->source = sport;
		udp->dest = dport;
	}
	__builtin_memcpy(eth->h_dest, eth_dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth_src, ETH_ALEN);
	return 0;
}

/* Rewrites an IPv4 frame as `action` says. */
static __always_inline int fast_rewrite(void *data, void *data_end,
					const struct packet_desc *pkt,
					const struct flow_action *action)
{
	__u32 l3_off = pkt->l3_off;
	struct iphdr *iph;

	if (l3_off > MAX_HEADER_OFFSET)
		return -1;
	iph = data + l3_off;
	if ((void *)(iph + 1) > data_end)
		return -1;
	if (fast_rewrite_l2_l4(data, data_end, pkt, action->sport,
			       action->dport, action->l4_csum_diff,
			       action->eth_dst, action->eth_src) != 0)
		return -1;
	iph->check = bpf_htons(csum_adjust(bpf_ntohs(iph->check),
					   action->ip_csum_diff));
	iph->saddr = action->saddr;
	iph->daddr = action->daddr;
	return 0;
}

/* Rewrites an IPv6 frame as `action` says; the header has no checksum. */
static __always_inline int fast_rewrite6(void *data, void *data_end,
					 const struct packet_desc *pkt,
					 const struct flow_action6 *action)
{
	__u32 l3_off = pkt->l3_off;
	struct ipv6hdr *ip6;

	if (l3_off > MAX_HEADER_OFFSET)
		return -1;
	ip6 = data + l3_off;
	if ((void *)(ip6 + 1) > data_end)
		return -1;
	if (fast_rewrite_l2_l4(data, data_end, pkt, action->sport,
			       action->dport, action->l4_csum_diff,
			       action->eth_dst, action->eth_src) != 0)
		return -1;
	__builtin_memcpy(&ip6->saddr, action->saddr, sizeof(action->saddr));
	__builtin_memcpy(&ip6->daddr, action->daddr, sizeof(action->daddr));
	return 0;
}

/* Whether an entry with these fields applies to this frame; counts why
 * not. The checks and their order are the same for both families.
 */
static __always_inline bool fast_applies(const struct packet_desc *pkt,
					 bool ipv6, __u16 stats_slot,
					 __u32 generation, __u32 l2_epoch,
					 __u16 egress_slot)
{
	if (unlikely(!fast_epoch_current(stats_slot, generation) ||
		     l2_epoch != (__u32)fast_state_get(FAST_STATE_L2_EPOCH))) {
		count(FAST_STALE);
		return false;
	}
	if (pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & TCP_CONTROL_FLAGS)) {
		count(FAST_TCP_CONTROL);
		return false;
	}
	/* A frame the workers would drop as malformed is theirs to count. */
	if (unlikely(!pkt->fast_ok))
		return false;
	if (unlikely(is_checksum_partial(pkt, ipv6))) {
		count(FAST_PARTIAL_CHECKSUM);
		return false;
	}
	/* The workers install no entry for a closed egress; this catches the
	 * ones installed before it closed.
	 */
	if (unlikely(egress_closed(egress_slot))) {
		count(FAST_EGRESS_CLOSED);
		return false;
	}
	return true;
}

/* Counts a rewritten frame of `len` bytes as it arrived (an encapsulated
 * one counts what the client sent, as the workers do) in its entry and its
 * stats slot, and says how to send it.
 */
static __always_inline enum fast_result fast_sent(struct xdp_md *ctx,
						  __u64 len,
						  __u64 *packets, __u64 *bytes,
						  __u32 *last_seen,
						  __u16 stats_slot,
						  __u32 egress_ifindex,
						  __u16 egress_slot,
						  __u32 *egress_slot_out)
{
	/* Several CPUs may carry one flow: the entry's counters are shared. */
	__sync_fetch_and_add(packets, 1);
	__sync_fetch_and_add(bytes, len);
	*last_seen = bpf_ktime_get_coarse_ns() >> LAST_SEEN_SHIFT;
	count_fast(stats_slot, len);

	if (egress_ifindex == ctx->ingress_ifindex) {
		count(FAST_TX);
		return FAST_SENT_TX;
	}
	*egress_slot_out = egress_slot;
	count(FAST_REDIRECT);
	return FAST_SENT_REDIRECT;
}

/* Looks the frame's IPv4 flow up in flow_cache and, if its entry applies,
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
	__u64 len;
	struct flow_key key = {
		.saddr = pkt->saddr,
		.daddr = pkt->daddr,
		.sport = pkt->sport,
		.dport = pkt->dport,
		.proto = pkt->proto,
	};

	if (!fast_state_get(FAST_STATE_ENABLED))
		return FAST_MISS;
	action = bpf_map_lookup_elem(&flow_cache, &key);
	if (!action)
		return FAST_MISS;
	if (!fast_applies(pkt, false, action->stats_slot, action->generation,
			  action->l2_epoch, action->egress_slot))
		return FAST_SLOW;
	len = data_end - data;
	if (action->tunnel != TUNNEL_NONE) {
		struct encap_plan plan = {
			.tunnel = action->tunnel,
			.ipv6 = false,
			.eth_dst = action->eth_dst,
			.eth_src = action->eth_src,
			.saddr = &action->saddr,
			.daddr = &action->daddr,
			.sport = action->sport,
			.dport = action->dport,
			.csum_base = action->outer_csum_base,
			.inner_mtu = action->inner_mtu,
		};

		if (unlikely(fast_encap(ctx, pkt, &plan) != 0))
			return FAST_SLOW;
	} else if (unlikely(fast_rewrite(data, data_end, pkt, action) != 0)) {
		return FAST_SLOW;
	}
	return fast_sent(ctx, len, &action->packets, &action->bytes,
			 &action->last_seen, action->stats_slot,
			 action->egress_ifindex, action->egress_slot,
			 egress_slot);
}

/* fast_path for IPv6 flows, from flow_cache6. */
static __always_inline enum fast_result fast_path6(struct xdp_md *ctx,
						   const struct packet_desc *pkt,
						   __u32 *egress_slot)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow_action6 *action;
	__u64 len;
	struct flow_key6 key = {
		.sport = pkt->sport,
		.dport = pkt->dport,
		.proto = pkt->proto,
	};

	if (!fast_state_get(FAST_STATE_ENABLED))
		return FAST_MISS;
	__builtin_memcpy(key.saddr, pkt->saddr6, sizeof(key.saddr));
	__builtin_memcpy(key.daddr, pkt->daddr6, sizeof(key.daddr));
	action = bpf_map_lookup_elem(&flow_cache6, &key);
	if (!action)
		return FAST_MISS;
	if (!fast_applies(pkt, true, action->stats_slot, action->generation,
			  action->l2_epoch, action->egress_slot))
		return FAST_SLOW;
	len = data_end - data;
	if (action->tunnel != TUNNEL_NONE) {
		struct encap_plan plan = {
			.tunnel = action->tunnel,
			.ipv6 = true,
			.eth_dst = action->eth_dst,
			.eth_src = action->eth_src,
			.saddr = action->saddr,
			.daddr = action->daddr,
			.sport = action->sport,
			.dport = action->dport,
			.inner_mtu = action->inner_mtu,
		};

		if (unlikely(fast_encap(ctx, pkt, &plan) != 0))
			return FAST_SLOW;
	} else if (unlikely(fast_rewrite6(data, data_end, pkt, action) != 0)) {
		return FAST_SLOW;
	}
	return fast_sent(ctx, len, &action->packets, &action->bytes,
			 &action->last_seen, action->stats_slot,
			 action->egress_ifindex, action->egress_slot,
			 egress_slot);
}

#endif /* SWITCHYARD_FAST_PATH_H */
