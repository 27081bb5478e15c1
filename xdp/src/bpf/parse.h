/* Header parsing for the steering program: Ethernet, at most one 802.1Q or
 * 802.1ad tag, IPv4 (options allowed), and the ports of TCP/UDP. Every access
 * is preceded by a bounds check against data_end; parsing never writes the
 * packet and never decides a verdict.
 */
#ifndef SWITCHYARD_PARSE_H
#define SWITCHYARD_PARSE_H

#include <stdbool.h>

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
#include "structs.h"

enum parse_result {
	PARSE_OK,	/* IPv4 TCP/UDP, packet_desc filled */
	PARSE_NOT_IPV4,	/* not IPv4 after at most one VLAN tag */
	PARSE_FRAGMENT,	/* non-first IPv4 fragment */
	PARSE_NOT_L4,	/* IPv4, but neither TCP nor UDP */
	PARSE_MALFORMED,	/* truncated or invalid header */
};

static __always_inline bool is_vlan_proto(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) ||
	       proto == bpf_htons(ETH_P_8021AD);
}

/* Sets *l3_off and *l3_proto past the Ethernet header and one VLAN tag. A
 * second tag is left in *l3_proto, so QinQ frames are "not IPv4".
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
	if (iph->frag_off & bpf_htons(IPV4_FRAG_OFFSET_MASK))
		return PARSE_FRAGMENT;
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return PARSE_NOT_L4;

	pkt->saddr = iph->saddr;
	pkt->daddr = iph->daddr;
	pkt->proto = iph->protocol;
	l4_off = l3_off + iph->ihl * IPV4_IHL_WORD_BYTES;
	l3_end = l3_off + bpf_ntohs(iph->tot_len);
	/* The workers' parser refuses a first fragment too, and a packet
	 * shorter than its headers or longer than the frame.
	 */
	pkt->fast_ok = !(iph->frag_off & bpf_htons(IPV4_MORE_FRAGMENTS)) &&
		       l3_end >= l4_off && l3_end <= (__u64)(data_end - data);
	pkt->l3_off = l3_off;
	pkt->l4_off = l4_off;
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
	if (l3_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	return parse_ipv4(data, data_end, l3_off, pkt);
}

#endif /* SWITCHYARD_PARSE_H */
