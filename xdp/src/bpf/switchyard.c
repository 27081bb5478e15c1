/* The steering program: frames for a VIP listener, and replies from backend
 * endpoints of NAT'd flows, go to the AF_XDP socket of their rx queue, IPv4
 * and IPv6 alike. So does whatever else reaches a VIP address (ICMP,
 * fragments, other protocols), fragments from backends, and ICMP errors
 * about packets sent to a backend endpoint; everything else goes to the
 * kernel stack untouched. It decides nothing: the workers decide. The one
 * rewrite it does is the fast path's replay of a decision a worker cached
 * (fast_path.h); the one drop, a frame to a listener from a source its
 * ranges do not admit (policy.h).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"
#include "consts.h"
#include "count.h"
#include "fast_path.h"
#include "maps.h"
#include "parse.h"
#include "policy.h"
#include "structs.h"

static __always_inline int pass(__u32 counter)
{
	count(counter);
	return XDP_PASS;
}

static __always_inline bool is_listener(void *map, __be32 addr, __be16 port,
					__u8 proto)
{
	struct service_key key = {
		.addr = addr,
		.port = port,
		.proto = proto,
	};
	__u32 *id = bpf_map_lookup_elem(map, &key);

	return id && *id != LISTENER_ID_NONE;
}

static __always_inline bool is_listener6(void *map, const __be32 *addr,
					 __be16 port, __u8 proto)
{
	struct service_key6 key = {
		.port = port,
		.proto = proto,
	};
	__u32 *id;

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	id = bpf_map_lookup_elem(map, &key);
	return id && *id != LISTENER_ID_NONE;
}

static __always_inline bool is_local_addr(__be32 addr)
{
	return bpf_map_lookup_elem(&local_addrs, &addr) != NULL;
}

/* Whether `addr` is a key of an address-only map of either family. */
static __always_inline bool in_addr_map(void *map4, void *map6, bool ipv6,
					const __be32 *addr)
{
	struct addr6 key6;

	if (!ipv6)
		return bpf_map_lookup_elem(map4, addr) != NULL;
	__builtin_memcpy(key6.addr, addr, sizeof(key6.addr));
	return bpf_map_lookup_elem(map6, &key6) != NULL;
}

static __always_inline bool dst_is_local(const struct packet_desc *pkt)
{
	return in_addr_map(&local_addrs, &local_addrs6, pkt->is_ipv6,
			   pkt->daddr6);
}

static __always_inline bool dst_is_vip_addr(const struct packet_desc *pkt)
{
	return in_addr_map(&vip_addrs, &vip_addrs6, pkt->is_ipv6, pkt->daddr6);
}

static __always_inline bool src_is_backend_addr(const struct packet_desc *pkt)
{
	return in_addr_map(&backend_addrs, &backend_addrs6, pkt->is_ipv6,
			   pkt->saddr6);
}

/* Whether a backend's packet to one of the node's own addresses answers a
 * full-NAT binding: its destination port is in the SNAT range, which the
 * node's own connections never draw from (the daemon refuses a range
 * that overlaps the kernel's ephemeral ports).
 */
static __always_inline bool to_snat_port(__be16 dport)
{
	__u64 range = fast_state_get(FAST_STATE_SNAT_PORTS);
	__u16 port = bpf_ntohs(dport);

	return range && port >= ((range >> 16) & 0xffff) &&
	       port <= (range & 0xffff);
}

/* Slot of the interface with this ifindex, or MAX_IFACES if it has none. */
static __always_inline __u32 ifindex_slot(__u32 ifindex)
{
	__u32 *slot = bpf_map_lookup_elem(&if_slots, &ifindex);

	if (unlikely(!slot))
		return MAX_IFACES;
	return *slot;
}

/* No socket for a steerable frame. Normally it goes to the kernel, so a
 * missing worker degrades to "not load-balanced", never to "dropped"; while
 * the daemon hands over to its successor it is dropped instead (see
 * FAST_STATE_HANDING_OVER), so the kernel does not end a connection the
 * next worker carries on.
 */
static __always_inline int no_socket(void)
{
	count(NO_SOCKET);
	if (unlikely(fast_state_get(FAST_STATE_HANDING_OVER)))
		return XDP_DROP;
	return XDP_PASS;
}

/* Redirects to the AF_XDP socket bound to this frame's (interface, queue). */
static __always_inline int steer(struct xdp_md *ctx, __u32 counter)
{
	__u32 slot = ifindex_slot(ctx->ingress_ifindex);
	__u32 queue = ctx->rx_queue_index;
	__u32 index;

	/* A queue beyond MAX_QUEUES would alias the next interface's slot. */
	if (unlikely(slot >= MAX_IFACES || queue >= MAX_QUEUES))
		return no_socket();

	index = slot * MAX_QUEUES + queue;
	if (unlikely(!bpf_map_lookup_elem(&xsks_map, &index)))
		return no_socket();

	count(counter);
	/* The socket may be removed between lookup and redirect; the flags
	 * argument makes that rare case a pass as well.
	 */
	return bpf_redirect_map(&xsks_map, index, XDP_PASS);
}

/* A fragment carries no ports, except the first, and the ones after it
 * must go where it goes: to the workers when the datagram is for a VIP, or
 * may be a backend's reply, whose destination is no address of the node's.
 */
static __always_inline int on_fragment(struct xdp_md *ctx,
				       const struct packet_desc *pkt)
{
	if (dst_is_vip_addr(pkt))
		return steer(ctx, STEER_FRAGMENT);
	if (src_is_backend_addr(pkt)) {
		if (dst_is_local(pkt))
			return pass(PASS_LOCAL);
		return steer(ctx, STEER_FRAGMENT);
	}
	return pass(PASS_FRAGMENT);
}

static __always_inline bool is_icmp_error(__u8 type, bool ipv6)
{
	if (ipv6)
		return type >= ICMPV6_TYPE_DEST_UNREACH &&
		       type <= ICMPV6_TYPE_PARAMETER_PROBLEM;
	return type == ICMP_TYPE_DEST_UNREACH ||
	       type == ICMP_TYPE_TIME_EXCEEDED ||
	       type == ICMP_TYPE_PARAMETER_PROBLEM;
}

/* Whether the packet an ICMP error quotes from `off` on was sent to a
 * backend endpoint: the client's packet that the backend (or a router on
 * its way) reports a problem with. A quote too short to hold the quoted
 * ports, or without ports (a later fragment, another protocol), is no
 * match. Only an upper layer right after the quoted IPv6 header is read.
 */
static __always_inline bool quotes_backend(void *data, void *data_end,
					   __u64 off, bool ipv6)
{
	struct ipv6hdr *ip6;
	struct iphdr *iph;
	__be16 *ports;
	__u8 proto;

	if (ipv6) {
		ip6 = data + off;
		if ((void *)(ip6 + 1) > data_end || ip6->version != IPV6_VERSION)
			return false;
		proto = ip6->nexthdr;
		ports = (void *)(ip6 + 1);
	} else {
		iph = data + off;
		if ((void *)(iph + 1) > data_end)
			return false;
		if (iph->version != IPVERSION || iph->ihl < IPV4_IHL_MIN ||
		    (iph->frag_off & bpf_htons(IPV4_FRAG_OFFSET_MASK)))
			return false;
		proto = iph->protocol;
		ports = data + off + iph->ihl * IPV4_IHL_WORD_BYTES;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return false;
	if ((void *)ports + ICMP_QUOTED_L4_BYTES > data_end)
		return false;
	if (ipv6)
		return is_listener6(&backend_map6, (__be32 *)&ip6->daddr,
				    ports[1], proto);
	return is_listener(&backend_map, iph->daddr, ports[1], proto);
}

/* ICMP to a VIP address is the service's to answer, not the node's (bar
 * Neighbor Discovery, which the node or its announcer answers for the
 * VIP). An error about a packet a client sent a backend goes to the
 * workers too, so the client sees it from the VIP.
 */
static __always_inline int on_icmp(struct xdp_md *ctx,
				   const struct packet_desc *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l4_off = pkt->l4_off;
	bool ipv6 = pkt->is_ipv6;
	__u8 *icmp;
	__u8 type;

	if (l4_off > MAX_HEADER_OFFSET)
		return pass(PARSE_ERROR);
	icmp = data + l4_off;
	if ((void *)(icmp + ICMP_HEADER_BYTES) > data_end)
		return pass(PARSE_ERROR);
	type = icmp[0];
	if (dst_is_vip_addr(pkt)) {
		if (ipv6 && type >= ICMPV6_TYPE_ND_FIRST &&
		    type <= ICMPV6_TYPE_ND_LAST)
			return pass(PASS_NOT_SERVICE);
		return steer(ctx, STEER_VIP_ICMP);
	}
	if (!is_icmp_error(type, ipv6) ||
	    !quotes_backend(data, data_end, l4_off + ICMP_HEADER_BYTES, ipv6))
		return pass(PASS_NOT_SERVICE);
	if (dst_is_local(pkt))
		return pass(PASS_LOCAL);
	return steer(ctx, STEER_ICMP_REPLY);
}

/* An IPv6 TCP/UDP frame: the IPv4 rules, on the IPv6 maps. */
static __always_inline int on_l4_ipv6(struct xdp_md *ctx,
				      const struct packet_desc *pkt)
{
	__u32 egress_slot = 0;

	switch (fast_path6(ctx, pkt, &egress_slot)) {
	case FAST_SENT_TX:
		return XDP_TX;
	case FAST_SENT_REDIRECT:
		return bpf_redirect_map(&tx_ports, egress_slot, 0);
	default:
		break;
	}

	if (is_listener6(&vip_map6, pkt->daddr6, pkt->dport, pkt->proto))
		return steer(ctx, STEER_VIP);
	if (is_listener6(&backend_map6, pkt->saddr6, pkt->sport, pkt->proto)) {
		if (dst_is_local(pkt) && !to_snat_port(pkt->dport))
			return pass(PASS_LOCAL);
		return steer(ctx, STEER_REPLY);
	}
	return pass(PASS_NOT_SERVICE);
}

SEC("xdp")
int switchyard_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet_desc pkt = {};
	__u32 egress_slot = 0;

	switch (parse_packet(data, data_end, &pkt)) {
	case PARSE_OK:
		break;
	case PARSE_NOT_IP:
		return pass(PASS_NOT_IPV4);
	case PARSE_FRAGMENT:
		return on_fragment(ctx, &pkt);
	case PARSE_ICMP:
		return on_icmp(ctx, &pkt);
	case PARSE_NOT_L4:
	case PARSE_EXT_TOO_LONG:
		/* The workers drop it, counted; the kernel would answer for
		 * the node (protocol unreachable, parameter problem).
		 */
		if (dst_is_vip_addr(&pkt))
			return steer(ctx, STEER_VIP_ADDR);
		return pass(PASS_NOT_SERVICE);
	default:
		return pass(PARSE_ERROR);
	}

	if (denied_source(&pkt))
		return XDP_DROP;

	if (pkt.is_ipv6)
		return on_l4_ipv6(ctx, &pkt);

	switch (fast_path(ctx, &pkt, &egress_slot)) {
	case FAST_SENT_TX:
		return XDP_TX;
	case FAST_SENT_REDIRECT:
		/* Every attached interface is in tx_ports; a slot that is not
		 * (detached meanwhile) aborts, visible in xdp:xdp_exception.
		 */
		return bpf_redirect_map(&tx_ports, egress_slot, 0);
	default:
		break;
	}

	if (is_listener(&vip_map, pkt.daddr, pkt.dport, pkt.proto))
		return steer(ctx, STEER_VIP);

	/* Reverse leg of a NAT'd flow: known by its source, the backend
	 * endpoint, since its destination (client or SNAT address) is no VIP.
	 * It goes to this queue's worker, which need not be the one that saw
	 * the request: workers derive reverse translation from the snapshot.
	 */
	if (is_listener(&backend_map, pkt.saddr, pkt.sport, pkt.proto)) {
		if (is_local_addr(pkt.daddr) && !to_snat_port(pkt.dport))
			return pass(PASS_LOCAL);
		return steer(ctx, STEER_REPLY);
	}

	return pass(PASS_NOT_SERVICE);
}

/* GPL-compatible so that GPL-only helpers stay available to later programs
 * in this object; the ones used here do not require it.
 */
char _license[] SEC("license") = "GPL";
