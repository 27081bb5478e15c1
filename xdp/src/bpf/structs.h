/* Structs of the steering program. Those used as map keys are shared with
 * userspace and have a #[repr(C)] Rust twin whose layout a test checks.
 */
#ifndef SWITCHYARD_STRUCTS_H
#define SWITCHYARD_STRUCTS_H

#include <stdbool.h>

#include <linux/types.h>

/* Key of vip_map and backend_map: one L4 endpoint, all fields in network
 * byte order. Rust twin: ServiceKey in xdp/src/maps.rs. pad must be zero:
 * hash maps compare keys bytewise.
 */
struct service_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

_Static_assert(sizeof(struct service_key) == 8, "service_key is 8 bytes");
_Static_assert(__builtin_offsetof(struct service_key, addr) == 0, "addr at 0");
_Static_assert(__builtin_offsetof(struct service_key, port) == 4, "port at 4");
_Static_assert(__builtin_offsetof(struct service_key, proto) == 6, "proto at 6");
_Static_assert(__builtin_offsetof(struct service_key, pad) == 7, "pad at 7");

/* Key of source_ranges: a listener (VIP, port, protocol) matched in full,
 * then a source prefix; prefixlen = SOURCE_RANGE_LISTENER_BITS + the
 * source prefix length. Keyed by the listener's VIP rather than its id, so
 * entries mean the same across reloads that renumber listeners. Rust
 * twin: SourceRangeKey in xdp/src/policy.rs. pad must be zero.
 */
struct source_range_key {
	__u32 prefixlen;
	__be16 port;
	__u8 proto;
	__u8 pad;
	__be32 vip;
	__be32 src;
};

_Static_assert(sizeof(struct source_range_key) == 16, "source_range_key is 16 bytes");
_Static_assert(__builtin_offsetof(struct source_range_key, port) == 4, "port at 4");
_Static_assert(__builtin_offsetof(struct source_range_key, vip) == 8, "vip at 8");
_Static_assert(__builtin_offsetof(struct source_range_key, src) == 12, "src at 12");

/* source_range_key for IPv6; prefixlen counts from
 * SOURCE_RANGE6_LISTENER_BITS. Rust twin: SourceRangeKey6.
 */
struct source_range_key6 {
	__u32 prefixlen;
	__be16 port;
	__u8 proto;
	__u8 pad;
	__u8 vip[16];
	__u8 src[16];
};

_Static_assert(sizeof(struct source_range_key6) == 40, "source_range_key6 is 40 bytes");
_Static_assert(__builtin_offsetof(struct source_range_key6, vip) == 8, "vip at 8");
_Static_assert(__builtin_offsetof(struct source_range_key6, src) == 24, "src at 24");

/* Key of vip_map6 and backend_map6: service_key for IPv6. Rust twin:
 * ServiceKey6 in xdp/src/service.rs. pad must be zero.
 */
struct service_key6 {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 pad;
};

_Static_assert(sizeof(struct service_key6) == 20, "service_key6 is 20 bytes");
_Static_assert(__builtin_offsetof(struct service_key6, addr) == 0, "addr at 0");
_Static_assert(__builtin_offsetof(struct service_key6, port) == 16, "port at 16");
_Static_assert(__builtin_offsetof(struct service_key6, proto) == 18, "proto at 18");
_Static_assert(__builtin_offsetof(struct service_key6, pad) == 19, "pad at 19");

/* Key of the IPv6 address-only maps (local_addrs6, vip_addrs6,
 * backend_addrs6): the address in network byte order. Rust twin: the
 * address's 16 octets.
 */
struct addr6 {
	__be32 addr[4];
};

_Static_assert(sizeof(struct addr6) == 16, "addr6 is 16 bytes");

/* One 802.1Q / 802.1ad tag as it follows the outer EtherType. The kernel's
 * struct vlan_hdr is not part of the uapi headers.
 */
struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* The fields of an IP packet the steering decision and the fast path read.
 * The addresses share their space across families, so an IPv4 packet costs
 * what it did before IPv6 was parsed; is_ipv6 says which member holds them.
 */
struct packet_desc {
	union {
		__be32 saddr;
		__be32 saddr6[4];
	};
	union {
		__be32 daddr;
		__be32 daddr6[4];
	};
	bool is_ipv6;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	/* The frame passes every check the workers' parser makes (total or
	 * payload length, fragments, no IPv6 extension headers, TCP data
	 * offset, UDP length), so the fast path may rewrite it exactly as a
	 * worker would.
	 */
	bool fast_ok;
	__u16 l3_off;
	__u16 l4_off;
	/* Bytes the L4 checksum covers (TCP segment, UDP length field) and
	 * the checksum field, host order: what is_checksum_partial reads.
	 */
	__u16 l4_len;
	__u16 l4_check;
};

/* Key of flow_cache: a 5-tuple as it arrives, in network byte order. Rust
 * twin: FlowCacheKey in xdp/src/fast_path.rs. pad must be zero.
 */
struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

_Static_assert(sizeof(struct flow_key) == 16, "flow_key is 16 bytes");
_Static_assert(__builtin_offsetof(struct flow_key, saddr) == 0, "saddr at 0");
_Static_assert(__builtin_offsetof(struct flow_key, daddr) == 4, "daddr at 4");
_Static_assert(__builtin_offsetof(struct flow_key, sport) == 8, "sport at 8");
_Static_assert(__builtin_offsetof(struct flow_key, dport) == 10, "dport at 10");
_Static_assert(__builtin_offsetof(struct flow_key, proto) == 12, "proto at 12");

/* Value of flow_cache: a worker's decision for one flow, replayed as is.
 * Rust twin: FlowAction in xdp/src/fast_path.rs. The checksum differences
 * are RFC 1624 one's complement sums, folded, host order: the rewrite of a
 * flow changes the same fields from the same values every time, so the
 * worker computes them once. 64 bytes, so that with its key and the map's
 * own header an entry takes two cache lines: the lookup is the fast path's
 * main cost.
 *
 * An encapsulated flow (tunnel TUNNEL_IPIP or TUNNEL_GUE, encap.h) keeps
 * its packet and puts an outer header in front: the MACs, addresses and
 * ports are the outer header's, ip_csum_diff is the folded sum of that
 * header's constant words (outer_csum_base), and the L4 difference, which
 * such a flow does not need, is the largest inner packet that fits the
 * egress link (inner_mtu): the fast path adds no MTU of its own, so a
 * larger one goes to the workers, which answer it. Kept in the same map
 * and entry size, so a flow's lookup costs the same in every mode.
 */
struct flow_action {
	__u32 generation;	/* its listener's epoch: fast_epochs[stats_slot] */
	__u32 l2_epoch;		/* low 32 bits of the L2 epoch of its MACs */
	__u64 packets;		/* fast-path packets since installed */
	__u64 bytes;
	__u32 last_seen;	/* bpf_ktime_get_coarse_ns() >> LAST_SEEN_SHIFT */
	__u8 eth_dst[6];
	__u8 eth_src[6];
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	union {
		__u16 ip_csum_diff;
		__u16 outer_csum_base;	/* tunnel */
	};
	union {
		__u16 l4_csum_diff;
		__u16 inner_mtu;	/* tunnel */
	};
	__u8 egress_slot;	/* interface slot, index into tx_ports */
	__u8 tunnel;		/* TUNNEL_NONE, TUNNEL_IPIP or TUNNEL_GUE */
	__u16 stats_slot;	/* index into fast_stats; STATS_SLOT_NONE: none */
	/* Equal to the ingress ifindex: XDP_TX. 0 never is, so the frame is
	 * redirected even back out of its own port: a veth delivers XDP_TX
	 * frames only when its peer runs an XDP program, redirects when the
	 * peer runs NAPI (an XDP program, or GRO on).
	 */
	__u32 egress_ifindex;
};

_Static_assert(sizeof(struct flow_action) == 64, "flow_action is 64 bytes");
_Static_assert(__builtin_offsetof(struct flow_action, generation) == 0, "generation at 0");
_Static_assert(__builtin_offsetof(struct flow_action, l2_epoch) == 4, "l2_epoch at 4");
_Static_assert(__builtin_offsetof(struct flow_action, packets) == 8, "packets at 8");
_Static_assert(__builtin_offsetof(struct flow_action, bytes) == 16, "bytes at 16");
_Static_assert(__builtin_offsetof(struct flow_action, last_seen) == 24, "last_seen at 24");
_Static_assert(__builtin_offsetof(struct flow_action, eth_dst) == 28, "eth_dst at 28");
_Static_assert(__builtin_offsetof(struct flow_action, eth_src) == 34, "eth_src at 34");
_Static_assert(__builtin_offsetof(struct flow_action, saddr) == 40, "saddr at 40");
_Static_assert(__builtin_offsetof(struct flow_action, daddr) == 44, "daddr at 44");
_Static_assert(__builtin_offsetof(struct flow_action, sport) == 48, "sport at 48");
_Static_assert(__builtin_offsetof(struct flow_action, dport) == 50, "dport at 50");
_Static_assert(__builtin_offsetof(struct flow_action, ip_csum_diff) == 52, "ip_csum_diff at 52");
_Static_assert(__builtin_offsetof(struct flow_action, l4_csum_diff) == 54, "l4_csum_diff at 54");
_Static_assert(__builtin_offsetof(struct flow_action, egress_slot) == 56, "egress_slot at 56");
_Static_assert(__builtin_offsetof(struct flow_action, tunnel) == 57, "tunnel at 57");
_Static_assert(__builtin_offsetof(struct flow_action, stats_slot) == 58, "stats_slot at 58");
_Static_assert(__builtin_offsetof(struct flow_action, egress_ifindex) == 60, "egress_ifindex at 60");

/* Key of flow_cache6: flow_key for IPv6. Rust twin: FlowCacheKey6 in
 * xdp/src/fast_path.rs. pad must be zero.
 */
struct flow_key6 {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

_Static_assert(sizeof(struct flow_key6) == 40, "flow_key6 is 40 bytes");
_Static_assert(__builtin_offsetof(struct flow_key6, saddr) == 0, "saddr at 0");
_Static_assert(__builtin_offsetof(struct flow_key6, daddr) == 16, "daddr at 16");
_Static_assert(__builtin_offsetof(struct flow_key6, sport) == 32, "sport at 32");
_Static_assert(__builtin_offsetof(struct flow_key6, dport) == 34, "dport at 34");
_Static_assert(__builtin_offsetof(struct flow_key6, proto) == 36, "proto at 36");

/* Value of flow_cache6: flow_action for IPv6, with the same fields and
 * meaning but 16-byte addresses and no ip_csum_diff, since the IPv6 header
 * has no checksum; l4_csum_diff covers the pseudo-header's address words
 * and the ports (RFC 1624, RFC 8200 section 8.1), or for a tunnel is the
 * inner MTU, as in flow_action. Rust twin: FlowAction6 in
 * xdp/src/fast_path.rs.
 */
struct flow_action6 {
	__u32 generation;	/* its listener's epoch: fast_epochs[stats_slot] */
	__u32 l2_epoch;		/* low 32 bits of the L2 epoch of its MACs */
	__u64 packets;		/* fast-path packets since installed */
	__u64 bytes;
	__u32 last_seen;	/* bpf_ktime_get_coarse_ns() >> LAST_SEEN_SHIFT */
	__u8 eth_dst[6];
	__u8 eth_src[6];
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	union {
		__u16 l4_csum_diff;
		__u16 inner_mtu;	/* tunnel */
	};
	__u8 egress_slot;	/* interface slot, index into tx_ports */
	__u8 tunnel;		/* as in flow_action */
	__u16 stats_slot;	/* index into fast_stats; STATS_SLOT_NONE: none */
	__u16 pad;
	__u32 egress_ifindex;	/* as in flow_action */
};

_Static_assert(sizeof(struct flow_action6) == 88, "flow_action6 is 88 bytes");
_Static_assert(__builtin_offsetof(struct flow_action6, generation) == 0, "generation at 0");
_Static_assert(__builtin_offsetof(struct flow_action6, l2_epoch) == 4, "l2_epoch at 4");
_Static_assert(__builtin_offsetof(struct flow_action6, packets) == 8, "packets at 8");
_Static_assert(__builtin_offsetof(struct flow_action6, bytes) == 16, "bytes at 16");
_Static_assert(__builtin_offsetof(struct flow_action6, last_seen) == 24, "last_seen at 24");
_Static_assert(__builtin_offsetof(struct flow_action6, eth_dst) == 28, "eth_dst at 28");
_Static_assert(__builtin_offsetof(struct flow_action6, eth_src) == 34, "eth_src at 34");
_Static_assert(__builtin_offsetof(struct flow_action6, saddr) == 40, "saddr at 40");
_Static_assert(__builtin_offsetof(struct flow_action6, daddr) == 56, "daddr at 56");
_Static_assert(__builtin_offsetof(struct flow_action6, sport) == 72, "sport at 72");
_Static_assert(__builtin_offsetof(struct flow_action6, dport) == 74, "dport at 74");
_Static_assert(__builtin_offsetof(struct flow_action6, l4_csum_diff) == 76, "l4_csum_diff at 76");
_Static_assert(__builtin_offsetof(struct flow_action6, egress_slot) == 78, "egress_slot at 78");
_Static_assert(__builtin_offsetof(struct flow_action6, tunnel) == 79, "tunnel at 79");
_Static_assert(__builtin_offsetof(struct flow_action6, stats_slot) == 80, "stats_slot at 80");
_Static_assert(__builtin_offsetof(struct flow_action6, pad) == 82, "pad at 82");
_Static_assert(__builtin_offsetof(struct flow_action6, egress_ifindex) == 84, "egress_ifindex at 84");

/* Value of fast_stats, per CPU. Rust twin: FastCounters in
 * xdp/src/fast_path.rs.
 */
struct fast_counters {
	__u64 packets;
	__u64 bytes;
};

_Static_assert(sizeof(struct fast_counters) == 16, "fast_counters is 16 bytes");

#endif /* SWITCHYARD_STRUCTS_H */
