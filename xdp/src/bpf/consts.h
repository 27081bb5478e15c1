/* Every number the steering program depends on. Values that userspace must
 * agree with have a Rust twin in xdp/src/consts.rs (checked by a test that
 * reads this file); nothing here may change without changing the twin.
 */
#ifndef SWITCHYARD_CONSTS_H
#define SWITCHYARD_CONSTS_H

/* Interfaces one loaded program can serve. Each attached interface gets a
 * slot; its AF_XDP sockets live at xsks_map[slot * MAX_QUEUES + queue].
 */
#define MAX_IFACES 4

/* RX queues per interface that can own an AF_XDP socket. Frames from higher
 * queues fall through to the kernel (NO_SOCKET) rather than aliasing the next
 * interface's slot.
 */
#define MAX_QUEUES 64

/* Size of xsks_map: one entry per (interface slot, queue). */
#define MAX_SOCKETS (MAX_IFACES * MAX_QUEUES)

/* Capacity of vip_map and vip_map6: listeners (VIP, port, protocol) of one
 * family across all Gateways; also of vip_addrs(6), since every VIP address
 * has a listener.
 */
#define MAX_VIPS 4096

/* Capacity of backend_map and backend_map6: backend endpoints (addr, port,
 * protocol) of one family; also of backend_addrs(6).
 */
#define MAX_BACKENDS 65536

/* Capacity of local_addrs and of local_addrs6: addresses of one family
 * owned by this node.
 */
#define MAX_LOCAL_ADDRS 256

/* Capacity of source_ranges and source_ranges6: (listener, CIDR) entries
 * of one family across all listeners.
 */
#define MAX_SOURCE_RANGES 16384

/* Bits of the listener part of a source_ranges(6) key, before the source
 * prefix: port, protocol, pad and the VIP address, all matched in full.
 */
#define SOURCE_RANGE_LISTENER_BITS 64
#define SOURCE_RANGE6_LISTENER_BITS 160

/* Values of source_ranges(6). 0 is no verdict (a zero-filled value). */
#define SOURCE_ALLOW 1
#define SOURCE_DENY 2

/* Bits of policy_state[0]: which families have a listener with source
 * ranges, so a frame of a family without any skips the trie lookup.
 */
#define POLICY_RANGES_V4 1
#define POLICY_RANGES_V6 2

/* Listener id meaning "no listener"; see vip_map in maps.h. */
#define LISTENER_ID_NONE 0

/* Default capacity of flow_cache: flows the fast path remembers, over all
 * CPUs. The loader may size the map differently before load.
 */
#define MAX_CACHED_FLOWS 262144

/* Entries of fast_stats: one per (listener, backend) pair, over every
 * listener of the running config (a cache entry's slot is 16 bits).
 */
#define MAX_STATS_SLOTS 65536

/* flow_action.last_seen counts units of 2^20 ns (about a millisecond): 32
 * bits of it last 52 days, far beyond any flow timeout.
 */
#define LAST_SEEN_SHIFT 20

/* Stats slot meaning "not counted" (and never cached); see fast_stats and
 * fast_epochs in maps.h.
 */
#define STATS_SLOT_NONE 0

/* Indices of fast_state. Each has one writer in userspace, so two writers
 * never race on one value.
 */
#define FAST_STATE_ENABLED 0	/* non-zero: the fast path may apply */
#define FAST_STATE_GENERATION 1	/* running config generation (status only) */
#define FAST_STATE_L2_EPOCH 2	/* L2 epoch cache entries must carry */
/* Bit s set: the fast path must not send frames out of interface slot s,
 * because the kernel would drop them there (a veth whose peer runs no NAPI).
 * 0, the array's initial value, closes nothing.
 */
#define FAST_STATE_EGRESS_CLOSED 3
/* The node's full-NAT source ports, first << 16 | last; 0: none. */
#define FAST_STATE_SNAT_PORTS 4
/* Non-zero while the daemon is being restarted or replaced and no worker
 * may be bound: a VIP frame that finds no socket is dropped, not passed.
 * The kernel would answer it for the node (a reset, an unreachable) and
 * end a connection a worker resumes a moment later; a drop is
 * retransmitted by the client. Set by a daemon that exits leaving its
 * pins, cleared by the one that takes them over once its sockets are in.
 */
#define FAST_STATE_HANDING_OVER 5
#define FAST_STATE_MAX 6

/* flow_action.tunnel: how a cached flow's packets are wrapped (encap.h). */
#define TUNNEL_NONE 0
#define TUNNEL_IPIP 1	/* IPv4 in IPv4 (protocol 4), IPv6 in IPv6 (41) */
#define TUNNEL_GUE 2	/* outer IP + UDP, GUE variant 1 */
/* What the outer header of a tunnel holds that no packet changes. */
#define OUTER_TTL 64
#define OUTER_IPV4_DF 0x4000

/* TCP flags that open or close a connection (RFC 9293, section 3.1). Segments
 * carrying them always take the slow path, so the workers see every state
 * change of a connection and keep its timeouts right.
 */
#define TCP_FLAGS_FIN 0x01	/* bits of the flags byte, not linux/tcp.h's words */
#define TCP_FLAGS_SYN 0x02
#define TCP_FLAGS_RST 0x04
#define TCP_CONTROL_FLAGS (TCP_FLAGS_FIN | TCP_FLAGS_SYN | TCP_FLAGS_RST)

/* More-fragments flag of frag_off (RFC 791, section 3.1). */
#define IPV4_MORE_FRAGMENTS 0x2000

/* Smallest TCP data offset, in 32-bit words (RFC 9293, section 3.1). */
#define TCP_DOFF_MIN 5

/* IPv4 header length is counted in 32-bit words (RFC 791, section 3.1). */
#define IPV4_IHL_WORD_BYTES 4

/* Smallest legal IHL: a header without options (RFC 791, section 3.1). */
#define IPV4_IHL_MIN 5

/* Fragment offset field of frag_off; non-zero means a non-first fragment,
 * which carries no L4 header (RFC 791, section 3.2).
 */
#define IPV4_FRAG_OFFSET_MASK 0x1fff

/* Version field of an IPv6 header (RFC 8200, section 3). */
#define IPV6_VERSION 6

/* 32-bit words of an IPv6 address. */
#define IPV6_ADDR_WORDS 4

/* Extension headers the program walks before the upper-layer header. RFC
 * 8200 section 4.1 recommends at most Hop-by-Hop, Destination Options,
 * Routing, Fragment, Authentication and Destination Options again, in that
 * order: six. A longer chain is no service's traffic; the verifier needs
 * the bound in any case. Twin of switchyard_wire::ipv6::MAX_EXT_HEADERS.
 */
#define MAX_IPV6_EXT_HEADERS 6

/* IPv6 extension headers count their length in 8-byte units after the
 * first 8 bytes (RFC 8200 section 4.2), the Authentication Header in
 * 4-byte units after the first 8 (RFC 4302 section 2.2).
 */
#define IPV6_EXT_UNIT_BYTES 8
#define IPV6_AUTH_UNIT_BYTES 4

/* Next Header values (IANA "Assigned Internet Protocol Numbers"). */
#define IPV6_NEXT_HOP_BY_HOP 0
#define IPV6_NEXT_ROUTING 43
#define IPV6_NEXT_FRAGMENT 44
#define IPV6_NEXT_AUTH 51
#define IPV6_NEXT_DEST_OPTS 60

/* ICMP error types that quote the packet they are about (RFC 792):
 * destination unreachable, time exceeded, parameter problem.
 */
#define ICMP_TYPE_DEST_UNREACH 3
#define ICMP_TYPE_TIME_EXCEEDED 11
#define ICMP_TYPE_PARAMETER_PROBLEM 12

/* ICMPv6 error types (RFC 4443 section 2.1): destination unreachable,
 * packet too big, time exceeded, parameter problem.
 */
#define ICMPV6_TYPE_DEST_UNREACH 1
#define ICMPV6_TYPE_PARAMETER_PROBLEM 4

/* Neighbor Discovery's ICMPv6 types, router solicitation to redirect (RFC
 * 4861 section 4): the node's, or its announcer's, even for a VIP address.
 */
#define ICMPV6_TYPE_ND_FIRST 133
#define ICMPV6_TYPE_ND_LAST 137

/* Bound on the header offsets packet_desc carries (l3_off, l4_off): past an
 * Ethernet header, one VLAN tag, IPv6 and six extension headers of at most
 * 2048 bytes each. Code that adds an offset read back from packet_desc to
 * a packet pointer checks it against this first: the verifier has lost
 * its range by then, and refuses a pointer it cannot bound.
 */
#define MAX_HEADER_OFFSET 16384

/* Type, code, checksum and 4 bytes of ICMP (RFC 792) and ICMPv6 (RFC 4443
 * section 2.1); an error's quote follows them.
 */
#define ICMP_HEADER_BYTES 8

/* Bytes of the quoted packet's L4 header an ICMP error must carry for its
 * flow to be known: the two ports (RFC 792 promises 8).
 */
#define ICMP_QUOTED_L4_BYTES 4

/* Why a frame was steered or passed. One counter per reason, per CPU, in the
 * counters map. Rust twin: SteerCounter in xdp/src/counters.rs, same order.
 */
enum steer_counter {
	STEER_VIP,		/* dst (addr, port, proto) is a VIP listener */
	STEER_REPLY,		/* src is a backend endpoint: reply of a NAT'd flow */
	PASS_NOT_SERVICE,	/* IP but neither a VIP nor a backend reply */
	PASS_NOT_IPV4,		/* neither IPv4 nor IPv6: ARP, double-tagged VLAN, ... */
	PASS_FRAGMENT,		/* fragment neither to a VIP address nor from a backend */
	PASS_LOCAL,		/* backend reply addressed to the node itself */
	NO_SOCKET,		/* steerable, but no AF_XDP socket on this queue */
	PARSE_ERROR,		/* truncated or malformed header */
	FAST_TX,		/* flow cache hit, rewritten, sent back out (XDP_TX) */
	FAST_REDIRECT,		/* flow cache hit, rewritten, sent out another port */
	FAST_STALE,		/* entry of its listener's older config, or old L2 epoch: slow path */
	FAST_TCP_CONTROL,	/* cache hit on a SYN, FIN or RST: slow path */
	FAST_PARTIAL_CHECKSUM,	/* cache hit, L4 checksum left partial by the sender: slow path */
	FAST_EGRESS_CLOSED,	/* cache hit, but its egress cannot take XDP frames: slow path */
	STEER_VIP_ICMP,		/* ICMP or ICMPv6 (not Neighbor Discovery) to a VIP address */
	STEER_FRAGMENT,		/* fragment to a VIP address, or from a backend to no local address */
	STEER_VIP_ADDR,		/* to a VIP address, another protocol or too many IPv6 extension headers */
	STEER_ICMP_REPLY,	/* ICMP error quoting a packet to a backend endpoint, to no local address */
	DROP_SOURCE_DENIED,	/* to a VIP listener from a source its ranges do not admit: dropped */
	COUNTER_MAX,
};

#endif /* SWITCHYARD_CONSTS_H */
