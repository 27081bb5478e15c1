//! The YAML of active health checks: `spec.healthCheck` of a
//! `TrafficPolicy`, shaped after Envoy Gateway's
//! `BackendTrafficPolicy.spec.healthCheck.active` so that its users meet
//! the fields they know. Only what the CRD states is checked here (each
//! field's bounds, which probe fields go with which `type`, `timeout`
//! below `interval`); which backendRefs a check applies to is
//! `resolve::health`'s.

use std::time::Duration;

use serde::Deserialize;

use crate::duration::{self, Shown};
use crate::excerpt::Quoted;
use crate::schema;
use crate::snapshot::{HealthCheck, Probe, WhenAllUnhealthy};

/// Defaults, as Envoy Gateway's `ActiveHealthCheck` has them.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// An HTTP probe passes on these statuses when none are listed.
pub const DEFAULT_EXPECTED_STATUSES: [u16; 1] = [200];

/// Bounds of `interval`: below 100ms a probe per endpoint costs more than
/// it tells; above an hour a dead backend keeps its flows for too long to
/// call it checked.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Largest threshold: 100 probes in a row is already minutes at most
/// intervals; beyond that the check decides nothing.
pub const MAX_THRESHOLD: u32 = 100;
/// Largest payload a probe sends or looks for, in bytes.
pub const MAX_PAYLOAD: usize = 1024;
/// Largest HTTP path, in bytes.
pub const MAX_PATH: usize = 1024;

/// `spec.healthCheck` of a TrafficPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    pub active: ActiveCheckSpec,
    /// What a backendRef whose endpoints all fail does.
    #[serde(default)]
    pub when_all_unhealthy: AllUnhealthyPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AllUnhealthyPolicy {
    #[default]
    FailOpen,
    Refuse,
}

/// `spec.healthCheck.active`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActiveCheckSpec {
    #[serde(rename = "type")]
    pub probe_type: ProbeType,
    #[serde(default, deserialize_with = "duration::opt")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::opt")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_threshold")]
    pub healthy_threshold: Option<u32>,
    #[serde(default, deserialize_with = "opt_threshold")]
    pub unhealthy_threshold: Option<u32>,
    /// Absent: each endpoint's own port.
    #[serde(default, deserialize_with = "schema::opt_port")]
    pub port: Option<u16>,
    #[serde(default)]
    pub http: Option<HttpProbeSpec>,
    #[serde(default)]
    pub tcp: Option<TcpProbeSpec>,
    #[serde(default)]
    pub udp: Option<UdpProbeSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ProbeType {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "HTTP")]
    Http,
}

impl ProbeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Http => "HTTP",
        }
    }
}

/// `active.http`: a `GET` of `path`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbeSpec {
    pub path: String,
    /// The `Host` header; absent: the probed address and port.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Absent: `DEFAULT_EXPECTED_STATUSES`.
    #[serde(default, deserialize_with = "opt_statuses")]
    pub expected_statuses: Option<Vec<u16>>,
    /// Text the body must contain.
    #[serde(default)]
    pub expected_response: Option<PayloadSpec>,
}

/// `active.tcp`: after connecting, optionally send and expect bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbeSpec {
    #[serde(default)]
    pub send: Option<PayloadSpec>,
    #[serde(default)]
    pub receive: Option<PayloadSpec>,
}

/// `active.udp`: a datagram to send and, optionally, what the reply holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UdpProbeSpec {
    pub send: PayloadSpec,
    #[serde(default)]
    pub receive: Option<PayloadSpec>,
}

/// Envoy Gateway's `ActiveHealthCheckPayload`: text, or base64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PayloadSpec {
    #[serde(rename = "type")]
    pub payload_type: PayloadType,
    #[serde(default)]
    pub text: Option<String>,
    /// Base64 (RFC 4648, padded).
    #[serde(default)]
    pub binary: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PayloadType {
    Text,
    Binary,
}

impl PayloadSpec {
    /// The bytes the payload stands for, or why it stands for none;
    /// `field` names it in the message.
    pub fn bytes(&self, field: &str) -> Result<Vec<u8>, String> {
        let bytes = match (self.payload_type, &self.text, &self.binary) {
            (PayloadType::Text, Some(text), None) => text.as_bytes().to_vec(),
            (PayloadType::Binary, None, Some(binary)) => base64(binary).ok_or_else(|| {
                format!(
                    "{field}.binary: {} is not base64 (RFC 4648: A-Z, a-z, 0-9, + and /, padded \
                     with = to a multiple of 4 characters)",
                    Quoted(binary)
                )
            })?,
            (PayloadType::Text, _, Some(_)) => {
                return Err(format!(
                    "{field}.binary: only type Binary has binary; type is Text"
                ))
            }
            (PayloadType::Binary, Some(_), _) => {
                return Err(format!(
                    "{field}.text: only type Text has text; type is Binary"
                ))
            }
            (PayloadType::Text, None, None) => {
                return Err(format!("{field}.text: required with type Text"))
            }
            (PayloadType::Binary, None, None) => {
                return Err(format!("{field}.binary: required with type Binary"))
            }
        };
        let which = match self.payload_type {
            PayloadType::Text => "text",
            PayloadType::Binary => "binary",
        };
        if bytes.is_empty() {
            return Err(format!(
                "{field}.{which}: empty; leave {field} out to send or expect nothing"
            ));
        }
        if bytes.len() > MAX_PAYLOAD {
            return Err(format!(
                "{field}.{which}: {} bytes, at most {MAX_PAYLOAD} allowed",
                bytes.len()
            ));
        }
        Ok(bytes)
    }
}

impl ActiveCheckSpec {
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

impl HealthCheckSpec {
    /// The rules a CRD would state in CEL, each error naming its field.
    pub fn check(&self) -> Result<(), String> {
        self.probe().map(|_| ())
    }

    /// The check as a backendRef carries it; `policy` is the declaring
    /// TrafficPolicy's `namespace/name`.
    pub fn health_check(&self, policy: String) -> Result<HealthCheck, String> {
        let active = &self.active;
        Ok(HealthCheck {
            policy,
            probe: self.probe()?,
            port: active.port,
            interval: active.interval(),
            timeout: active.timeout(),
            healthy_threshold: active
                .healthy_threshold
                .unwrap_or(DEFAULT_HEALTHY_THRESHOLD),
            unhealthy_threshold: active
                .unhealthy_threshold
                .unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD),
            when_all_unhealthy: match self.when_all_unhealthy {
                AllUnhealthyPolicy::FailOpen => WhenAllUnhealthy::FailOpen,
                AllUnhealthyPolicy::Refuse => WhenAllUnhealthy::Refuse,
            },
        })
    }

    fn probe(&self) -> Result<Probe, String> {
        const AT: &str = "healthCheck.active";
        let active = &self.active;
        let kind = active.probe_type.as_str();
        let (interval, timeout) = (active.interval(), active.timeout());
        if interval < MIN_INTERVAL || interval > MAX_INTERVAL {
            return Err(format!(
                "{AT}.interval: {} is outside {}..={}",
                Shown(interval),
                Shown(MIN_INTERVAL),
                Shown(MAX_INTERVAL)
            ));
        }
        if timeout.is_zero() {
            return Err(format!("{AT}.timeout: 0s leaves a probe no time to pass"));
        }
        if timeout >= interval {
            return Err(format!(
                "{AT}.timeout: {} is not below interval {}{}",
                Shown(timeout),
                Shown(interval),
                if active.interval.is_none() {
                    " (the default)"
                } else {
                    ""
                }
            ));
        }
        for (field, set, owner) in [
            ("http", active.http.is_some(), ProbeType::Http),
            ("tcp", active.tcp.is_some(), ProbeType::Tcp),
            ("udp", active.udp.is_some(), ProbeType::Udp),
        ] {
            if set && active.probe_type != owner {
                return Err(format!(
                    "{AT}.{field}: only type {} has {field}; type is {kind}",
                    owner.as_str()
                ));
            }
        }
        let payload = |payload: &Option<PayloadSpec>, field: &str| {
            payload
                .as_ref()
                .map_or(Ok(Vec::new()), |p| p.bytes(&format!("{AT}.{field}")))
        };
        match active.probe_type {
            ProbeType::Tcp => {
                let tcp = active.tcp.clone().unwrap_or_default();
                Ok(Probe::Tcp {
                    send: payload(&tcp.send, "tcp.send")?,
                    receive: payload(&tcp.receive, "tcp.receive")?,
                })
            }
            ProbeType::Udp => {
                let Some(udp) = &active.udp else {
                    return Err(format!(
                        "{AT}.udp: required with type UDP (udp.send: the datagram to send)"
                    ));
                };
                Ok(Probe::Udp {
                    send: udp.send.bytes(&format!("{AT}.udp.send"))?,
                    receive: payload(&udp.receive, "udp.receive")?,
                })
            }
            ProbeType::Http => {
                let Some(http) = &active.http else {
                    return Err(format!(
                        "{AT}.http: required with type HTTP (http.path: what to GET)"
                    ));
                };
                check_path(&http.path)?;
                if let Some(host) = &http.hostname {
                    check_hostname(host)?;
                }
                let expected_statuses = http
                    .expected_statuses
                    .clone()
                    .unwrap_or_else(|| DEFAULT_EXPECTED_STATUSES.to_vec());
                Ok(Probe::Http {
                    path: http.path.clone(),
                    host: http.hostname.clone(),
                    expected_statuses,
                    expected_body: payload(&http.expected_response, "http.expectedResponse")?,
                })
            }
        }
    }
}

/// An origin-form request target a probe can send as it is: `/` first,
/// then visible ASCII only, so nothing in it can end the request line or
/// smuggle a header.
fn check_path(path: &str) -> Result<(), String> {
    const FIELD: &str = "healthCheck.active.http.path";
    if !path.starts_with('/') {
        return Err(format!("{FIELD}: {} does not start with /", Quoted(path)));
    }
    if path.len() > MAX_PATH {
        return Err(format!(
            "{FIELD}: {} bytes, at most {MAX_PATH} allowed",
            path.len()
        ));
    }
    if let Some(bad) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{FIELD}: {} holds {bad:?}; only visible ASCII is allowed (no whitespace or control \
             characters; percent-encode others)",
            Quoted(path)
        ));
    }
    Ok(())
}

/// A `Host` header value: a lower-case DNS name or an IP address.
fn check_hostname(host: &str) -> Result<(), String> {
    if schema::is_dns_subdomain(host) || host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    Err(format!(
        "healthCheck.active.http.hostname: {} is neither a lower-case DNS name nor an IP address",
        Quoted(host)
    ))
}

/// A threshold: `1..=MAX_THRESHOLD` probes in a row.
fn opt_threshold<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct Threshold(u32);
    impl<'de> Deserialize<'de> for Threshold {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let v = schema::ranged(d, 1, i64::from(MAX_THRESHOLD), "a count of probes")?;
            u32::try_from(v)
                .map(Threshold)
                .map_err(|_| serde::de::Error::custom("threshold out of range"))
        }
    }
    Ok(Option::<Threshold>::deserialize(d)?.map(|t| t.0))
}

/// `expectedStatuses`: 1..=16 HTTP statuses, each `100..=599`.
fn opt_statuses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u16>>, D::Error> {
    struct Status(u16);
    impl<'de> Deserialize<'de> for Status {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let v = schema::ranged(d, 100, 599, "an HTTP status")?;
            u16::try_from(v)
                .map(Status)
                .map_err(|_| serde::de::Error::custom("status out of range"))
        }
    }
    struct Statuses(Vec<u16>);
    impl<'de> Deserialize<'de> for Statuses {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let list: Vec<Status> = schema::list::<_, _, 1, 16>(d)?;
            Ok(Statuses(list.into_iter().map(|s| s.0).collect()))
        }
    }
    Ok(Option::<Statuses>::deserialize(d)?.map(|s| s.0))
}

/// Padded base64 (RFC 4648 §4) decoded, or `None` if `text` is not that.
fn base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<HealthCheck, String> {
        let spec: HealthCheckSpec = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        spec.health_check("demo/p".into())
    }

    #[test]
    fn defaults_are_envoy_gateways() {
        let check = spec("active: {type: TCP}").unwrap();
        assert_eq!(
            check,
            HealthCheck {
                policy: "demo/p".into(),
                probe: Probe::Tcp {
                    send: vec![],
                    receive: vec![]
                },
                port: None,
                interval: Duration::from_secs(3),
                timeout: Duration::from_secs(1),
                healthy_threshold: 1,
                unhealthy_threshold: 3,
                when_all_unhealthy: WhenAllUnhealthy::FailOpen,
            }
        );
    }

    #[test]
    fn each_probe_type_reads_with_its_own_fields() {
        let http = spec(
            "{whenAllUnhealthy: Refuse, active: {type: HTTP, interval: 1s, timeout: 500ms, \
             healthyThreshold: 2, unhealthyThreshold: 4, port: 8081, http: {path: /healthz, \
             hostname: web.example, expectedStatuses: [200, 204], expectedResponse: \
             {type: Text, text: ok}}}}",
        )
        .unwrap();
        assert_eq!(
            http.probe,
            Probe::Http {
                path: "/healthz".into(),
                host: Some("web.example".into()),
                expected_statuses: vec![200, 204],
                expected_body: b"ok".to_vec(),
            }
        );
        assert_eq!(
            (http.interval, http.timeout, http.port),
            (
                Duration::from_secs(1),
                Duration::from_millis(500),
                Some(8081)
            )
        );
        assert_eq!((http.healthy_threshold, http.unhealthy_threshold), (2, 4));
        assert_eq!(http.when_all_unhealthy, WhenAllUnhealthy::Refuse);
        let http = spec("active: {type: HTTP, http: {path: /}}").unwrap();
        assert!(
            matches!(http.probe, Probe::Http { ref expected_statuses, .. } if expected_statuses == &[200])
        );
        assert_eq!(
            spec(
                "active: {type: TCP, tcp: {send: {type: Text, text: \"PING\\r\\n\"}, receive: \
                 {type: Text, text: PONG}}}"
            )
            .unwrap()
            .probe,
            Probe::Tcp {
                send: b"PING\r\n".to_vec(),
                receive: b"PONG".to_vec()
            }
        );
        assert_eq!(
            spec("active: {type: UDP, udp: {send: {type: Binary, binary: AAEC}, receive: {type: Text, text: pong}}}")
                .unwrap()
                .probe,
            Probe::Udp {
                send: vec![0, 1, 2],
                receive: b"pong".to_vec()
            }
        );
    }

    /// Each refusal, with the message that names its field and why.
    #[test]
    fn each_violation_names_its_field_and_why() {
        for (yaml, message) in [
            ("active: {type: TCP, interval: 1s, timeout: 2s}", "healthCheck.active.timeout: 2s is not below interval 1s"),
            ("active: {type: TCP, interval: 1s, timeout: 1s}", "healthCheck.active.timeout: 1s is not below interval 1s"),
            ("active: {type: TCP, timeout: 5s}", "healthCheck.active.timeout: 5s is not below interval 3s (the default)"),
            ("active: {type: TCP, interval: 500ms}", "healthCheck.active.timeout: 1s is not below interval 500ms"),
            ("active: {type: TCP, timeout: 0ms}", "healthCheck.active.timeout: 0s leaves a probe no time to pass"),
            ("active: {type: TCP, interval: 50ms, timeout: 10ms}", "healthCheck.active.interval: 50ms is outside 100ms..=1h"),
            ("active: {type: TCP, interval: 1h1ms}", "healthCheck.active.interval: 1h1ms is outside 100ms..=1h"),
            ("active: {type: TCP, http: {path: /}}", "healthCheck.active.http: only type HTTP has http; type is TCP"),
            ("active: {type: HTTP, http: {path: /}, tcp: {}}", "healthCheck.active.tcp: only type TCP has tcp; type is HTTP"),
            ("active: {type: TCP, udp: {send: {type: Text, text: a}}}", "healthCheck.active.udp: only type UDP has udp; type is TCP"),
            ("active: {type: HTTP}", "healthCheck.active.http: required with type HTTP"),
            ("active: {type: UDP}", "healthCheck.active.udp: required with type UDP"),
            ("active: {type: HTTP, http: {path: healthz}}", "healthCheck.active.http.path: \"healthz\" does not start with /"),
            ("active: {type: HTTP, http: {path: \"/a b\"}}", "healthCheck.active.http.path: \"/a b\" holds ' '; only visible ASCII"),
            ("active: {type: HTTP, http: {path: \"/a\\r\\nX: y\"}}", "holds '\\r'; only visible ASCII"),
            ("active: {type: HTTP, http: {hostname: Web_Example, path: /}}", "healthCheck.active.http.hostname: \"Web_Example\" is neither a lower-case DNS name nor an IP address"),
            ("active: {type: UDP, udp: {send: {type: Text}}}", "healthCheck.active.udp.send.text: required with type Text"),
            ("active: {type: UDP, udp: {send: {type: Binary}}}", "healthCheck.active.udp.send.binary: required with type Binary"),
            ("active: {type: UDP, udp: {send: {type: Text, text: a, binary: YQ==}}}", "healthCheck.active.udp.send.binary: only type Binary has binary; type is Text"),
            ("active: {type: UDP, udp: {send: {type: Binary, text: a, binary: YQ==}}}", "healthCheck.active.udp.send.text: only type Text has text; type is Binary"),
            ("active: {type: UDP, udp: {send: {type: Text, text: \"\"}}}", "healthCheck.active.udp.send.text: empty"),
            ("active: {type: UDP, udp: {send: {type: Binary, binary: \"AAE\"}}}", "healthCheck.active.udp.send.binary: \"AAE\" is not base64"),
            ("active: {type: TCP, tcp: {receive: {type: Binary, binary: \"AA=A\"}}}", "healthCheck.active.tcp.receive.binary: \"AA=A\" is not base64"),
        ] {
            let error = spec(yaml).unwrap_err();
            assert!(error.contains(message), "{yaml}:\n  {error}\n  wanted {message}");
        }
        let long = "a".repeat(MAX_PAYLOAD + 1);
        let error = spec(&format!("active: {{type: HTTP, http: {{path: /, expectedResponse: {{type: Text, text: {long}}}}}}}")).unwrap_err();
        assert!(
            error.contains(
                "healthCheck.active.http.expectedResponse.text: 1025 bytes, at most 1024 allowed"
            ),
            "{error}"
        );
        let long = format!("/{}", "a".repeat(MAX_PATH));
        let error = spec(&format!("active: {{type: HTTP, http: {{path: {long}}}}}")).unwrap_err();
        assert!(
            error.contains("healthCheck.active.http.path: 1025 bytes, at most 1024 allowed"),
            "{error}"
        );
    }

    #[test]
    fn schema_bounds_are_refused_while_reading() {
        for (yaml, message) in [
            ("active: {type: ICMP}", "unknown variant `ICMP`"),
            (
                "active: {type: TCP, healthyThreshold: 0}",
                "invalid value 0, expected 1..=100",
            ),
            (
                "active: {type: TCP, unhealthyThreshold: 101}",
                "invalid value 101, expected 1..=100",
            ),
            (
                "active: {type: TCP, port: 0}",
                "invalid value 0, expected 1..=65535",
            ),
            (
                "active: {type: TCP, interval: 1.5s}",
                "\"1.5s\" is not a duration",
            ),
            (
                "active: {type: HTTP, http: {path: /, expectedStatuses: [99]}}",
                "invalid value 99, expected 100..=599",
            ),
            (
                "active: {type: HTTP, http: {path: /, expectedStatuses: []}}",
                "0 items, at least 1 required",
            ),
            ("active: {type: HTTP, http: {}}", "missing field `path`"),
            ("active: {type: UDP, udp: {}}", "missing field `send`"),
            ("active: {type: TCP, grpc: {}}", "unknown field `grpc`"),
            (
                "{active: {type: TCP}, whenAllUnhealthy: Maybe}",
                "unknown variant `Maybe`",
            ),
            ("{}", "missing field `active`"),
        ] {
            let error = spec(yaml).unwrap_err();
            assert!(
                error.contains(message),
                "{yaml}:\n  {error}\n  wanted {message}"
            );
        }
    }

    #[test]
    fn base64_decodes_padded_text_only() {
        assert_eq!(base64(""), Some(vec![]));
        assert_eq!(base64("AAEC"), Some(vec![0, 1, 2]));
        assert_eq!(base64("YQ=="), Some(b"a".to_vec()));
        assert_eq!(base64("YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64("cGluZw=="), Some(b"ping".to_vec()));
        for bad in ["YQ", "YQ=", "Y===", "YQ==YQ==", "a-b_", "YQ= "] {
            assert_eq!(base64(bad), None, "{bad}");
        }
    }
}
