/* Structs of the steering program. Those used as map keys are shared with
 * userspace and have a #[repr(C)] Rust twin whose layout a test checks.
 */
#ifndef SWITCHYARD_STRUCTS_H
#define SWITCHYARD_STRUCTS_H

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

/* One 802.1Q / 802.1ad tag as it follows the outer EtherType. The kernel's
 * struct vlan_hdr is not part of the uapi headers.
 */
struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* The fields of an IPv4 TCP/UDP packet the steering decision reads. */
struct packet_desc {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
};

#endif /* SWITCHYARD_STRUCTS_H */
