/* XDP programs for measuring Switchyard, never loaded by the appliance:
 *
 * - pktgen: run through BPF_PROG_TEST_RUN in live-frames mode, it turns one
 *   template frame into a stream of frames over many flows, stamps each with
 *   the time it was sent and sends it (XDP_TX out of the test interface).
 * - sink: counts the frames that arrive, and the latency of stamped ones
 *   into a histogram, then drops them.
 * - tx_all, redirect_all, pass_all: the in-kernel limits and a plain
 *   receiver, to measure against.
 *
 * Frames carry a stamp after the L4 header: struct stamp (structs below).
 */
#include <stdbool.h>

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compiler.h"

/* Marks a stamped frame; "SWYP". */
#define STAMP_MAGIC 0x53575950

/* Latency histogram: values below SUB_BUCKETS ns each have a bucket; above,
 * each power of two has SUB_BUCKETS buckets, so a bucket is within 1/16 of
 * its values. Rust twin: xdp/src/tools.rs.
 */
#define SUB_BITS 4
#define SUB_BUCKETS (1 << SUB_BITS)
#define LATENCY_BUCKETS 1024

/* Bytes of a template restored per frame: every header and the stamp. */
#define HEAD_MAX 128

/* The stamp pktgen writes after the L4 header, network order. */
struct stamp {
	__be32 magic;
	__be32 flow;
	__be64 sent_ns;
};

/* Rust twin: PktgenConfig in xdp/src/tools.rs. The template frame carries
 * zeros where pktgen writes (the low 32 bits of the source address, the
 * source port, the TCP flags, the stamp's flow and time), so each
 * checksum is the template's plus the one's complement sum of what is
 * written.
 */
struct pktgen_config {
	__u64 flows;		/* flows cycled; 0: every frame a new flow */
	__u32 saddr_base;	/* low 32 bits of the first source address */
	__u32 saddr_count;
	__u16 sport_base;
	__u16 sport_count;
	__u16 l3_off;
	__u16 l4_off;
	__u16 stamp_off;
	__u16 ip_csum;		/* IPv4 header checksum of the template, host order */
	__u16 l4_csum;		/* L4 checksum of the template, host order */
	__u8 proto;
	__u8 ipv6;
	__u32 syn_every;	/* TCP: every n-th frame is a SYN, the rest ACKs */
	__u32 head_len;		/* bytes of head to restore into every frame */
	/* Every n-th frame opens a new flow, numbered after the cycled ones
	 * (0: none): the new-flow rate is the frame rate over n.
	 */
	__u32 new_every;
	__u32 pad;
	/* The template's first head_len bytes. Live-frames mode recycles
	 * pages with whatever the path under test left in them (a DNAT
	 * rewrites the destination in place), so every frame starts again
	 * from the template.
	 */
	__u8 head[HEAD_MAX];
};

struct counters {
	__u64 packets;
	__u64 bytes;
	__u64 stamped;
	__u64 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pktgen_config);
} pktgen_config SEC(".maps");

/* Frames generated so far, per CPU: the flow index of the next one. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pktgen_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} sink_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LATENCY_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} sink_latency SEC(".maps");

/* Where redirect_all sends everything: slot 0. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} redirect_port SEC(".maps");

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

static __always_inline __u32 words32(__u32 v)
{
	return (v >> 16) + (v & 0xffff);
}

static __always_inline __u32 words64(__u64 v)
{
	return words32(v >> 32) + words32(v & 0xffffffff);
}

static __always_inline __u16 csum_add(__u16 check, __u32 sum)
{
	return ~fold((__u32)(__u16)~check + fold(sum));
}

SEC("xdp")
int pktgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pktgen_config *cfg;
	struct stamp *stamp;
	__u32 zero = 0, saddr, added, l3_off, l4_off, stamp_off;
	__u64 *seq, n, flow, now, head_len;
	__u16 sport, flags = 0;

	cfg = bpf_map_lookup_elem(&pktgen_config, &zero);
	seq = bpf_map_lookup_elem(&pktgen_seq, &zero);
	if (!cfg || !seq || !cfg->saddr_count || !cfg->sport_count)
		return XDP_ABORTED;
	n = *seq;
	*seq = n + 1;
	/* 64 bits, so the checked register is the one passed to the helper
	 * (a 32-bit one is zero-extended into a copy the verifier does not
	 * connect to it).
	 */
	head_len = cfg->head_len - 1;
	/* Checked as one unsigned range (1..=HEAD_MAX) and rebuilt after a
	 * barrier: Linux 6.1's verifier learns no lower bound from a failed
	 * `== 0` test, and the helper refuses a size that may be 0.
	 */
	barrier_var(head_len);
	if (head_len >= HEAD_MAX)
		return XDP_ABORTED;
	head_len += 1;
	if (bpf_xdp_store_bytes(ctx, 0, cfg->head, head_len) < 0)
		return XDP_ABORTED;
	/* Stored bytes may move the packet: read its bounds again. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (cfg->new_every && n % cfg->new_every == 0)
		flow = cfg->flows + n / cfg->new_every;
	else
		flow = cfg->flows ? n % cfg->flows : n;
	sport = cfg->sport_base + flow % cfg->sport_count;
	saddr = cfg->saddr_base + (flow / cfg->sport_count) % cfg->saddr_count;
	now = bpf_ktime_get_ns();

	/* Masked once into locals, so the verifier can bound packet offsets
	 * (headers of the frames pktgen builds end well within these).
	 */
	l3_off = cfg->l3_off & 0x3f;
	l4_off = cfg->l4_off & 0x7f;
	stamp_off = cfg->stamp_off & 0xff;
	stamp = data + stamp_off;
	if ((void *)(stamp + 1) > data_end)
		return XDP_ABORTED;
	stamp->flow = bpf_htonl((__u32)flow);
	stamp->sent_ns = bpf_cpu_to_be64(now);

	if (cfg->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = data + l4_off;

		if ((void *)(tcp + 1) > data_end)
			return XDP_ABORTED;
		flags = cfg->syn_every && n % cfg->syn_every == 0 ? 0x02 : 0x10;
		((__u8 *)tcp)[13] = flags;
		tcp->source = bpf_htons(sport);
	} else {
		struct udphdr *udp = data + l4_off;

		if ((void *)(udp + 1) > data_end)
			return XDP_ABORTED;
		udp->source = bpf_htons(sport);
	}

	/* Everything written went over zeros of the template: each checksum
	 * moves by the sum of the words written.
	 */
	added = words32(saddr) + sport + flags + words32((__u32)flow) + words64(now);
	if (cfg->ipv6) {
		struct ipv6hdr *ip6 = data + l3_off;

		if ((void *)(ip6 + 1) > data_end)
			return XDP_ABORTED;
		ip6->saddr.in6_u.u6_addr32[3] = bpf_htonl(saddr);
	} else {
		struct iphdr *ip = data + l3_off;

		if ((void *)(ip + 1) > data_end)
			return XDP_ABORTED;
		ip->saddr = bpf_htonl(saddr);
		ip->check = bpf_htons(csum_add(cfg->ip_csum, words32(saddr)));
	}
	if (cfg->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = data + l4_off;

		if ((void *)(tcp + 1) > data_end)
			return XDP_ABORTED;
		tcp->check = bpf_htons(csum_add(cfg->l4_csum, added));
	} else {
		struct udphdr *udp = data + l4_off;
		__u16 check;

		if ((void *)(udp + 1) > data_end)
			return XDP_ABORTED;
		check = csum_add(cfg->l4_csum, added);
		udp->check = bpf_htons(check ? check : 0xffff);
	}
	return XDP_TX;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

static __always_inline __u32 latency_bucket(__u64 ns)
{
	__u32 e, bucket;

	if (ns < SUB_BUCKETS)
		return ns;
	e = log2_u64(ns);
	bucket = SUB_BUCKETS + (e - SUB_BITS) * SUB_BUCKETS +
		 ((ns >> (e - SUB_BITS)) & (SUB_BUCKETS - 1));
	return bucket < LATENCY_BUCKETS ? bucket : LATENCY_BUCKETS - 1;
}

/* Offset of the stamp in an Ethernet/IPv4-or-IPv6/TCP-or-UDP frame, or 0. */
static __always_inline __u64 stamp_offset(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	__u64 l4_off;
	__u8 proto;

	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return 0;
		proto = ip->protocol;
		l4_off = sizeof(*eth) + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		proto = ip6->nexthdr;
		l4_off = sizeof(*eth) + sizeof(*ip6);
	} else {
		return 0;
	}
	if (proto == IPPROTO_UDP)
		return l4_off + sizeof(struct udphdr);
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = data + l4_off;

		if (l4_off > 128 || (void *)(tcp + 1) > data_end)
			return 0;
		return l4_off + tcp->doff * 4;
	}
	return 0;
}

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct counters *counters;
	struct stamp *stamp;
	__u32 zero = 0, bucket;
	__u64 off, *slot, sent, now;

	counters = bpf_map_lookup_elem(&sink_counters, &zero);
	if (!counters)
		return XDP_DROP;
	counters->packets += 1;
	counters->bytes += data_end - data;

	off = stamp_offset(data, data_end);
	if (off == 0 || off > 256)
		return XDP_DROP;
	stamp = data + off;
	if ((void *)(stamp + 1) > data_end || stamp->magic != bpf_htonl(STAMP_MAGIC))
		return XDP_DROP;
	sent = bpf_be64_to_cpu(stamp->sent_ns);
	now = bpf_ktime_get_ns();
	counters->stamped += 1;
	bucket = latency_bucket(now > sent ? now - sent : 0);
	slot = bpf_map_lookup_elem(&sink_latency, &bucket);
	if (slot)
		*slot += 1;
	return XDP_DROP;
}

SEC("xdp")
int tx_all(struct xdp_md *ctx)
{
	return XDP_TX;
}

SEC("xdp")
int redirect_all(struct xdp_md *ctx)
{
	return bpf_redirect_map(&redirect_port, 0, 0);
}

SEC("xdp")
int pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
