//! The YAML of forwarding modes and traffic policy: `spec.forwarding` of a
//! `GatewayClassConfig` (the class's default) and of a `TrafficPolicy` (a
//! Gateway's or one listener's), and a TrafficPolicy's `sourceRanges` and
//! `limits`. Only what a CRD schema would check is checked here: which
//! fields go with which mode, CIDR syntax, non-zero limits. What they mean
//! for a listener is `resolve::traffic`'s.

use std::net::IpAddr;
use std::num::NonZeroU32;

use ipnet::IpNet;
use serde::Deserialize;

use crate::schema;
use crate::snapshot::{Forwarding, FullNat, Gue, ProxyProtocol};

/// `spec.forwarding`: how a listener's packets reach its backends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardingSpec {
    pub mode: ForwardingMode,
    /// `fullnat` only: LB-owned source addresses. Absent: the address of
    /// the interface a packet leaves by.
    #[serde(default, deserialize_with = "schema::list::<_, _, 0, 16>")]
    pub snat_addresses: Vec<IpAddr>,
    /// `fullnat` only, applied to TCP listeners.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// `gue` only; absent: `DEFAULT_GUE_PORT`.
    #[serde(default, deserialize_with = "schema::opt_port")]
    pub gue_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardingMode {
    Nat,
    #[serde(rename = "fullnat")]
    FullNat,
    Dsr,
    Ipip,
    Gue,
}

impl ForwardingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nat => "nat",
            Self::FullNat => "fullnat",
            Self::Dsr => "dsr",
            Self::Ipip => "ipip",
            Self::Gue => "gue",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ProxyProtocolVersion {
    V2,
}

impl ForwardingSpec {
    /// What the snapshot holds for a listener of this setting.
    pub fn forwarding(&self) -> Forwarding {
        match self.mode {
            ForwardingMode::Nat => Forwarding::Nat,
            ForwardingMode::FullNat => Forwarding::FullNat(FullNat {
                addresses: self.snat_addresses.clone(),
                proxy_protocol: self.proxy_protocol.map(|v| match v {
                    ProxyProtocolVersion::V2 => ProxyProtocol::V2,
                }),
            }),
            ForwardingMode::Dsr => Forwarding::Dsr,
            ForwardingMode::Ipip => Forwarding::Ipip,
            ForwardingMode::Gue => Forwarding::Gue(match self.gue_port {
                Some(port) => Gue { port },
                None => Gue::default(),
            }),
        }
    }

    /// The rules a CRD would state in CEL: each field with its mode.
    pub fn check(&self) -> Result<(), String> {
        let mode = self.mode.as_str();
        if !self.snat_addresses.is_empty() && self.mode != ForwardingMode::FullNat {
            return Err(format!(
                "forwarding.snatAddresses: only mode fullnat rewrites the source; mode is {mode}"
            ));
        }
        if self.proxy_protocol.is_some() && self.mode != ForwardingMode::FullNat {
            return Err(format!(
                "forwarding.proxyProtocol: only mode fullnat hides the client's address from \
                 the backends; mode is {mode}"
            ));
        }
        if self.gue_port.is_some() && self.mode != ForwardingMode::Gue {
            return Err(format!(
                "forwarding.guePort: only mode gue has a UDP port; mode is {mode}"
            ));
        }
        if let Some(bad) = self.snat_addresses.iter().find(|a| !usable_source(**a)) {
            return Err(format!(
                "forwarding.snatAddresses: {bad} cannot be a packet's source (unspecified, \
                 loopback, multicast or broadcast)"
            ));
        }
        let mut seen = Vec::with_capacity(self.snat_addresses.len());
        for address in &self.snat_addresses {
            if seen.contains(address) {
                return Err(format!(
                    "forwarding.snatAddresses: {address} is listed twice"
                ));
            }
            seen.push(*address);
        }
        Ok(())
    }
}

/// Whether `address` may be a unicast source on the wire.
fn usable_source(address: IpAddr) -> bool {
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address == IpAddr::from([255, 255, 255, 255]))
}

/// `spec.sourceRanges` of a TrafficPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceRangesSpec {
    /// Absent: every client not denied. Present (even empty): only these.
    #[serde(default, deserialize_with = "opt_cidrs")]
    pub allow: Option<Vec<IpNet>>,
    #[serde(default, deserialize_with = "cidrs")]
    pub deny: Vec<IpNet>,
}

/// `spec.limits` of a TrafficPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default)]
    pub new_flows_per_second: Option<NonZeroU32>,
    #[serde(default)]
    pub max_flows: Option<NonZeroU32>,
}

/// Ranges in a list, at most; a Service's `loadBalancerSourceRanges`
/// shares it.
pub const MAX_SOURCE_RANGES: usize = 256;

/// A CIDR list, host bits cleared (`10.1.2.3/8` means `10.0.0.0/8`, as
/// Kubernetes reads `loadBalancerSourceRanges`).
pub(crate) fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let texts: Vec<String> = schema::list::<_, _, 0, MAX_SOURCE_RANGES>(d)?;
    texts
        .iter()
        .map(|text| {
            text.trim()
                .parse::<IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{}: not a CIDR range (address/prefix length, e.g. 192.0.2.0/24 or \
                     2001:db8::/32)",
                        crate::excerpt::Quoted(text)
                    ))
                })
        })
        .collect()
}

fn opt_cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    cidrs(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<ForwardingSpec, String> {
        let spec: ForwardingSpec = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        spec.check().map(|()| spec)
    }

    #[test]
    fn each_mode_reads_with_its_own_fields() {
        assert_eq!(spec("mode: nat").unwrap().forwarding(), Forwarding::Nat);
        assert_eq!(
            spec("{mode: fullnat, snatAddresses: [198.18.2.1], proxyProtocol: V2}")
                .unwrap()
                .forwarding(),
            Forwarding::FullNat(FullNat {
                addresses: vec!["198.18.2.1".parse().unwrap()],
                proxy_protocol: Some(ProxyProtocol::V2),
            })
        );
        assert_eq!(spec("mode: dsr").unwrap().forwarding(), Forwarding::Dsr);
        assert_eq!(spec("mode: ipip").unwrap().forwarding(), Forwarding::Ipip);
        assert_eq!(
            spec("mode: gue").unwrap().forwarding(),
            Forwarding::Gue(Gue { port: 6080 })
        );
        assert_eq!(
            spec("{mode: gue, guePort: 7777}").unwrap().forwarding(),
            Forwarding::Gue(Gue { port: 7777 })
        );
    }

    #[test]
    fn a_field_of_another_mode_is_refused() {
        for (yaml, field) in [
            ("{mode: dsr, snatAddresses: [198.18.2.1]}", "snatAddresses"),
            ("{mode: nat, proxyProtocol: V2}", "proxyProtocol"),
            ("{mode: ipip, guePort: 6080}", "guePort"),
        ] {
            let error = spec(yaml).unwrap_err();
            assert!(error.contains(field), "{yaml}: {error}");
        }
        assert!(spec("mode: tunnel")
            .unwrap_err()
            .contains("unknown variant"));
        assert!(spec("{mode: gue, guePort: 0}").is_err());
        assert!(spec("{mode: fullnat, snatAddresses: [127.0.0.1]}")
            .unwrap_err()
            .contains("loopback"));
        assert!(
            spec("{mode: fullnat, snatAddresses: [198.18.2.1, 198.18.2.1]}")
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn source_ranges_clear_host_bits_and_name_a_bad_entry() {
        let ranges: SourceRangesSpec =
            serde_norway::from_str("{allow: [10.1.2.3/8], deny: ['2001:db8::1/32']}").unwrap();
        assert_eq!(ranges.allow, Some(vec!["10.0.0.0/8".parse().unwrap()]));
        assert_eq!(ranges.deny, vec!["2001:db8::/32".parse().unwrap()]);
        let error = serde_norway::from_str::<SourceRangesSpec>("{allow: [10.0.0.0/33]}")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"10.0.0.0/33\": not a CIDR range"),
            "{error}"
        );
        let empty: SourceRangesSpec = serde_norway::from_str("{allow: []}").unwrap();
        assert_eq!(empty.allow, Some(vec![]));
    }

    #[test]
    fn limits_are_positive() {
        assert!(serde_norway::from_str::<LimitsSpec>("{maxFlows: 0}").is_err());
        let limits: LimitsSpec =
            serde_norway::from_str("{newFlowsPerSecond: 100, maxFlows: 10}").unwrap();
        assert_eq!(limits.max_flows.map(NonZeroU32::get), Some(10));
    }
}
