//! Every reason a worker drops a packet. Each is a per-worker counter shown
//! by `yardctl stats`; adding a reason means adding it to `ALL` too.

use crate::packet::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    Truncated,
    NotIp,
    BadIpHeader,
    /// A fragment the worker could not place (never counted while the
    /// fragment path reads every fragment `parse` refuses; the name stays
    /// so counters keep their meaning across releases).
    Fragment,
    UnsupportedProtocol,
    BadL4Header,
    ExtHeaderChainTooLong,
    /// Steered by XDP but matching no listener or backend of the snapshot
    /// the worker holds (e.g. between a config swap and the map update).
    NotAService,
    /// The flow hashed onto the share of a backendRef with no endpoint.
    BackendUnavailable,
    /// A backend of another family than the packet's; never taken while
    /// listeners keep to their VIP's family, as `Listener` checks.
    UnsupportedAddressFamily,
    NoRoute,
    NeighbourUnresolved,
    /// The next hop is reached through an interface Switchyard does not own.
    EgressNotOwned,
    /// A packet from a backend endpoint that answers no flow a client
    /// opened through the load balancer (none in the shared reply table, or
    /// its listener or backend gone): forged, or after the flow ended.
    ReplyWithoutFlow,
    TxRingFull,
    /// A segment of a TCP connection whose backend a config change removed;
    /// the client is sent a reset instead.
    BackendRemoved,
    /// A fragment after the first (no ports) whose datagram's first
    /// fragment this worker has not forwarded: it came first, or the first
    /// was refused or dropped, or its entry expired or was evicted.
    FragmentWithoutFirst,
    /// An ICMP or ICMPv6 message shorter than its header, an echo request
    /// whose checksum does not verify, or an error whose quoted IP header
    /// and the 8 bytes after it (the ports) cannot be read.
    BadIcmp,
    /// An ICMP or ICMPv6 message about no flow Switchyard translates: an
    /// error quoting a packet of no listener's or backend's, or other than
    /// the start of a TCP or UDP packet, or a client flow whose share has
    /// no backend; or a type that is neither an echo request nor an error.
    /// The kernel's answer would speak for an address it does not own.
    IcmpWithoutFlow,
    /// A packet that would not fit its egress: larger than the egress
    /// link's MTU (the VLAN link's when it leaves by one), or no room in
    /// its buffer for the VLAN tag the link wants.
    FrameTooBig,
    /// A new flow (or, after a reload, a flow already open) from a client
    /// outside its listener's source ranges: normally dropped by the
    /// steering program before it reaches a worker; counted here in the
    /// moment between a publish and the map write.
    SourceDenied,
    /// A new flow beyond this worker's share of its listener's
    /// `newFlowsPerSecond`; a TCP one is answered with a reset.
    NewFlowRateLimited,
    /// A new flow while this worker holds its share of its listener's
    /// `maxFlows`; a TCP one is answered with a reset.
    MaxFlowsReached,
    /// A new `fullnat` flow for which the worker's slice of the SNAT port
    /// range had no free port for its SNAT address (also counted per
    /// address, `snat_exhausted`), or the worker was given no SNAT ports
    /// (the daemon refuses such a config).
    SnatPortsExhausted,
    /// A new `fullnat` flow with no SNAT address of its backend's family:
    /// none configured, and none on the interface it would leave by.
    NoSnatAddress,
    /// A new `dsr` flow whose backend is behind a router: only the
    /// destination MAC changes in this mode, so the backend must be on-link.
    DsrBackendNotOnLink,
    /// A TCP segment opening no connection (no SYN) of a `fullnat` flow
    /// with PROXY protocol that no worker has bound: where the client's
    /// stream starts, and so where the header goes, is unknown. Answered
    /// with a reset, as the backend would answer a stranger's segment.
    ProxyStartUnseen,
}

impl DropReason {
    pub const ALL: [DropReason; 27] = [
        Self::Truncated,
        Self::NotIp,
        Self::BadIpHeader,
        Self::Fragment,
        Self::UnsupportedProtocol,
        Self::BadL4Header,
        Self::ExtHeaderChainTooLong,
        Self::NotAService,
        Self::BackendUnavailable,
        Self::UnsupportedAddressFamily,
        Self::NoRoute,
        Self::NeighbourUnresolved,
        Self::EgressNotOwned,
        Self::ReplyWithoutFlow,
        Self::TxRingFull,
        Self::BackendRemoved,
        Self::FragmentWithoutFirst,
        Self::BadIcmp,
        Self::IcmpWithoutFlow,
        Self::FrameTooBig,
        Self::SourceDenied,
        Self::NewFlowRateLimited,
        Self::MaxFlowsReached,
        Self::SnatPortsExhausted,
        Self::NoSnatAddress,
        Self::DsrBackendNotOnLink,
        Self::ProxyStartUnseen,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::NotIp => "not_ip",
            Self::BadIpHeader => "bad_ip_header",
            Self::Fragment => "fragment",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::BadL4Header => "bad_l4_header",
            Self::ExtHeaderChainTooLong => "ext_header_chain_too_long",
            Self::NotAService => "not_a_service",
            Self::BackendUnavailable => "backend_unavailable",
            Self::UnsupportedAddressFamily => "unsupported_address_family",
            Self::NoRoute => "no_route",
            Self::NeighbourUnresolved => "neighbour_unresolved",
            Self::EgressNotOwned => "egress_not_owned",
            Self::ReplyWithoutFlow => "reply_without_flow",
            Self::TxRingFull => "tx_ring_full",
            Self::BackendRemoved => "backend_removed",
            Self::FragmentWithoutFirst => "fragment_without_first",
            Self::BadIcmp => "bad_icmp",
            Self::IcmpWithoutFlow => "icmp_without_flow",
            Self::FrameTooBig => "frame_too_big",
            Self::SourceDenied => "source_denied",
            Self::NewFlowRateLimited => "new_flow_rate_limited",
            Self::MaxFlowsReached => "max_flows_reached",
            Self::SnatPortsExhausted => "snat_ports_exhausted",
            Self::NoSnatAddress => "no_snat_address",
            Self::DsrBackendNotOnLink => "dsr_backend_not_on_link",
            Self::ProxyStartUnseen => "proxy_start_unseen",
        }
    }
}

impl From<ParseError> for DropReason {
    fn from(error: ParseError) -> Self {
        match error {
            ParseError::Truncated => Self::Truncated,
            ParseError::NotIp => Self::NotIp,
            ParseError::BadIpHeader => Self::BadIpHeader,
            ParseError::Fragment => Self::Fragment,
            ParseError::UnsupportedProtocol => Self::UnsupportedProtocol,
            ParseError::BadL4Header => Self::BadL4Header,
            ParseError::ExtHeaderChainTooLong => Self::ExtHeaderChainTooLong,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_once_in_discriminant_order() {
        for (index, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index, "{}", reason.name());
        }
    }
}
