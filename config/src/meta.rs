//! Object metadata every kind shares, as `meta/v1` of the Kubernetes API
//! defines it: `ObjectMeta`, label selectors and `Time`. It owns what a
//! reference or a selector needs to know about any object; it never knows
//! a kind, so every kind's module can build on it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::schema::{self, Checked};

fn default_namespace() -> String {
    "default".to_owned()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(deserialize_with = "schema::object_name")]
    pub name: String,
    /// Meaningless for cluster-scoped kinds (GatewayClass, Namespace).
    #[serde(
        default = "default_namespace",
        deserialize_with = "schema::namespace_name"
    )]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub creation_timestamp: Option<Timestamp>,
    #[serde(default)]
    pub generation: Option<i64>,
}

impl ObjectMeta {
    /// `namespace/name`, how references and diagnostics name an object.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Kubernetes semantics: every term must hold; an empty selector
    /// matches everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator {
                    SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Checked for LabelSelectorRequirement {
    /// `metav1.LabelSelectorRequirement` validation.
    fn check(&self, _: &[Self]) -> Result<(), String> {
        match self.operator {
            SelectorOperator::In | SelectorOperator::NotIn if self.values.is_empty() => Err(
                format!("values: must be non-empty for operator {:?}", self.operator),
            ),
            SelectorOperator::Exists | SelectorOperator::DoesNotExist
                if !self.values.is_empty() =>
            {
                Err(format!(
                    "values: must be empty for operator {:?}",
                    self.operator
                ))
            }
            _ => Ok(()),
        }
    }
}

/// `metav1.Time`: RFC 3339 in UTC or with an offset, kept as an instant so
/// that route age compares correctly across offsets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    pub nanos: u32,
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Rfc3339;
        impl<'de> Visitor<'de> for Rfc3339 {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 date-time such as 2024-05-01T12:00:00Z")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                parse_rfc3339(v).ok_or_else(|| {
                    E::custom(format_args!(
                        "invalid value {v:?}, expected an RFC 3339 date-time such as 2024-05-01T12:00:00Z"
                    ))
                })
            }
        }
        d.deserialize_str(Rfc3339)
    }
}

fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    fn digits(s: &str) -> Option<i64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(s.get(0..4)?)?;
    let month = digits(s.get(5..7)?)?;
    let day = digits(s.get(8..10)?)?;
    let hour = digits(s.get(11..13)?)?;
    let minute = digits(s.get(14..16)?)?;
    let second = digits(s.get(17..19)?)?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        // Digits past nanoseconds carry no ordering a Kubernetes object can have.
        let kept = frac.get(..len.min(9))?;
        let scale = 10u32.pow(9 - kept.len() as u32);
        nanos = u32::try_from(digits(kept)?).ok()?.checked_mul(scale)?;
        rest = frac.get(len..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' {
                return None;
            }
            let sign = match ob[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh = digits(rest.get(1..3)?)?;
            let om = digits(rest.get(4..6)?)?;
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(Timestamp { seconds, nanos })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_offsets_compare_as_instants() {
        let utc = parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        let plus_two = parse_rfc3339("2024-05-01T13:30:00+02:00").unwrap();
        assert!(plus_two < utc);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap().seconds, 0);
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01.5Z").unwrap(),
            Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
    }

    #[test]
    fn rfc3339_rejects_garbage_without_panicking() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-05-01T00:00:00",
            "2024-05-01T00:00:00.Z",
            "2024-05-01T00:00:00+2:00",
            "2024-05-01T00:00:00é",
            "２０２４-05-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
