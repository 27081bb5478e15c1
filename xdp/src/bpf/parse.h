/* Header parsing for the steering program: Ethernet, at most one 802.1Q or
 * 802.1ad tag, IPv4 (options allowed) or IPv6 (at most MAX_IPV6_EXT_HEADERS
 * extension headers), and the ports of TCP/UDP. Every access
 * is preceded by a bounds check against data_end; parsing never writes the
 * packet and never decides a verdict.
 */
#ifndef SWITCHYARD_PARSE_H
#define SWITCHYARD_PARSE_H

#include <stdbool.h>

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"
#include "consts.h"
#include "structs.h"

enum parse_result {
	PARSE_OK,	/* TCP/UDP, unfragmented: packet_desc filled */
	PARSE_NOT_IP,	/* neither IPv4 nor IPv6 after at most one VLAN tag */
	/* The ones below fill the addresses, the protocol and l4_off only. */
	PARSE_FRAGMENT,	/* IPv4 fragment (first or later), IPv6 Fragment header */
	PARSE_ICMP,	/* ICMP, or ICMPv6 after the extension headers */
	PARSE_NOT_L4,	/* another upper-layer protocol */
	PARSE_EXT_TOO_LONG,	/* more than MAX_IPV6_EXT_HEADERS extension headers */
	PARSE_MALFORMED,	/* truncated or invalid header */
};

static __always_inline bool is_vlan_proto(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) ||
	       proto == bpf_htons(ETH_P_8021AD);
}

/* Sets *l3_off and *l3_proto past the Ethernet header and one VLAN tag. A
 * second tag is left in *l3_proto, so QinQ frames are "not IP".
 */
static __always_inline int parse_eth(void *data, void *data_end,
				     __u64 *l3_off, __be16 *l3_proto)
{
	struct ethhdr *eth = data;
	struct vlan_hdr *vlan;

	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	*l3_proto = eth->h_proto;
	*l3_off = sizeof(*eth);

	if (is_vlan_proto(*l3_proto)) {
		vlan = data + *l3_off;
		if ((void *)(vlan + 1) > data_end)
			return PARSE_MALFORMED;
		*l3_proto = vlan->encap_proto;
		*l3_off += sizeof(*vlan);
	}
	return PARSE_OK;
}

/* Reads the ports of a TCP or UDP header at l4_off. The whole fixed header
 * must be present: a segment cut inside it is malformed, not steerable.
 */
static __always_inline int parse_ports(void *data, void *data_end, __u64 l4_off,
				       __u64 l4_end, struct packet_desc *pkt)
{
	struct tcphdr *tcp;
	struct udphdr *udp;
	__u64 len;

	if (pkt->proto == IPPROTO_TCP) {
		tcp = data + l4_off;
		if ((void *)(tcp + 1) > data_end)
			return PARSE_MALFORMED;
		pkt->sport = tcp->source;
		pkt->dport = tcp->dest;
		/* Byte 13 of the header: CWR ECE URG ACK PSH RST SYN FIN. */
		pkt->tcp_flags = ((__u8 *)tcp)[13];
		len = tcp->doff * 4;
		pkt->fast_ok = pkt->fast_ok && tcp->doff >= TCP_DOFF_MIN &&
			       l4_off + len <= l4_end;
		pkt->l4_len = l4_end - l4_off;
		pkt->l4_check = bpf_ntohs(tcp->check);
		return PARSE_OK;
	}

	udp = data + l4_off;
	if ((void *)(udp + 1) > data_end)
		return PARSE_MALFORMED;
	pkt->sport = udp->source;
	pkt->dport = udp->dest;
	len = bpf_ntohs(udp->len);
	pkt->fast_ok = pkt->fast_ok && len >= sizeof(*udp) && l4_off + len <= l4_end;
	pkt->l4_len = len;
	pkt->l4_check = bpf_ntohs(udp->check);
	return PARSE_OK;
}

static __always_inline int parse_ipv4(void *data, void *data_end, __u64 l3_off,
				      struct packet_desc *pkt)
{
	struct iphdr *iph = data + l3_off;
	__u64 l4_off, l3_end;

	if ((void *)(iph + 1) > data_end)
		return PARSE_MALFORMED;
	if (unlikely(iph->version != IPVERSION || iph->ihl < IPV4_IHL_MIN))
		return PARSE_MALFORMED;

	pkt->saddr = iph->saddr;
	pkt->daddr = iph->daddr;
	pkt->proto = iph->protocol;
	pkt->l3_off = l3_off;
	l4_off = l3_off + iph->ihl * IPV4_IHL_WORD_BYTES;
	pkt->l4_off = l4_off;
	/* A first fragment carries ports, but the fragments after it do not:
	 * all of them go one way, by address, to the workers (which follow the
	 * first fragment's decision) or the kernel.
	 */
	if (iph->frag_off &
	    bpf_htons(IPV4_MORE_FRAGMENTS | IPV4_FRAG_OFFSET_MASK))
		return PARSE_FRAGMENT;
	if (iph->protocol == IPPROTO_ICMP)
		return PARSE_ICMP;
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return PARSE_NOT_L4;

	l3_end = l3_off + bpf_ntohs(iph->tot_len);
	/* The workers' parser refuses a packet shorter than its headers or
	 * longer than the frame.
	 */
	pkt->fast_ok = l3_end >= l4_off && l3_end <= (__u64)(data_end - data);
	return parse_ports(data, data_end, l4_off, l3_end, pkt);
}

static __always_inline bool is_ipv6_ext(__u8 next)
{
	return next == IPV6_NEXT_HOP_BY_HOP || next == IPV6_NEXT_ROUTING ||
	       next == IPV6_NEXT_FRAGMENT || next == IPV6_NEXT_AUTH ||
	       next == IPV6_NEXT_DEST_OPTS;
}

/* Walks the extension headers from *off, at most MAX_IPV6_EXT_HEADERS of
 * them, leaving *off and *next at the upper-layer header. Stops at a
 * Fragment header: what follows it may be the middle of a packet.
 */
static __always_inline int skip_ipv6_ext(void *data, void *data_end, __u64 *off,
					 __u8 *next)
{
	__u8 *hdr;
	int i;

#pragma unroll
	for (i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		if (!is_ipv6_ext(*next))
			return PARSE_OK;
		if (*next == IPV6_NEXT_FRAGMENT)
			return PARSE_FRAGMENT;
		hdr = data + *off;
		/* Next Header and length: all a walk reads of a header. */
		if ((void *)(hdr + 2) > data_end)
			return PARSE_MALFORMED;
		if (*next == IPV6_NEXT_AUTH)
			*off += ((__u64)hdr[1] + 2) * IPV6_AUTH_UNIT_BYTES;
		else
			*off += ((__u64)hdr[1] + 1) * IPV6_EXT_UNIT_BYTES;
		*next = hdr[0];
	}
	return is_ipv6_ext(*next) ? PARSE_EXT_TOO_LONG : PARSE_OK;
}

static __always_inline int parse_ipv6(void *data, void *data_end, __u64 l3_off,
				      struct packet_desc *pkt)
{
	struct ipv6hdr *ip6 = data + l3_off;
	__u64 l4_off, l3_end;
	__u8 next;
	int ret;

	if ((void *)(ip6 + 1) > data_end)
		return PARSE_MALFORMED;
	if (unlikely(ip6->version != IPV6_VERSION))
		return PARSE_MALFORMED;

	__builtin_memcpy(pkt->saddr6, &ip6->saddr, sizeof(pkt->saddr6));
	__builtin_memcpy(pkt->daddr6, &ip6->daddr, sizeof(pkt->daddr6));
	pkt->is_ipv6 = true;
	pkt->l3_off = l3_off;
	next = ip6->nexthdr;
	l4_off = l3_off + sizeof(*ip6);
	l3_end = l4_off + bpf_ntohs(ip6->payload_len);
	/* The workers take only packets without extension headers whose
	 * payload length fits the frame.
	 */
	pkt->fast_ok = !is_ipv6_ext(next) && l3_end <= (__u64)(data_end - data);

	ret = skip_ipv6_ext(data, data_end, &l4_off, &next);
	pkt->proto = next;
	pkt->l4_off = l4_off;
	if (ret != PARSE_OK)
		return ret;
	if (next == IPPROTO_ICMPV6)
		return PARSE_ICMP;
	if (next != IPPROTO_TCP && next != IPPROTO_UDP)
		return PARSE_NOT_L4;
	return parse_ports(data, data_end, l4_off, l3_end, pkt);
}

/* Fills *pkt from an Ethernet frame; see enum parse_result. */
static __always_inline int parse_packet(void *data, void *data_end,
					struct packet_desc *pkt)
{
	__be16 l3_proto;
	__u64 l3_off;
	int ret;

	ret = parse_eth(data, data_end, &l3_off, &l3_proto);
	if (ret != PARSE_OK)
		return ret;
	if (l3_proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(data, data_end, l3_off, pkt);
	if (l3_proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(data, data_end, l3_off, pkt);
	return PARSE_NOT_IP;
}

#endif /* SWITCHYARD_PARSE_H */
