/* Encapsulation for the fast path: the replay of a worker's `ipip` or `gue`
 * decision (dataplane/src/packet/encap.rs). The packet stays as the client
 * sent it; Ethernet padding is cut, the frame grows at its head by the
 * outer headers (bpf_xdp_adjust_head), and the new head is written: the
 * entry's MACs, the tag the frame came with, the family's EtherType, the
 * outer IPv4 or IPv6 header (the inner TOS / traffic class copied, lengths
 * and the IPv4 checksum per packet, the rest from the entry) and, for GUE,
 * the UDP header with checksum 0. The same bytes as the worker's.
 */
#ifndef SWITCHYARD_ENCAP_H
#define SWITCHYARD_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"
#include "consts.h"
#include "structs.h"

#define ETH_TAGGED_HLEN (ETH_HLEN + 4)

/* What an encapsulated flow's entry says, both families. */
struct encap_plan {
	__u8 tunnel;
	bool ipv6;
	const __u8 *eth_dst;
	const __u8 *eth_src;
	const void *saddr;	/* 4 or 16 bytes, network order */
	const void *daddr;
	__be16 sport;		/* GUE */
	__be16 dport;
	__u16 csum_base;	/* IPv4: outer_csum_base */
	__u16 inner_mtu;
};

/* RFC 1071 fold; csum_fold's twin, kept here so this header stands alone. */
static __always_inline __u16 encap_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

static __always_inline __u32 outer_len(const struct encap_plan *plan)
{
	__u32 len = plan->ipv6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);

	return plan->tunnel == TUNNEL_GUE ? len + sizeof(struct udphdr) : len;
}

/* Wraps the frame `pkt` describes as `plan` says. Returns -1, the packet
 * unchanged (its Ethernet padding may be cut), when it is not for the fast
 * path: larger than the inner MTU, or headers the verifier cannot see.
 */
static __always_inline int fast_encap(struct xdp_md *ctx,
				      const struct packet_desc *pkt,
				      const struct encap_plan *plan)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 overhead = outer_len(plan);
	__u32 l2 = ETH_HLEN;
	__u32 ip_len, frame_len;
	__u8 tag[4] = {};
	__u8 class;
	__u8 *inner;
	__u8 *head;

	/* A constant on each path, for the verifier. */
	if (pkt->l3_off == ETH_TAGGED_HLEN)
		l2 = ETH_TAGGED_HLEN;
	else if (pkt->l3_off != ETH_HLEN)
		return -1;
	inner = data + l2;
	if (plan->ipv6) {
		if ((void *)(inner + sizeof(struct ipv6hdr)) > data_end)
			return -1;
		ip_len = sizeof(struct ipv6hdr) +
			 bpf_ntohs(((struct ipv6hdr *)inner)->payload_len);
		class = (inner[0] << 4) | (inner[1] >> 4);
	} else {
		if ((void *)(inner + sizeof(struct iphdr)) > data_end)
			return -1;
		ip_len = bpf_ntohs(((struct iphdr *)inner)->tot_len);
		class = inner[1];
	}
	if (ip_len > plan->inner_mtu)
		return -1;
	frame_len = data_end - data;
	if (frame_len < l2 + ip_len)
		return -1;
	if (l2 == ETH_TAGGED_HLEN)
		__builtin_memcpy(tag, data + 2 * ETH_ALEN, sizeof(tag));
	/* Padding of a short frame belongs to no header: the worker cuts it. */
	if (frame_len > l2 + ip_len &&
	    bpf_xdp_adjust_tail(ctx, (int)(l2 + ip_len) - (int)frame_len))
		return -1;
	if (bpf_xdp_adjust_head(ctx, -(int)overhead))
		return -1;
	/* Never taken past here: the frame holds the L2 header, the outer
	 * headers and an inner IP header at least.
	 */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	head = data;
	/* A constant bound: the verifier of older kernels (6.1) does not
	 * carry a variable one over to the fixed offsets written below.
	 */
	if ((void *)(head + ETH_TAGGED_HLEN) > data_end)
		return -1;
	__builtin_memcpy(head, plan->eth_dst, ETH_ALEN);
	__builtin_memcpy(head + ETH_ALEN, plan->eth_src, ETH_ALEN);
	if (l2 == ETH_TAGGED_HLEN)
		__builtin_memcpy(head + 2 * ETH_ALEN, tag, sizeof(tag));
	*(__be16 *)(head + l2 - 2) =
		bpf_htons(plan->ipv6 ? ETH_P_IPV6 : ETH_P_IP);

	head += l2;
	if (plan->ipv6) {
		__u8 *ip6 = head;

		if ((void *)(ip6 + sizeof(struct ipv6hdr)) > data_end)
			return -1;
		ip6[0] = 0x60 | (class >> 4);
		ip6[1] = class << 4;
		ip6[2] = 0;
		ip6[3] = 0;
		*(__be16 *)(ip6 + 4) =
			bpf_htons(overhead - sizeof(struct ipv6hdr) + ip_len);
		ip6[6] = plan->tunnel == TUNNEL_GUE ? IPPROTO_UDP : IPPROTO_IPV6;
		ip6[7] = OUTER_TTL;
		__builtin_memcpy(ip6 + 8, plan->saddr, 16);
		__builtin_memcpy(ip6 + 24, plan->daddr, 16);
		head += sizeof(struct ipv6hdr);
	} else {
		struct iphdr *ip = (void *)head;
		__u16 tot_len = overhead + ip_len;

		if ((void *)(head + sizeof(struct iphdr)) > data_end)
			return -1;
		head[0] = 0x45;
		head[1] = class;
		ip->tot_len = bpf_htons(tot_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(OUTER_IPV4_DF);
		ip->ttl = OUTER_TTL;
		ip->protocol = plan->tunnel == TUNNEL_GUE ? IPPROTO_UDP : IPPROTO_IPIP;
		__builtin_memcpy(&ip->saddr, plan->saddr, 4);
		__builtin_memcpy(&ip->daddr, plan->daddr, 4);
		/* The entry's sum holds every word but the TOS byte and the
		 * total length (RFC 1071; the order of a sum does not matter).
		 */
		ip->check = bpf_htons(~encap_fold((__u32)plan->csum_base + class +
						   tot_len));
		head += sizeof(struct iphdr);
	}
	if (plan->tunnel == TUNNEL_GUE) {
		struct udphdr *udp = (void *)head;

		if ((void *)(udp + 1) > data_end)
			return -1;
		udp->source = plan->sport;
		udp->dest = plan->dport;
		udp->len = bpf_htons(sizeof(struct udphdr) + ip_len);
		udp->check = 0;
	}
	return 0;
}

#endif /* SWITCHYARD_ENCAP_H */
