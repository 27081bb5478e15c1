//! DNS records of programmed Gateways (GEP-3539): every Gateway Switchyard
//! serves is `<gateway>.<namespace>.gw.<cluster-domain>`. The records are
//! part of the snapshot, so the daemon's DNS answers change with the
//! configuration, atomically.

use std::fmt;

/// The cluster domain when the configuration does not name one.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum RecordType {
    A,
    AAAA,
    CNAME,
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::AAAA => "AAAA",
            Self::CNAME => "CNAME",
        })
    }
}

/// One answer: `name` (fully qualified, lower case, without the trailing
/// dot) has `value` (an address for A/AAAA, a name for CNAME).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    pub value: String,
}
