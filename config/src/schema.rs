//! The CRD schema rules an API server would enforce, applied while a file is
//! deserialized. A static file never passes through an API server, so the
//! ranges, list sizes and cross-field rules of the Gateway API CRDs (v1.6.1)
//! are checked here. Every check runs *inside* the visitor of the value it
//! judges: serde_norway stamps an error with the position and path of the
//! innermost value being deserialized when the error is raised, so a check
//! made after the value has been returned would be blamed on its parent.
//! This module must never decide routing semantics; it only rejects what the
//! schema rejects.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::excerpt::Quoted;

/// Largest `ClientIP` affinity timeout (Kubernetes': 1 day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;
/// Smallest Maglev table a `TrafficPolicy` may ask for.
pub const MIN_TABLE_SIZE: u32 = 251;
/// Largest Maglev table a `TrafficPolicy` may ask for: the largest prime
/// below 2^20.
pub const MAX_TABLE_SIZE: u32 = 1_048_573;

/// A value that the schema constrains beyond its type, possibly relative to
/// the items before it in the same list (CEL `self.all(...)` rules).
pub(crate) trait Checked: Sized {
    fn check(&self, earlier: &[Self]) -> Result<(), String>;
}

/// `Checked` for kinds whose schema has no rule beyond their fields' own.
macro_rules! unchecked {
    ($($t:ty),*) => {
        $(impl $crate::schema::Checked for $t {
            fn check(&self, _: &[Self]) -> Result<(), String> {
                Ok(())
            }
        })*
    };
}
pub(crate) use unchecked;

/// An integer field with an inclusive range, e.g. `port` (1..=65535).
pub(crate) fn ranged<'de, D: Deserializer<'de>>(
    d: D,
    min: i64,
    max: i64,
    what: &'static str,
) -> Result<i64, D::Error> {
    struct Ranged {
        min: i64,
        max: i64,
        what: &'static str,
    }
    impl Ranged {
        fn judge<E: de::Error>(&self, v: i128) -> Result<i64, E> {
            if v < i128::from(self.min) || v > i128::from(self.max) {
                return Err(E::custom(format_args!(
                    "invalid value {v}, expected {}..={}",
                    self.min, self.max
                )));
            }
            // In range of two i64 bounds, so the conversion cannot fail.
            i64::try_from(v).map_err(|_| E::custom("integer out of range"))
        }
    }
    impl<'de> Visitor<'de> for Ranged {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{} (an integer {}..={})", self.what, self.min, self.max)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            self.judge(i128::from(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            self.judge(i128::from(v))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<i64, E> {
            self.judge(v)
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<i64, E> {
            self.judge(i128::try_from(v).unwrap_or(i128::MAX))
        }
    }
    d.deserialize_any(Ranged { min, max, what })
}

/// `PortNumber`: int32, 1..=65535.
pub(crate) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = ranged(d, 1, 65535, "a port number")?;
    u16::try_from(v).map_err(|_| de::Error::custom("port out of range"))
}

pub(crate) fn opt_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    struct Port(u16);
    impl<'de> Deserialize<'de> for Port {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            port(d).map(Port)
        }
    }
    Ok(Option::<Port>::deserialize(d)?.map(|p| p.0))
}

/// `BackendRef.weight`: int32, 0..=1000000.
pub(crate) fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = ranged(d, 0, 1_000_000, "a weight")?;
    u32::try_from(v).map_err(|_| de::Error::custom("weight out of range"))
}

/// `TrafficPolicy` `spec.maglev.tableSize`: a prime in
/// `MIN_TABLE_SIZE..=MAX_TABLE_SIZE`, as Maglev's permutations need.
/// A `ClientIP` affinity timeout: `1..=MAX_AFFINITY_TIMEOUT` seconds.
pub(crate) fn affinity_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct Timeout;
    impl Timeout {
        fn judge<E: de::Error>(v: i128) -> Result<u32, E> {
            if v < 1 {
                return Err(E::custom(format_args!("{v} is below the minimum 1")));
            }
            if v > i128::from(MAX_AFFINITY_TIMEOUT) {
                return Err(E::custom(format_args!(
                    "{v} is above the maximum {MAX_AFFINITY_TIMEOUT}"
                )));
            }
            u32::try_from(v).map_err(|_| E::custom("integer out of range"))
        }
    }
    impl<'de> Visitor<'de> for Timeout {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a timeout in seconds (1..={MAX_AFFINITY_TIMEOUT})")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            Self::judge(i128::from(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            Self::judge(i128::from(v))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<u32, E> {
            Self::judge(v)
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<u32, E> {
            Self::judge(i128::try_from(v).unwrap_or(i128::MAX))
        }
    }
    d.deserialize_any(Timeout)
}

pub(crate) fn opt_table_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct Size;
    impl Size {
        fn judge<E: de::Error>(v: i128) -> Result<u32, E> {
            if v < i128::from(MIN_TABLE_SIZE) {
                return Err(E::custom(format_args!(
                    "{v} is below the minimum {MIN_TABLE_SIZE}"
                )));
            }
            if v > i128::from(MAX_TABLE_SIZE) {
                return Err(E::custom(format_args!(
                    "{v} is above the maximum {MAX_TABLE_SIZE}"
                )));
            }
            let n = u32::try_from(v).map_err(|_| E::custom("integer out of range"))?;
            if !crate::maglev::is_prime(u64::from(n)) {
                return Err(E::custom(format_args!("{v} is not a prime")));
            }
            Ok(n)
        }
    }
    impl<'de> Visitor<'de> for Size {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "a table size (a prime {MIN_TABLE_SIZE}..={MAX_TABLE_SIZE})"
            )
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            Self::judge(i128::from(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            Self::judge(i128::from(v))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<u32, E> {
            Self::judge(v)
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<u32, E> {
            Self::judge(i128::try_from(v).unwrap_or(i128::MAX))
        }
    }
    struct TableSize(u32);
    impl<'de> Deserialize<'de> for TableSize {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Size).map(TableSize)
        }
    }
    Ok(Option::<TableSize>::deserialize(d)?.map(|s| s.0))
}

/// Object and reference names: required and `minLength: 1` in every CRD.
pub(crate) fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_name(d, |_| Ok(()))
}

/// A name that must also pass `check`. The check runs inside the visitor,
/// so an error carries the field's path and line.
fn checked_name<'de, D: Deserializer<'de>>(
    d: D,
    check: fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    struct Name(fn(&str) -> Result<(), String>);
    impl<'de> Visitor<'de> for Name {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-empty name")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if v.is_empty() {
                return Err(E::custom("must not be empty"));
            }
            if v.len() > 253 {
                return Err(E::custom(format_args!(
                    "is {} characters long, at most 253 allowed",
                    v.len()
                )));
            }
            (self.0)(v).map_err(E::custom)?;
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(Name(check))
}

/// `metadata.name` of most kinds: what the API server's
/// `IsDNS1123Subdomain` accepts (Gateway API kinds, EndpointSlices, Pods,
/// Switchyard's own kinds).
pub(crate) fn object_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_name(d, |v| {
        if is_dns_subdomain(v) {
            Ok(())
        } else {
            Err(format!(
                "invalid value {}: a name is lower-case letters, digits, '-' and '.', starting \
                 and ending with a letter or digit (RFC 1123 subdomain)",
                Quoted(v)
            ))
        }
    })
}

/// `metadata.namespace` (and a Namespace's name): `IsDNS1123Label`.
pub(crate) fn namespace_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_name(d, |v| {
        if is_dns_label(v) {
            Ok(())
        } else {
            Err(format!(
                "invalid value {}: a namespace is at most 63 lower-case letters, digits and \
                 '-', starting and ending with a letter or digit (RFC 1123 label)",
                Quoted(v)
            ))
        }
    })
}

/// A reference's optional `namespace` (`Namespace` in the Gateway API:
/// an RFC 1123 label).
pub(crate) fn opt_namespace<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Wrapped(String);
    impl<'de> Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            namespace_name(d).map(Wrapped)
        }
    }
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
}

/// A reference's `kind` (`Kind` in the Gateway API): at most 63 ASCII
/// letters, digits and inner `-`, starting with a letter.
pub(crate) fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_name(d, |v| {
        let b = v.as_bytes();
        let valid = b.len() <= 63
            && b[0].is_ascii_alphabetic()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[b.len() - 1] != b'-';
        if valid {
            Ok(())
        } else {
            Err(format!(
                "invalid value {}: a kind is at most 63 letters, digits and '-', starting with a \
                 letter",
                Quoted(v)
            ))
        }
    })
}

/// A reference's `group` (`Group` in the Gateway API): empty for the core
/// group, else a lower-case RFC 1123 subdomain.
pub(crate) fn group<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Group;
    impl<'de> Visitor<'de> for Group {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an API group (empty for the core group)")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if v.is_empty() || is_dns_subdomain(v) {
                Ok(v.to_owned())
            } else {
                Err(E::custom(format_args!(
                    "invalid value {}: a group is empty (the core group) or a lower-case DNS \
                     name such as gateway.networking.k8s.io",
                    Quoted(v)
                )))
            }
        }
    }
    d.deserialize_str(Group)
}

/// An RFC 1123 label: at most 63 of `a-z`, `0-9` and inner `-`.
pub(crate) fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// An RFC 1035 label, what a Service's name must be: an RFC 1123 label
/// that starts with a letter.
pub(crate) fn is_dns1035_label(s: &str) -> bool {
    is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// An RFC 1123 subdomain in lower case: dot-separated labels of `a-z`,
/// `0-9` and inner `-`, the pattern the Gateway API gives `SectionName`,
/// `Hostname` and the domain of a `controllerName`.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// `SectionName` (listener names, parentRef `sectionName`).
pub(crate) fn section_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_name(d, |v| {
        if is_dns_subdomain(v) {
            Ok(())
        } else {
            Err(format!(
                "invalid value {v:?}: a section name is lower-case letters, digits, '-' and \
                 '.', starting and ending with a letter or digit"
            ))
        }
    })
}

pub(crate) fn opt_section_name<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    struct Wrapped(String);
    impl<'de> Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            section_name(d).map(Wrapped)
        }
    }
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
}

/// `Hostname` of a listener: `minLength: 1`, at most 253 characters, a
/// lower-case DNS name that may start with a `*.` wildcard label.
pub(crate) fn opt_hostname<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Hostname(String);
    impl<'de> Deserialize<'de> for Hostname {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            checked_name(d, |v| {
                let name = v.strip_prefix("*.").unwrap_or(v);
                if is_dns_subdomain(name) {
                    Ok(())
                } else {
                    Err(format!(
                        "invalid value {v:?}: a hostname is lower-case letters, digits, '-' and \
                         '.', optionally after a leading '*.'"
                    ))
                }
            })
            .map(Hostname)
        }
    }
    Ok(Option::<Hostname>::deserialize(d)?.map(|h| h.0))
}

/// A map of strings with `maxProperties: MAX` (labels, annotations, TLS
/// options), judged while it is the innermost value so that the error
/// names its line.
pub(crate) fn map<'de, D, const MAX: usize>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Bounded<const MAX: usize>;
    impl<'de, const MAX: usize> Visitor<'de> for Bounded<MAX> {
        type Value = std::collections::BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a map of at most {MAX} strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                out.insert(key, value);
                if out.len() > MAX {
                    return Err(de::Error::custom(format_args!(
                        "more than {MAX} entries, at most {MAX} allowed"
                    )));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(Bounded::<MAX>)
}

/// An optional mapping checked once, like `checked`.
pub(crate) fn opt_checked<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Checked,
{
    struct Wrapped<T>(T);
    impl<'de, T: Deserialize<'de> + Checked> Deserialize<'de> for Wrapped<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            checked(d).map(Wrapped)
        }
    }
    Ok(Option::<Wrapped<T>>::deserialize(d)?.map(|w| w.0))
}

/// `GatewayClass` `spec.controllerName`: a domain-prefixed path,
/// `example.net/gateway-controller`.
pub(crate) fn controller_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_name(d, |v| {
        let valid = v.split_once('/').is_some_and(|(domain, path)| {
            is_dns_subdomain(domain)
                && !path.is_empty()
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(c))
        });
        if valid {
            Ok(())
        } else {
            Err(format!(
                "invalid value {v:?}: a controller name is a domain-prefixed path, such as \
                 switchyard.io/gateway-controller"
            ))
        }
    })
}

/// A list with `minItems`/`maxItems`, whose items are mappings checked
/// against the items before them.
pub(crate) fn checked_list<'de, D, T, const MIN: usize, const MAX: usize>(
    d: D,
) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Checked,
{
    d.deserialize_seq(ListVisitor::<T, MIN, MAX, true>(PhantomData))
}

/// A list with `minItems`/`maxItems` and no per-item rule.
pub(crate) fn list<'de, D, T, const MIN: usize, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(ListVisitor::<Unchecked<T>, MIN, MAX, false>(PhantomData))
        .map(|items| items.into_iter().map(|u| u.0).collect())
}

/// Adapter so that `list` can share the visitor of `checked_list`.
struct Unchecked<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Unchecked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Unchecked)
    }
}

impl<T> Checked for Unchecked<T> {
    fn check(&self, _: &[Self]) -> Result<(), String> {
        Ok(())
    }
}

struct ListVisitor<T, const MIN: usize, const MAX: usize, const CHECK: bool>(PhantomData<T>);

impl<'de, T, const MIN: usize, const MAX: usize, const CHECK: bool> Visitor<'de>
    for ListVisitor<T, MIN, MAX, CHECK>
where
    T: Deserialize<'de> + Checked,
{
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of {MIN}..={MAX} items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items: Vec<T> = Vec::new();
        loop {
            let next = if CHECK {
                seq.next_element_seed(ItemSeed { earlier: &items })?
            } else {
                seq.next_element::<T>()?
            };
            let Some(item) = next else { break };
            if items.len() == MAX {
                return Err(de::Error::custom(format_args!(
                    "more than {MAX} items, at most {MAX} allowed"
                )));
            }
            items.push(item);
        }
        if items.len() < MIN {
            return Err(de::Error::custom(format_args!(
                "{} items, at least {MIN} required",
                items.len()
            )));
        }
        Ok(items)
    }
}

/// Deserializes one list item as a mapping and checks it while the mapping
/// is still the innermost value, so an error names the item's own line and
/// index (`spec.listeners[1]`), not the list's.
struct ItemSeed<'a, T> {
    earlier: &'a [T],
}

impl<'de, T> DeserializeSeed<'de> for ItemSeed<'_, T>
where
    T: Deserialize<'de> + Checked,
{
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T> Visitor<'de> for ItemSeed<'_, T>
where
    T: Deserialize<'de> + Checked,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let item = T::deserialize(MapAccessDeserializer::new(map))?;
        item.check(self.earlier).map_err(de::Error::custom)?;
        Ok(item)
    }
}

/// A whole document (or any mapping) checked once, with no siblings.
pub(crate) fn checked<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Checked,
{
    ItemSeed::<T> { earlier: &[] }.deserialize(d)
}
