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

/* Capacity of vip_map: listeners (VIP, port, protocol) across all Gateways. */
#define MAX_VIPS 4096

/* Capacity of backend_map: backend endpoints (addr, port, protocol). */
#define MAX_BACKENDS 65536

/* Capacity of local_addrs: IPv4 addresses owned by this node. */
#define MAX_LOCAL_ADDRS 256

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
#define FAST_STATE_MAX 4

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

/* Why a frame was steered or passed. One counter per reason, per CPU, in the
 * counters map. Rust twin: SteerCounter in xdp/src/counters.rs, same order.
 */
enum steer_counter {
	STEER_VIP,		/* dst (addr, port, proto) is a VIP listener */
	STEER_REPLY,		/* src is a backend endpoint: reply of a NAT'd flow */
	PASS_NOT_SERVICE,	/* IPv4 but neither a VIP nor a backend reply */
	PASS_NOT_IPV4,		/* ARP, IPv6, double-tagged VLAN, ... */
	PASS_FRAGMENT,		/* non-first IPv4 fragment: no ports to match */
	PASS_LOCAL,		/* backend reply addressed to the node itself */
	NO_SOCKET,		/* steerable, but no AF_XDP socket on this queue */
	PARSE_ERROR,		/* truncated or malformed header */
	FAST_TX,		/* flow cache hit, rewritten, sent back out (XDP_TX) */
	FAST_REDIRECT,		/* flow cache hit, rewritten, sent out another port */
	FAST_STALE,		/* entry of its listener's older config, or old L2 epoch: slow path */
	FAST_TCP_CONTROL,	/* cache hit on a SYN, FIN or RST: slow path */
	FAST_PARTIAL_CHECKSUM,	/* cache hit, L4 checksum left partial by the sender: slow path */
	FAST_EGRESS_CLOSED,	/* cache hit, but its egress cannot take XDP frames: slow path */
	COUNTER_MAX,
};

#endif /* SWITCHYARD_CONSTS_H */
