/* Maps of the steering program. Userspace (xdp/src/lib.rs) owns their
 * contents; the program only reads them, except counters, fast_stats and
 * the counters inside flow_cache entries.
 */
#ifndef SWITCHYARD_MAPS_H
#define SWITCHYARD_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "structs.h"

/* VIP listeners: (VIP, port, proto) -> listener id. Id 0 (LISTENER_ID_NONE)
 * is reserved as "none" because BPF zero-fills values (array slots, per-CPU
 * scratch, a value read before userspace finished writing it): a zero id must
 * never name a real listener, so the program treats it as no match.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct service_key);
	__type(value, __u32);
} vip_map SEC(".maps");

/* Backend endpoints: (addr, port, proto) -> listener id (0 reserved as in
 * vip_map). A packet from one is the reply leg of a NAT'd flow and goes to
 * the workers for reverse translation.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, struct service_key);
	__type(value, __u32);
} backend_map SEC(".maps");

/* The node's own IPv4 addresses -> 1. A backend's reply to one of them is
 * the node's own traffic (health checks, clients on the node) and must reach
 * the kernel stack, not the workers.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LOCAL_ADDRS);
	__type(key, __be32);
	__type(value, __u8);
} local_addrs SEC(".maps");

/* vip_map, backend_map and local_addrs for IPv6, same ids and rules. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct service_key6);
	__type(value, __u32);
} vip_map6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, struct service_key6);
	__type(value, __u32);
} backend_map6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LOCAL_ADDRS);
	__type(key, struct addr6);
	__type(value, __u8);
} local_addrs6 SEC(".maps");

/* VIP addresses -> how many listeners they have. Whatever reaches a VIP
 * address outside its listeners (ICMP, fragments, other protocols) goes to
 * the workers, which answer, follow or drop it: the kernel's answer would
 * speak for the node, not the service. Only a present key matters.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, __be32);
	__type(value, __u32);
} vip_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct addr6);
	__type(value, __u32);
} vip_addrs6 SEC(".maps");

/* Backend endpoint addresses -> how many endpoints they have. A fragment
 * from one carries no ports to find its endpoint by, and may be a reply's.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __be32);
	__type(value, __u32);
} backend_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, struct addr6);
	__type(value, __u32);
} backend_addrs6 SEC(".maps");

/* Attached interfaces: ifindex -> slot in [0, MAX_IFACES). Written before the
 * program is attached to the interface and removed after it is detached.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_IFACES);
	__type(key, __u32);
	__type(value, __u32);
} if_slots SEC(".maps");

/* AF_XDP sockets at slot * MAX_QUEUES + rx queue; a socket receives only
 * frames from the queue it is bound to.
 */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_SOCKETS);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

/* The fast path's memo of the workers' decisions: 5-tuple -> rewrite. Only
 * workers insert and delete; the program reads entries and bumps their
 * counters. LRU, so a full cache forgets its coldest flow, whose next packet
 * simply takes the slow path again.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CACHED_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_action);
} flow_cache SEC(".maps");

/* flow_cache for IPv6 flows, sized like it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CACHED_FLOWS);
	__type(key, struct flow_key6);
	__type(value, struct flow_action6);
} flow_cache6 SEC(".maps");

/* Whether the fast path is on, the running config generation, and the L2
 * epoch a cache entry must carry to be applied (see FAST_STATE_* in
 * consts.h). An array slot reads as zero until written, and epoch 0 is
 * never published, so nothing applies before userspace has set the state.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FAST_STATE_MAX);
	__type(key, __u32);
	__type(value, __u64);
} fast_state SEC(".maps");

/* Per stats slot (one (listener, backend) pair of the running config): the
 * low 32 bits of the config generation in which the pair's listener last
 * changed. A cache entry applies only while it carries its slot's value, so
 * a reload or drain sends back to the workers the cached flows of the
 * listeners it changed and no others; a removed pair's slot reads 0, which
 * no entry carries. Slot 0 (STATS_SLOT_NONE) is never written: the workers
 * do not cache a flow without a slot.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_STATS_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} fast_epochs SEC(".maps");

/* Fast-path packets and bytes per (listener, backend) stats slot, per CPU.
 * Slot 0 (STATS_SLOT_NONE) is reserved: a zero-filled action counts nowhere
 * that userspace reports.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_STATS_SLOTS);
	__type(key, __u32);
	__type(value, struct fast_counters);
} fast_stats SEC(".maps");

/* Attached interfaces by slot, for redirecting a rewritten frame out of a
 * port other than the one it came in on.
 */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, MAX_IFACES);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} tx_ports SEC(".maps");

/* Source ranges: (listener VIP, port, protocol, source prefix) -> SOURCE_ALLOW
 * or SOURCE_DENY. The longest prefix decides; userspace compiles each
 * listener's lists so that it is right (an allowed range inside a denied
 * one is left out, since deny wins, and a /0 entry says what an unlisted
 * source gets when the listener has an allow list). A listener without
 * ranges has no entry.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_SOURCE_RANGES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct source_range_key);
	__type(value, __u8);
} source_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_SOURCE_RANGES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct source_range_key6);
	__type(value, __u8);
} source_ranges6 SEC(".maps");

/* Frames dropped for their source, per listener (keyed as vip_map, by VIP,
 * so the count outlives reloads), per CPU. Userspace creates the entry of
 * each listener with ranges; the program only adds to it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct service_key);
	__type(value, __u64);
} source_denied SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct service_key6);
	__type(value, __u64);
} source_denied6 SEC(".maps");

/* [0]: POLICY_RANGES_* bits; see consts.h. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} policy_state SEC(".maps");

/* Frames per enum steer_counter reason, per CPU; userspace sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#endif /* SWITCHYARD_MAPS_H */
