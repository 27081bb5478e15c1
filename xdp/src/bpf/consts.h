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
	COUNTER_MAX,
};

#endif /* SWITCHYARD_CONSTS_H */
