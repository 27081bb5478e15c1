/* The decapsulation program `switchyard decap` attaches on a backend host:
 * it strips the outer headers Switchyard's `ipip` and `gue` modes put in
 * front of a client's packet, so the host's stack receives the packet as
 * the client sent it (to the VIP, held on a loopback) and answers the
 * client directly. The kernels this runs on may have no ipip, ip6_tunnel
 * or fou modules; this program stands in for them.
 *
 * It takes, addressed to one of the host's addresses (decap_addrs,
 * decap_addrs6, filled from userspace):
 *   IPv4 protocol 4 (IPv4 in IPv4, RFC 2003) and 41 (IPv6 in IPv4),
 *   IPv6 next header 41 (IPv6 in IPv6, RFC 2473) and 4 (IPv4 in IPv6),
 *   UDP to the configured GUE port carrying GUE variant 1 (the UDP payload
 *   is the inner IP packet; draft-ietf-intarea-gue section 4), over either.
 * The outer headers are cut off (bpf_xdp_adjust_head), the Ethernet header
 * (and a VLAN tag, if any) moved up with the inner family's EtherType, and
 * the frame passed to the kernel. Everything else passes untouched; a
 * tunnel packet that is truncated, fragmented or carries something else
 * inside is dropped and counted as malformed.
 */
#include <stdbool.h>

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"
#include "structs.h"

#define IPPROTO_IPIP_INNER 4	/* IPPROTO_IPIP */
#define IPPROTO_IPV6_INNER 41	/* IPPROTO_IPV6 */
#define IPV4_FRAG_MASK 0x3fff	/* MF and fragment offset */
#define MAX_DECAP_ADDRS 256
/* GUE variant 1 puts the inner IP header first; its version nibble is
 * 4 or 6, so the two leading bits are 01 (variant 0 would be 00).
 */
#define GUE_VARIANT_MASK 0xc0
#define GUE_VARIANT_1 0x40

/* Rust twin: DecapCounter in xdp/src/decap.rs (index into decap_stats). */
enum decap_counter {
	DECAP_IPIP,	/* IPv4 in IPv4 */
	DECAP_IP6IP6,	/* IPv6 in IPv6 */
	DECAP_IP_MIXED,	/* IPv6 in IPv4, IPv4 in IPv6 */
	DECAP_GUE,	/* GUE over IPv4 or IPv6 */
	DECAP_PASSED,	/* not a tunnel packet for this host: untouched */
	DECAP_MALFORMED,	/* a tunnel packet for this host, dropped */
	DECAP_COUNTERS,
};

/* The host's IPv4 addresses, network order; value unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_DECAP_ADDRS);
	__type(key, __be32);
	__type(value, __u8);
} decap_addrs SEC(".maps");

/* The host's IPv6 addresses; value unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_DECAP_ADDRS);
	__type(key, struct addr6);
	__type(value, __u8);
} decap_addrs6 SEC(".maps");

/* Index 0: the GUE UDP port, host order; 0 takes no GUE. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} decap_config SEC(".maps");

/* Packets per decap_counter, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} decap_stats SEC(".maps");

static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&decap_stats, &counter);

	/* Per-CPU slot: no other writer. */
	if (likely(value))
		*value += 1;
}

static __always_inline __u16 gue_port(void)
{
	__u32 zero = 0;
	__u32 *port = bpf_map_lookup_elem(&decap_config, &zero);

	return port ? (__u16)*port : 0;
}

/* What the outer headers hold, once read. */
struct outer {
	__u32 len;		/* bytes of outer headers after L2 */
	__u8 inner;		/* IPPROTO_IPIP_INNER or IPPROTO_IPV6_INNER */
	bool gue;
};

enum outer_result {
	OUTER_TUNNEL,
	OUTER_NOT_OURS,
	OUTER_MALFORMED,
};

/* The inner family of a GUE payload at `at`, from its version nibble. */
static __always_inline enum outer_result gue_inner(void *at, void *data_end,
						   struct outer *outer)
{
	__u8 *first = at;

	if ((void *)(first + 1) > data_end)
		return OUTER_MALFORMED;
	if ((*first & GUE_VARIANT_MASK) != GUE_VARIANT_1)
		return OUTER_MALFORMED;
	switch (*first >> 4) {
	case 4:
		outer->inner = IPPROTO_IPIP_INNER;
		return OUTER_TUNNEL;
	case 6:
		outer->inner = IPPROTO_IPV6_INNER;
		return OUTER_TUNNEL;
	default:
		return OUTER_MALFORMED;
	}
}

/* The UDP header after an outer IP header of `ip_len` bytes at `ip`: GUE
 * when it goes to the GUE port.
 */
static __always_inline enum outer_result read_udp(void *ip, __u32 ip_len,
						  void *data_end,
						  struct outer *outer)
{
	struct udphdr *udp = ip + ip_len;
	__u16 port = gue_port();

	if ((void *)(udp + 1) > data_end)
		return OUTER_NOT_OURS;
	if (port == 0 || udp->dest != bpf_htons(port))
		return OUTER_NOT_OURS;
	outer->gue = true;
	outer->len = ip_len + sizeof(*udp);
	return gue_inner(udp + 1, data_end, outer);
}

static __always_inline enum outer_result read_outer4(void *ip_start,
						     void *data_end,
						     struct outer *outer)
{
	struct iphdr *ip = ip_start;
	__u32 ip_len;

	if ((void *)(ip + 1) > data_end)
		return OUTER_NOT_OURS;
	if (ip->protocol != IPPROTO_IPIP_INNER &&
	    ip->protocol != IPPROTO_IPV6_INNER && ip->protocol != IPPROTO_UDP)
		return OUTER_NOT_OURS;
	if (!bpf_map_lookup_elem(&decap_addrs, &ip->daddr))
		return OUTER_NOT_OURS;
	ip_len = ip->ihl * 4;
	if (ip_len < sizeof(*ip) || ip_len > 60)
		return OUTER_MALFORMED;
	if (ip->protocol == IPPROTO_UDP) {
		/* A fragment of a datagram to the GUE port is the kernel's
		 * (it would reassemble and find no listener): not a tunnel
		 * this program strips.
		 */
		if (ip->frag_off & bpf_htons(IPV4_FRAG_MASK))
			return OUTER_NOT_OURS;
		return read_udp(ip_start, ip_len, data_end, outer);
	}
	/* Fragments of the outer packet cannot be stripped one by one. */
	if (ip->frag_off & bpf_htons(IPV4_FRAG_MASK))
		return OUTER_MALFORMED;
	outer->len = ip_len;
	outer->inner = ip->protocol;
	return OUTER_TUNNEL;
}

static __always_inline enum outer_result read_outer6(void *ip_start,
						     void *data_end,
						     struct outer *outer)
{
	struct ipv6hdr *ip6 = ip_start;

	if ((void *)(ip6 + 1) > data_end)
		return OUTER_NOT_OURS;
	if (ip6->nexthdr != IPPROTO_IPIP_INNER &&
	    ip6->nexthdr != IPPROTO_IPV6_INNER && ip6->nexthdr != IPPROTO_UDP)
		return OUTER_NOT_OURS;
	if (!bpf_map_lookup_elem(&decap_addrs6, &ip6->daddr))
		return OUTER_NOT_OURS;
	if (ip6->nexthdr == IPPROTO_UDP)
		return read_udp(ip_start, sizeof(*ip6), data_end, outer);
	outer->len = sizeof(*ip6);
	outer->inner = ip6->nexthdr;
	return OUTER_TUNNEL;
}

/* Whether an inner header of the family `outer` names starts at `at`
 * whole, with its version nibble matching.
 */
static __always_inline bool inner_ok(void *at, void *data_end,
				     const struct outer *outer)
{
	__u8 *version = at;

	if (outer->inner == IPPROTO_IPIP_INNER)
		return at + sizeof(struct iphdr) <= data_end &&
		       (*version >> 4) == 4;
	return at + sizeof(struct ipv6hdr) <= data_end && (*version >> 4) == 6;
}

/* Which counter a stripped tunnel of `outer_ipv6` counts under. */
static __always_inline __u32 kind_of(const struct outer *outer, bool outer_ipv6)
{
	if (outer->gue)
		return DECAP_GUE;
	if (outer->inner == IPPROTO_IPIP_INNER && !outer_ipv6)
		return DECAP_IPIP;
	if (outer->inner == IPPROTO_IPV6_INNER && outer_ipv6)
		return DECAP_IP6IP6;
	return DECAP_IP_MIXED;
}

SEC("xdp")
int decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vlan_hdr *vlan;
	struct outer outer = {};
	enum outer_result result;
	__u32 l2_len = sizeof(*eth);
	__be16 proto;
	bool outer_ipv6;
	__be16 inner_proto;

	if ((void *)(eth + 1) > data_end)
		goto pass;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		vlan = (void *)(eth + 1);
		if ((void *)(vlan + 1) > data_end)
			goto pass;
		proto = vlan->encap_proto;
		l2_len += sizeof(*vlan);
	}
	if (proto == bpf_htons(ETH_P_IP))
		result = read_outer4(data + l2_len, data_end, &outer);
	else if (proto == bpf_htons(ETH_P_IPV6))
		result = read_outer6(data + l2_len, data_end, &outer);
	else
		goto pass;
	if (result == OUTER_NOT_OURS)
		goto pass;
	if (result == OUTER_MALFORMED || outer.len > 68 ||
	    !inner_ok(data + l2_len + outer.len, data_end, &outer)) {
		count(DECAP_MALFORMED);
		return XDP_DROP;
	}
	outer_ipv6 = proto == bpf_htons(ETH_P_IPV6);
	inner_proto = outer.inner == IPPROTO_IPIP_INNER ? bpf_htons(ETH_P_IP)
							 : bpf_htons(ETH_P_IPV6);

	/* The L2 header moves up to just before the inner packet, which stays
	 * where it is. The regions do not overlap: the outer headers (20
	 * bytes at least) are longer than an L2 header (18 at most).
	 */
	{
		__u8 *from = data;
		__u8 *to = data + outer.len;

		if ((void *)(to + l2_len) > data_end ||
		    (void *)(from + sizeof(*eth) + sizeof(*vlan)) > data_end)
			goto malformed;
		__builtin_memcpy(to, from, 2 * ETH_ALEN);
		if (l2_len != sizeof(*eth))
			/* The tag (TPID and TCI) as it came. */
			__builtin_memcpy(to + 2 * ETH_ALEN, from + 2 * ETH_ALEN,
					 sizeof(*vlan));
	}
	if (bpf_xdp_adjust_head(ctx, (int)outer.len))
		goto malformed;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + l2_len > data_end || l2_len < sizeof(inner_proto))
		goto malformed;
	{
		__be16 *type = data + l2_len - sizeof(inner_proto);

		if ((void *)(type + 1) > data_end)
			goto malformed;
		*type = inner_proto;
	}
	count(kind_of(&outer, outer_ipv6));
	return XDP_PASS;

malformed:
	count(DECAP_MALFORMED);
	return XDP_DROP;
pass:
	count(DECAP_PASSED);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
