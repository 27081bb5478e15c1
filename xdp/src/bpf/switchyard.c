/* The steering program: frames for a VIP listener, and replies from backend
 * endpoints of NAT'd flows, go to the AF_XDP socket of their rx queue;
 * everything else goes to the kernel stack untouched. It never drops a
 * frame and decides nothing: the workers decide. The one rewrite it does is
 * the fast path's replay of a decision a worker cached (fast_path.h).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"
#include "consts.h"
#include "count.h"
#include "fast_path.h"
#include "maps.h"
#include "parse.h"
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

static __always_inline bool is_local_addr(__be32 addr)
{
	return bpf_map_lookup_elem(&local_addrs, &addr) != NULL;
}

/* Slot of the interface with this ifindex, or MAX_IFACES if it has none. */
static __always_inline __u32 ifindex_slot(__u32 ifindex)
{
	__u32 *slot = bpf_map_lookup_elem(&if_slots, &ifindex);

	if (unlikely(!slot))
		return MAX_IFACES;
	return *slot;
}

/* Redirects to the AF_XDP socket bound to this frame's (interface, queue).
 * Without one the frame goes to the kernel, so a missing worker degrades to
 * "not load-balanced", never to "dropped".
 */
static __always_inline int steer(struct xdp_md *ctx, __u32 counter)
{
	__u32 slot = ifindex_slot(ctx->ingress_ifindex);
	__u32 queue = ctx->rx_queue_index;
	__u32 index;

	/* A queue beyond MAX_QUEUES would alias the next interface's slot. */
	if (unlikely(slot >= MAX_IFACES || queue >= MAX_QUEUES))
		return pass(NO_SOCKET);

	index = slot * MAX_QUEUES + queue;
	if (unlikely(!bpf_map_lookup_elem(&xsks_map, &index)))
		return pass(NO_SOCKET);

	count(counter);
	/* The socket may be removed between lookup and redirect; the flags
	 * argument makes that rare case a pass as well.
	 */
	return bpf_redirect_map(&xsks_map, index, XDP_PASS);
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
	case PARSE_NOT_IPV4:
		return pass(PASS_NOT_IPV4);
	case PARSE_FRAGMENT:
		return pass(PASS_FRAGMENT);
	case PARSE_NOT_L4:
		return pass(PASS_NOT_SERVICE);
	default:
		return pass(PARSE_ERROR);
	}

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
		if (is_local_addr(pkt.daddr))
			return pass(PASS_LOCAL);
		return steer(ctx, STEER_REPLY);
	}

	return pass(PASS_NOT_SERVICE);
}

/* GPL-compatible so that GPL-only helpers stay available to later programs
 * in this object; the ones used here do not require it.
 */
char _license[] SEC("license") = "GPL";
