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

/// RFC 1123 host name of at most `max_len` characters (without the trailing
/// dot): labels of letters, digits and `-`, neither starting nor ending
/// with `-`.
pub fn is_host_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks and normalises a cluster domain given by an operator: DNS labels
/// of letters, digits and `-`, lower-cased, without the trailing dot.
pub fn cluster_domain(text: &str) -> Result<String, String> {
    let domain = text.trim_end_matches('.').to_ascii_lowercase();
    // Room is left for `<gateway>.<namespace>.gw.` in front of it.
    if is_host_name(&domain, 200) {
        Ok(domain)
    } else {
        Err(format!(
            "{text:?} is not a DNS domain such as cluster.local (labels of letters, digits and -, \
             at most 200 characters so that Gateway names fit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_domain_is_lower_cased_without_trailing_dot() {
        assert_eq!(cluster_domain("Cluster.Local.").unwrap(), "cluster.local");
        for bad in ["", ".", "a..b", "-a.b", "a_b.c", "\u{e9}.local"] {
            assert!(cluster_domain(bad).is_err(), "{bad}");
        }
    }
}
