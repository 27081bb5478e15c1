//! Reading configuration files: a multi-document YAML file in, `Resources`
//! out, or a `LoadError` that names the file, the line and the object. The
//! file is the only input a static deployment has, so this module applies
//! what an API server would have refused (schema ranges, list sizes, CEL
//! rules, duplicate objects) and reports it as `FILE:LINE: what and why`.
//! It never follows references between objects; a route naming a missing
//! Service loads fine and is `resolve`'s to judge.
//!
//! Each file is parsed twice: a first pass reads every document's
//! `apiVersion`, `kind` and name (and learns the line the document starts
//! on), a second pass deserializes the documents of known kinds into their
//! types. The YAML deserializer hands out each document once, and the type
//! of a document is only known after reading `kind`, which may come last.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_norway::{Deserializer, Value};

use crate::depth::{self, MAX_DEPTH};
use crate::excerpt::{tidy, Bare, Quoted};
use crate::read::{read_file, ReadError};
use crate::resources::{AddressPool, GatewayClassConfig, Origin};
use crate::resources::{
    EndpointSelector, EndpointSlice, Gateway, GatewayClass, Ignored, Namespace, Pod,
    ReferenceGrant, Resources, RouteDoc, RouteKind, Service, ServiceImport, TrafficPolicy,
    GATEWAY_GROUP, MULTICLUSTER_GROUP, SWITCHYARD_GROUP,
};
use crate::schema::{self, Checked};

/// Why a file could not be loaded. Every variant but `Read` carries the
/// 1-based line in the original file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read, or is not a file to read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Refused before parsing: a YAML parser spends time quadratic in
    /// the nesting depth, so depth is bounded on the raw text.
    #[error(
        "{file}:{line}: nested deeper than {limit} levels (indented blocks and [ {{ brackets \
         count alike); no Kubernetes object needs that many"
    )]
    TooDeep {
        file: String,
        line: usize,
        limit: usize,
    },
    /// Not YAML, or a document that is not an object.
    #[error("{file}:{line}: {message}")]
    Yaml {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: document has no {field}; every object needs apiVersion and kind")]
    MissingType {
        file: String,
        line: usize,
        field: &'static str,
    },
    #[error(
        "{file}:{line}: {object}: unsupported apiVersion {}, expected {expected}",
        Quoted(api_version)
    )]
    UnsupportedVersion {
        file: String,
        line: usize,
        object: Box<ObjectRef>,
        api_version: String,
        expected: &'static str,
    },
    /// A schema violation: what the CRD or the core API would reject.
    #[error("{file}:{line}: {object}: {message}")]
    Invalid {
        file: String,
        line: usize,
        object: Box<ObjectRef>,
        message: String,
    },
    #[error("{file}:{line}: {object}: defined twice, first at line {first_line}")]
    Duplicate {
        file: String,
        line: usize,
        object: Box<ObjectRef>,
        first_line: usize,
    },
}

impl LoadError {
    /// The 1-based line the error points at, if it points into the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Read(_) => None,
            Self::TooDeep { line, .. }
            | Self::Yaml { line, .. }
            | Self::MissingType { line, .. }
            | Self::UnsupportedVersion { line, .. }
            | Self::Invalid { line, .. }
            | Self::Duplicate { line, .. } => Some(*line),
        }
    }

    pub fn file(&self) -> &str {
        match self {
            Self::Read(e) => e.file(),
            Self::TooDeep { file, .. }
            | Self::Yaml { file, .. }
            | Self::MissingType { file, .. }
            | Self::UnsupportedVersion { file, .. }
            | Self::Invalid { file, .. }
            | Self::Duplicate { file, .. } => file,
        }
    }
}

/// How an error names the object it is about: `Gateway "lb/edge"`.
/// Boxed in `LoadError` to keep the error small on the success path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: String,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.namespace, &self.name) {
            (_, None) => write!(f, "{} (unnamed)", Bare(&self.kind)),
            (Some(ns), Some(name)) => {
                write!(f, "{} \"{}/{}\"", Bare(&self.kind), Bare(ns), Bare(name))
            }
            (None, Some(name)) => write!(f, "{} \"{}\"", Bare(&self.kind), Bare(name)),
        }
    }
}

/// Reads and loads one file; errors name it as given. Only a regular
/// file of at most `MAX_FILE_BYTES` is read (see `read_file`).
pub fn load_file(path: impl AsRef<Path>) -> Result<Resources, LoadError> {
    let path = path.as_ref();
    let text = read_file(path)?;
    load_str(&path.display().to_string(), &text)
}

/// Loads YAML text; `name` is what errors call the file.
pub fn load_str(name: &str, text: &str) -> Result<Resources, LoadError> {
    let file = name;
    if let Some(line) = depth::too_deep(text, MAX_DEPTH) {
        return Err(LoadError::TooDeep {
            file: file.to_owned(),
            line,
            limit: MAX_DEPTH,
        });
    }
    let mut headers = read_headers(file, text)?;
    mark_merges(text, &mut headers);

    let mut kinds = Vec::with_capacity(headers.len());
    let mut any_known = false;
    for header in &headers {
        let kind = match header {
            None => None,
            Some(h) => {
                let kind = h.classify(file)?;
                any_known |= kind.is_some();
                kind
            }
        };
        kinds.push(kind);
    }

    let mut out = Resources::default();
    let mut seen: HashMap<(Kind, String, String), usize> = HashMap::new();
    for (index, header) in headers.iter().enumerate() {
        if let (Some(h), None) = (header, kinds[index]) {
            out.ignored.push(Ignored {
                api_version: h.api_version.clone().unwrap_or_default(),
                kind: h.kind.clone().unwrap_or_default(),
                name: h.name.clone(),
                line: h.line,
            });
        }
    }
    if !any_known {
        return Ok(out);
    }

    for (index, document) in Deserializer::from_str(text).enumerate() {
        let (Some(header), Some(kind)) = (
            headers.get(index).and_then(Option::as_ref),
            kinds.get(index).copied().flatten(),
        ) else {
            // The first pass already proved the rest of the stream parses;
            // documents past the known ones are neither read nor judged.
            if index >= headers.len() {
                break;
            }
            continue;
        };
        let merged;
        let document = if header.merge {
            merged = merge(document).map_err(|e| header.invalid(file, kind, &e))?;
            Deserializer::from_str(&merged)
        } else {
            document
        };
        let (namespace, name) = kind
            .read(document, header, &mut out)
            .map_err(|e| header.invalid(file, kind, &e))?;
        let key = (kind, namespace.clone(), name.clone());
        if let Some(&first_line) = seen.get(&key) {
            return Err(LoadError::Duplicate {
                file: file.to_owned(),
                line: header.line,
                object: kind.object(Some(namespace), Some(name)),
                first_line,
            });
        }
        seen.insert(key, header.line);
        out.origins.push(Origin {
            kind: kind.name().to_owned(),
            namespace: if kind.cluster_scoped() {
                String::new()
            } else {
                namespace
            },
            name,
            file: file.to_owned(),
            line: header.line,
        });
    }
    Ok(out)
}

/// What the first pass learns about a document.
#[derive(Debug)]
struct Header {
    /// Where the document's mapping starts, 1-based.
    line: usize,
    api_version: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    /// The document's text has a `<<` merge key (or the characters, in a
    /// comment or a string): it is read through a merged copy.
    merge: bool,
}

/// Marks the documents whose text holds `<<`, the YAML merge key. The
/// parser leaves merge keys to the reader, and a typed read would skip one
/// as an unknown field, silently dropping what it merges; the test is on
/// the text, so that a merge key anywhere in the document is seen.
fn mark_merges(text: &str, headers: &mut [Option<Header>]) {
    let mut line_starts = vec![0];
    line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    let starts: Vec<usize> = headers.iter().flatten().map(|h| h.line).collect();
    for (n, header) in headers.iter_mut().flatten().enumerate() {
        let offset = |line: usize| {
            line_starts
                .get(line.saturating_sub(1))
                .copied()
                .unwrap_or(text.len())
        };
        let from = offset(header.line);
        let to = starts.get(n + 1).map_or(text.len(), |&l| offset(l));
        header.merge = text
            .get(from..to.max(from))
            .is_some_and(|t| t.contains("<<"));
    }
}

/// A document with its merge keys applied, as YAML text again, so that the
/// typed read can name the path of a value it refuses.
fn merge(document: Deserializer<'_>) -> Result<String, serde_norway::Error> {
    let mut value = Value::deserialize(document)?;
    value.apply_merge()?;
    serde_norway::to_string(&value)
}

/// Reads the header of every document; `None` for empty documents (a
/// trailing `---`, a document of comments).
fn read_headers(file: &str, text: &str) -> Result<Vec<Option<Header>>, LoadError> {
    let mut headers = Vec::new();
    for document in Deserializer::from_str(text) {
        let mut slot = None;
        match document.deserialize_any(HeaderProbe { slot: &mut slot }) {
            Ok(()) => headers.push(None),
            Err(e) => {
                let (line, message) = split_error(&e);
                match slot {
                    Some(mut header) => {
                        header.line = line.unwrap_or(1);
                        headers.push(Some(header));
                    }
                    // serde_norway repeats a syntax error forever once the
                    // stream is broken, so the first error ends the file.
                    None => {
                        return Err(LoadError::Yaml {
                            file: file.to_owned(),
                            line: line.unwrap_or(1),
                            message,
                        })
                    }
                }
            }
        }
    }
    Ok(headers)
}

/// Reads a document's header, then aborts on purpose: serde_norway only
/// tells positions through errors, and an error raised here carries the
/// position of the document's mapping, which is the line to blame for
/// anything that concerns the document as a whole.
struct HeaderProbe<'a> {
    slot: &'a mut Option<Header>,
}

const PROBE: &str = "switchyard: header probe";

impl<'de> Visitor<'de> for HeaderProbe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kubernetes object (a mapping with apiVersion and kind)")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    /// Reads `apiVersion`, `kind` and `metadata` and skips every other
    /// value unread: a kind Switchyard ignores may hold anything
    /// (`replicas: 1e40`, tags of its own) and must not fail the file.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut header = Header {
            line: 0,
            api_version: None,
            kind: None,
            name: None,
            namespace: None,
            merge: false,
        };
        let mut merged: Option<Value> = None;
        while let Some(key) = map.next_key::<StringOrSkipped>()? {
            match key.0.as_deref() {
                Some("apiVersion") => header.api_version = map.next_value::<StringOrSkipped>()?.0,
                Some("kind") => header.kind = map.next_value::<StringOrSkipped>()?.0,
                Some("metadata") => {
                    let meta: MetaProbe = map.next_value()?;
                    header.name = meta.name;
                    header.namespace = meta.namespace;
                }
                // A merge key at the top: the header may come from it.
                Some("<<") => merged = Some(map.next_value::<Value>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let Some(merged) = merged {
            let value = merged_fields(merged);
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
            let metadata = value.get("metadata");
            header.api_version = header.api_version.or(text(value.get("apiVersion")));
            header.kind = header.kind.or(text(value.get("kind")));
            header.name = header.name.or(text(metadata.and_then(|m| m.get("name"))));
            header.namespace = header
                .namespace
                .or(text(metadata.and_then(|m| m.get("namespace"))));
        }
        *self.slot = Some(header);
        Err(de::Error::custom(PROBE))
    }
}

/// Visits of every value a probe has no use for: accepted and skipped
/// unread, whatever their type or tag.
macro_rules! skip_the_rest {
    ($out:ty, $nothing:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok($nothing)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$out, E> {
            Ok($nothing)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$out, E> {
            Ok($nothing)
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<$out, E> {
            Ok($nothing)
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<$out, E> {
            Ok($nothing)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$out, E> {
            Ok($nothing)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok($nothing)
        }
        fn visit_none<E: de::Error>(self) -> Result<$out, E> {
            Ok($nothing)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$out, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($nothing)
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<$out, A::Error> {
            IgnoredAny.visit_enum(data)?;
            Ok($nothing)
        }
    };
}

/// What a `<<` value merges into its mapping; nothing if it is not a
/// mapping or a list of mappings (the typed read reports that).
fn merged_fields(merged: Value) -> Value {
    let mut value = Value::Mapping([(Value::from("<<"), merged)].into_iter().collect());
    match value.apply_merge() {
        Ok(()) => value,
        Err(_) => Value::Null,
    }
}

/// A string, or `None` for any other value, which is skipped unread.
struct StringOrSkipped(Option<String>);

impl<'de> Deserialize<'de> for StringOrSkipped {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrSkipped;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrSkipped, E> {
                Ok(StringOrSkipped(Some(v.to_owned())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringOrSkipped, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StringOrSkipped(None))
            }
            skip_the_rest!(StringOrSkipped, StringOrSkipped(None));
        }
        d.deserialize_any(V)
    }
}

/// `metadata.name` and `metadata.namespace` of any object; the rest of
/// its metadata is skipped unread.
#[derive(Default)]
struct MetaProbe {
    name: Option<String>,
    namespace: Option<String>,
}

impl<'de> Deserialize<'de> for MetaProbe {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaProbe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetaProbe, A::Error> {
                let mut meta = MetaProbe::default();
                let mut merged = None;
                while let Some(key) = map.next_key::<StringOrSkipped>()? {
                    match key.0.as_deref() {
                        Some("name") => meta.name = map.next_value::<StringOrSkipped>()?.0,
                        Some("namespace") => {
                            meta.namespace = map.next_value::<StringOrSkipped>()?.0
                        }
                        Some("<<") => merged = Some(map.next_value::<Value>()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if let Some(merged) = merged {
                    let from = merged_fields(merged);
                    let text = |key| from.get(key).and_then(Value::as_str).map(str::to_owned);
                    meta.name = meta.name.or_else(|| text("name"));
                    meta.namespace = meta.namespace.or_else(|| text("namespace"));
                }
                Ok(meta)
            }
            // Not a mapping: nothing to learn here; the typed pass judges
            // it for the kinds Switchyard reads.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<MetaProbe, E> {
                Ok(MetaProbe::default())
            }
            skip_the_rest!(MetaProbe, MetaProbe::default());
        }
        d.deserialize_any(V)
    }
}

/// The kinds Switchyard reads, per served version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    GatewayClass,
    Gateway,
    /// `v1` routes allow one rule, `v1alpha2` routes up to 16.
    Route(RouteKind, RouteVersion),
    ReferenceGrant,
    Service,
    EndpointSlice,
    Namespace,
    TrafficPolicy,
    ServiceImport,
    EndpointSelector,
    Pod,
    AddressPool,
    GatewayClassConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RouteVersion {
    V1,
    V1Alpha2,
}

impl Header {
    /// `Ok(None)` for kinds Switchyard does not read.
    fn classify(&self, file: &str) -> Result<Option<Kind>, LoadError> {
        let missing = |field| LoadError::MissingType {
            file: file.to_owned(),
            line: self.line,
            field,
        };
        let api_version = self
            .api_version
            .as_deref()
            .ok_or_else(|| missing("apiVersion"))?;
        let kind = self.kind.as_deref().ok_or_else(|| missing("kind"))?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let (found, expected) = match (group, kind) {
            (GATEWAY_GROUP, "GatewayClass") => (
                matches!(version, "v1" | "v1beta1").then_some(Kind::GatewayClass),
                "gateway.networking.k8s.io/v1 or v1beta1",
            ),
            (GATEWAY_GROUP, "Gateway") => (
                matches!(version, "v1" | "v1beta1").then_some(Kind::Gateway),
                "gateway.networking.k8s.io/v1 or v1beta1",
            ),
            (GATEWAY_GROUP, "TCPRoute" | "UDPRoute") => {
                let route = if kind == "TCPRoute" {
                    RouteKind::Tcp
                } else {
                    RouteKind::Udp
                };
                let version = match version {
                    "v1" => Some(RouteVersion::V1),
                    "v1alpha2" => Some(RouteVersion::V1Alpha2),
                    _ => None,
                };
                (
                    version.map(|v| Kind::Route(route, v)),
                    "gateway.networking.k8s.io/v1 or v1alpha2",
                )
            }
            (GATEWAY_GROUP, "ReferenceGrant") => (
                matches!(version, "v1" | "v1beta1").then_some(Kind::ReferenceGrant),
                "gateway.networking.k8s.io/v1 or v1beta1",
            ),
            ("", "Service") => ((version == "v1").then_some(Kind::Service), "v1"),
            ("", "Namespace") => ((version == "v1").then_some(Kind::Namespace), "v1"),
            ("discovery.k8s.io", "EndpointSlice") => (
                (version == "v1").then_some(Kind::EndpointSlice),
                "discovery.k8s.io/v1",
            ),
            (SWITCHYARD_GROUP, "TrafficPolicy") => (
                (version == "v1alpha1").then_some(Kind::TrafficPolicy),
                "switchyard.io/v1alpha1",
            ),
            (SWITCHYARD_GROUP, "EndpointSelector") => (
                (version == "v1alpha1").then_some(Kind::EndpointSelector),
                "switchyard.io/v1alpha1",
            ),
            (MULTICLUSTER_GROUP, "ServiceImport") => (
                (version == "v1alpha1").then_some(Kind::ServiceImport),
                "multicluster.x-k8s.io/v1alpha1",
            ),
            ("", "Pod") => ((version == "v1").then_some(Kind::Pod), "v1"),
            (SWITCHYARD_GROUP, "AddressPool") => (
                (version == "v1alpha1").then_some(Kind::AddressPool),
                "switchyard.io/v1alpha1",
            ),
            (SWITCHYARD_GROUP, "GatewayClassConfig") => (
                (version == "v1alpha1").then_some(Kind::GatewayClassConfig),
                "switchyard.io/v1alpha1",
            ),
            _ => return Ok(None),
        };
        match found {
            Some(kind) => Ok(Some(kind)),
            // A known kind under a version we cannot read is a mistake to
            // report, not a document to skip: skipping would drop traffic.
            None => Err(LoadError::UnsupportedVersion {
                file: file.to_owned(),
                line: self.line,
                object: Box::new(ObjectRef {
                    kind: kind.to_owned(),
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                }),
                api_version: api_version.to_owned(),
                expected,
            }),
        }
    }

    fn invalid(&self, file: &str, kind: Kind, error: &serde_norway::Error) -> LoadError {
        let (line, message) = split_error(error);
        // Lines of a merged copy are not the file's: blame the document.
        let line = if self.merge { None } else { line };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        LoadError::Invalid {
            file: file.to_owned(),
            line: line.unwrap_or(self.line),
            object: kind.object(Some(namespace), self.name.clone()),
            message,
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::GatewayClass => "GatewayClass",
            Self::Gateway => "Gateway",
            Self::Route(route, _) => route.as_str(),
            Self::ReferenceGrant => "ReferenceGrant",
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::Namespace => "Namespace",
            Self::TrafficPolicy => "TrafficPolicy",
            Self::ServiceImport => "ServiceImport",
            Self::EndpointSelector => "EndpointSelector",
            Self::Pod => "Pod",
            Self::AddressPool => "AddressPool",
            Self::GatewayClassConfig => "GatewayClassConfig",
        }
    }

    fn cluster_scoped(self) -> bool {
        matches!(
            self,
            Self::GatewayClass | Self::Namespace | Self::AddressPool | Self::GatewayClassConfig
        )
    }

    fn object(self, namespace: Option<String>, name: Option<String>) -> Box<ObjectRef> {
        Box::new(ObjectRef {
            kind: self.name().to_owned(),
            namespace: if self.cluster_scoped() {
                None
            } else {
                namespace
            },
            name,
        })
    }

    /// Deserializes a document of this kind into `out`; returns its
    /// (namespace, name) for the duplicate check. Cluster-scoped objects
    /// get an empty namespace there, whatever the file says.
    fn read(
        self,
        document: Deserializer<'_>,
        header: &Header,
        out: &mut Resources,
    ) -> Result<(String, String), serde_norway::Error> {
        fn typed<'de, T: Deserialize<'de> + Checked>(
            document: Deserializer<'de>,
        ) -> Result<T, serde_norway::Error> {
            schema::checked(document)
        }
        let version = header.api_version.as_deref().unwrap_or_default();
        let meta = match self {
            Self::GatewayClass => {
                let v: GatewayClass = typed(document)?;
                let meta = v.metadata.clone();
                out.gateway_classes.push(v);
                meta
            }
            Self::Gateway => {
                let v: Gateway = typed(document)?;
                let meta = v.metadata.clone();
                out.gateways.push(v);
                meta
            }
            Self::Route(kind, RouteVersion::V1) => {
                let v: RouteDoc<1> = typed(document)?;
                let route = v.into_route(kind, version);
                let meta = route.metadata.clone();
                out.routes.push(route);
                meta
            }
            Self::Route(kind, RouteVersion::V1Alpha2) => {
                let v: RouteDoc<16> = typed(document)?;
                let route = v.into_route(kind, version);
                let meta = route.metadata.clone();
                out.routes.push(route);
                meta
            }
            Self::ReferenceGrant => {
                let v: ReferenceGrant = typed(document)?;
                let meta = v.metadata.clone();
                out.reference_grants.push(v);
                meta
            }
            Self::Service => {
                let v: Service = typed(document)?;
                // The API server holds a Service's name to a DNS label
                // that starts with a letter (it becomes a DNS name).
                if !schema::is_dns1035_label(&v.metadata.name) {
                    return Err(de::Error::custom(format_args!(
                        "metadata.name: invalid value {}: a Service name is at most 63 \
                         lower-case letters, digits and '-', starting with a letter and ending \
                         with a letter or digit (RFC 1035 label)",
                        Quoted(&v.metadata.name)
                    )));
                }
                let meta = v.metadata.clone();
                out.services.push(v);
                meta
            }
            Self::EndpointSlice => {
                let v: EndpointSlice = typed(document)?;
                let meta = v.metadata.clone();
                out.endpoint_slices.push(v);
                meta
            }
            Self::Namespace => {
                let v: Namespace = typed(document)?;
                if !schema::is_dns_label(&v.metadata.name) {
                    return Err(de::Error::custom(format_args!(
                        "metadata.name: invalid value {}: a Namespace name is at most 63 \
                         lower-case letters, digits and '-', starting and ending with a letter \
                         or digit (RFC 1123 label)",
                        Quoted(&v.metadata.name)
                    )));
                }
                let meta = v.metadata.clone();
                out.namespaces.push(v);
                meta
            }
            Self::TrafficPolicy => {
                let v: TrafficPolicy = typed(document)?;
                let meta = v.metadata.clone();
                out.traffic_policies.push(v);
                meta
            }
            Self::ServiceImport => {
                let v: ServiceImport = typed(document)?;
                let meta = v.metadata.clone();
                out.service_imports.push(v);
                meta
            }
            Self::EndpointSelector => {
                let v: EndpointSelector = typed(document)?;
                let meta = v.metadata.clone();
                out.endpoint_selectors.push(v);
                meta
            }
            // A Pod's metadata has its own type (it needs deletionTimestamp).
            Self::Pod => {
                let v: Pod = typed(document)?;
                let key = (v.metadata.namespace.clone(), v.metadata.name.clone());
                out.pods.push(v);
                return Ok(key);
            }
            Self::AddressPool => {
                let v: AddressPool = typed(document)?;
                let meta = v.metadata.clone();
                out.address_pools.push(v);
                meta
            }
            Self::GatewayClassConfig => {
                let v: GatewayClassConfig = typed(document)?;
                let meta = v.metadata.clone();
                out.gateway_class_configs.push(v);
                meta
            }
        };
        let namespace = if self.cluster_scoped() {
            String::new()
        } else {
            meta.namespace
        };
        Ok((namespace, meta.name))
    }
}

/// The line of a serde_norway error and its message without the
/// `at line L column C` parts, which `FILE:LINE:` already says.
fn split_error(error: &serde_norway::Error) -> (Option<usize>, String) {
    let line = error.location().map(|l| l.line());
    (line, tidy(&strip_positions(&error.to_string())))
}

fn strip_positions(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 4..];
        match position_len(after) {
            Some(len) => rest = &after[len..],
            None => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Length of a leading `line N column M` or `position N`, if any.
fn position_len(s: &str) -> Option<usize> {
    fn number(s: &str) -> usize {
        s.bytes().take_while(u8::is_ascii_digit).count()
    }
    if let Some(r) = s.strip_prefix("line ") {
        let n = number(r);
        let r2 = r[n..].strip_prefix(" column ")?;
        let m = number(r2);
        (n > 0 && m > 0).then(|| "line ".len() + n + " column ".len() + m)
    } else if let Some(r) = s.strip_prefix("position ") {
        let n = number(r);
        (n > 0).then(|| "position ".len() + n)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        load_str("t.yaml", text).unwrap_err().to_string()
    }

    const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: lb
spec:
  gatewayClassName: switchyard
  listeners:
  - name: a
    port: 80
    protocol: TCP
";

    #[test]
    fn strip_positions_keeps_the_rest_of_the_message() {
        assert_eq!(
            strip_positions("did not find expected key at line 3 column 1, while parsing a block mapping at line 1 column 1"),
            "did not find expected key, while parsing a block mapping"
        );
        assert_eq!(strip_positions("look at this"), "look at this");
        assert_eq!(strip_positions("x at position 12"), "x");
    }

    #[test]
    fn broken_third_document_points_at_its_line_in_the_file() {
        let text = format!(
            "{GATEWAY}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: lb\n---\n# third\napiVersion: v1\nkind: Service\nmetadata:\n  name: x\n    namespace: lb\n"
        );
        // Line 22 is the over-indented `namespace:`.
        let line_of_bad = text.lines().position(|l| l == "    namespace: lb").unwrap() + 1;
        let e = load_str("t.yaml", &text).unwrap_err();
        assert_eq!(e.line(), Some(line_of_bad), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("t.yaml:{line_of_bad}: ")),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_listener_port_names_object_path_and_line() {
        let text = format!(
            "---\n# leading comment\n{}",
            GATEWAY.replace("port: 80", "port: 70000")
        );
        assert_eq!(
            err(&text),
            "t.yaml:12: Gateway \"lb/edge\": spec.listeners[0].port: invalid value 70000, expected 1..=65535"
        );
    }

    #[test]
    fn schema_errors_in_a_later_document_point_into_that_document() {
        let second = GATEWAY
            .replace("name: edge", "name: edge2")
            .replace("port: 80", "port: 0");
        let text = format!("{GATEWAY}---\n{second}");
        let line = text.lines().position(|l| l == "    port: 0").unwrap() + 1;
        assert_eq!(
            err(&text),
            format!("t.yaml:{line}: Gateway \"lb/edge2\": spec.listeners[0].port: invalid value 0, expected 1..=65535")
        );
    }

    #[test]
    fn duplicate_listener_names_are_rejected_at_the_second_listener() {
        let text = format!("{GATEWAY}  - name: a\n    port: 81\n    protocol: TCP\n");
        assert_eq!(
            err(&text),
            "t.yaml:12: Gateway \"lb/edge\": spec.listeners[1]: name: listener name \"a\" is used twice; it must be unique within the Gateway"
        );
    }

    #[test]
    fn listeners_sharing_port_protocol_and_hostname_are_rejected() {
        let text = format!("{GATEWAY}  - name: b\n    port: 80\n    protocol: TCP\n");
        assert!(
            err(&text).contains("spec.listeners[1]: port 80 with protocol TCP"),
            "{}",
            err(&text)
        );
    }

    #[test]
    fn hostname_on_a_tcp_listener_is_rejected() {
        let text = format!("{GATEWAY}    hostname: example.com\n");
        assert!(err(&text).contains("hostname: must not be specified for protocol TCP"));
    }

    #[test]
    fn gateway_without_listeners_is_rejected() {
        let text = GATEWAY.split("  listeners:").next().unwrap().to_owned() + "  listeners: []\n";
        assert_eq!(
            err(&text),
            "t.yaml:8: Gateway \"lb/edge\": spec.listeners: 0 items, at least 1 required"
        );
    }

    #[test]
    fn ip_address_value_must_be_an_ip() {
        let text = GATEWAY.replace(
            "  listeners:",
            "  addresses:\n  - value: 10.0.0.300\n  listeners:",
        );
        assert_eq!(
            err(&text),
            "t.yaml:9: Gateway \"lb/edge\": spec.addresses[0]: value: invalid value \"10.0.0.300\", expected an IPv4 or IPv6 address"
        );
    }

    const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata:
  name: r
  namespace: lb
spec:
  parentRefs:
  - name: edge
  rules:
  - backendRefs:
    - name: svc
      port: 80
      weight: WEIGHT
";

    #[test]
    fn weight_above_one_million_is_rejected() {
        assert_eq!(
            err(&ROUTE.replace("WEIGHT", "1000001")),
            "t.yaml:13: TCPRoute \"lb/r\": spec.rules[0].backendRefs[0].weight: invalid value 1000001, expected 0..=1000000"
        );
        assert!(load_str("t.yaml", &ROUTE.replace("WEIGHT", "1000000")).is_ok());
        assert!(err(&ROUTE.replace("WEIGHT", "-1")).contains("invalid value -1"));
    }

    #[test]
    fn service_backend_ref_without_port_is_rejected() {
        let text = ROUTE.replace("      port: 80\n", "");
        assert_eq!(
            err(&text.replace("WEIGHT", "1")),
            "t.yaml:11: TCPRoute \"lb/r\": spec.rules[0].backendRefs[0]: port: required for a Service reference (backendRef \"svc\")"
        );
    }

    #[test]
    fn more_than_sixteen_backend_refs_are_rejected() {
        let mut text = ROUTE.replace("WEIGHT", "1");
        for i in 0..16 {
            text.push_str(&format!("    - name: s{i}\n      port: 80\n"));
        }
        assert!(
            err(&text).contains("spec.rules[0].backendRefs: more than 16 items"),
            "{}",
            err(&text)
        );
    }

    #[test]
    fn v1_route_allows_one_rule_and_v1alpha2_sixteen() {
        let two_rules =
            ROUTE.replace("WEIGHT", "1") + "  - backendRefs:\n    - name: other\n      port: 81\n";
        assert!(
            err(&two_rules).contains("spec.rules: more than 1 items"),
            "{}",
            err(&two_rules)
        );
        let alpha = two_rules.replace("/v1\n", "/v1alpha2\n");
        let loaded = load_str("t.yaml", &alpha).unwrap();
        assert_eq!(loaded.routes[0].spec.rules.len(), 2);
        assert_eq!(
            loaded.routes[0].api_version,
            "gateway.networking.k8s.io/v1alpha2"
        );
    }

    #[test]
    fn missing_names_are_rejected() {
        let text = ROUTE
            .replace("WEIGHT", "1")
            .replace("    - name: svc\n", "    - port: 80\n")
            .replace("      port: 80\n", "");
        assert!(
            err(&text).contains("spec.rules[0].backendRefs[0]: missing field `name`"),
            "{}",
            err(&text)
        );
        let unnamed = ROUTE.replace("WEIGHT", "1").replace("  name: r\n", "");
        assert_eq!(
            err(&unnamed),
            "t.yaml:4: TCPRoute (unnamed): metadata: missing field `name`"
        );
        let empty = ROUTE
            .replace("WEIGHT", "1")
            .replace("  name: r\n", "  name: \"\"\n");
        assert!(
            err(&empty).contains("metadata.name: must not be empty"),
            "{}",
            err(&empty)
        );
    }

    #[test]
    fn document_without_kind_is_an_error_and_other_kinds_are_ignored() {
        assert_eq!(
            err("---\napiVersion: v1\nmetadata:\n  name: x\n"),
            "t.yaml:2: document has no kind; every object needs apiVersion and kind"
        );
        assert_eq!(
            err("kind: Service\n"),
            "t.yaml:1: document has no apiVersion; every object needs apiVersion and kind"
        );
        let loaded = load_str(
            "t.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec: {replicas: [weird]}\n---\n---\n# nothing\n",
        )
        .unwrap();
        assert_eq!(loaded.ignored.len(), 1);
        assert_eq!(loaded.ignored[0].kind, "Deployment");
        assert!(loaded.is_empty());
    }

    #[test]
    fn known_kind_with_unknown_version_is_an_error() {
        assert_eq!(
            err(&ROUTE.replace("WEIGHT", "1").replace("/v1\n", "/v9\n")),
            "t.yaml:1: TCPRoute \"lb/r\": unsupported apiVersion \"gateway.networking.k8s.io/v9\", expected gateway.networking.k8s.io/v1 or v1alpha2"
        );
    }

    const POLICY: &str = "\
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata:
  name: big
  namespace: demo
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: edge}
  maglev:
    tableSize: SIZE
";

    fn policy(size: &str) -> String {
        POLICY.replace("SIZE", size)
    }

    #[test]
    fn traffic_policy_loads_with_its_targets_and_table_size() {
        let loaded = load_str("t.yaml", &policy("4093")).unwrap();
        let p = &loaded.traffic_policies[0];
        assert_eq!(p.metadata.key(), "demo/big");
        assert!(p.spec.target_refs[0].is_gateway());
        assert_eq!(p.spec.target_refs[0].section_name, None);
        assert_eq!(p.spec.maglev.as_ref().unwrap().table_size, Some(4093));
        assert!(!loaded.is_empty());
    }

    #[test]
    fn traffic_policy_settings_are_optional() {
        let bare = POLICY.split("  maglev:").next().unwrap();
        let loaded = load_str("t.yaml", bare).unwrap();
        assert_eq!(loaded.traffic_policies[0].spec.maglev, None);
        let empty = format!("{bare}  maglev: {{}}\n");
        let loaded = load_str("t.yaml", &empty).unwrap();
        assert_eq!(
            loaded.traffic_policies[0]
                .spec
                .maglev
                .as_ref()
                .unwrap()
                .table_size,
            None
        );
    }

    #[test]
    fn table_size_that_is_not_a_prime_is_rejected_at_its_line() {
        assert_eq!(
            err(&policy("65536")),
            "t.yaml:10: TrafficPolicy \"demo/big\": spec.maglev.tableSize: 65536 is not a prime"
        );
    }

    #[test]
    fn table_size_below_251_is_rejected_at_its_line() {
        assert_eq!(
            err(&policy("250")),
            "t.yaml:10: TrafficPolicy \"demo/big\": spec.maglev.tableSize: 250 is below the minimum 251"
        );
        assert!(err(&policy("-7")).contains("tableSize: -7 is below the minimum 251"));
        assert!(load_str("t.yaml", &policy("251")).is_ok());
    }

    #[test]
    fn table_size_above_1048573_is_rejected_at_its_line() {
        // 1048583 is the next prime.
        assert_eq!(
            err(&policy("1048583")),
            "t.yaml:10: TrafficPolicy \"demo/big\": spec.maglev.tableSize: 1048583 is above the maximum 1048573"
        );
        assert!(err(&policy("99999999999999999999999")).contains("tableSize: "));
        assert!(load_str("t.yaml", &policy("1048573")).is_ok());
    }

    #[test]
    fn table_size_must_be_an_integer() {
        for bad in ["\"4093\"", "4093.0", "[4093]"] {
            let e = err(&policy(bad));
            assert!(
                e.starts_with("t.yaml:10: TrafficPolicy \"demo/big\": spec.maglev.tableSize: "),
                "{e}"
            );
        }
    }

    #[test]
    fn table_size_bounds_are_primes() {
        use crate::maglev::is_prime;
        use crate::resources::{MAX_TABLE_SIZE, MIN_TABLE_SIZE};
        assert!(is_prime(MIN_TABLE_SIZE.into()) && is_prime(MAX_TABLE_SIZE.into()));
        assert!(is_prime(crate::snapshot::SLOT_TABLE_SIZE as u64));
    }

    #[test]
    fn traffic_policy_with_unknown_version_is_an_error() {
        assert_eq!(
            err(&policy("4093").replace("/v1alpha1", "/v1")),
            "t.yaml:1: TrafficPolicy \"demo/big\": unsupported apiVersion \"switchyard.io/v1\", expected switchyard.io/v1alpha1"
        );
    }

    #[test]
    fn traffic_policy_needs_one_to_sixteen_unique_target_refs() {
        let none = policy("4093").replace(
            "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: edge}\n",
            "  targetRefs: []\n",
        );
        assert!(
            err(&none).contains("spec.targetRefs: 0 items, at least 1 required"),
            "{}",
            err(&none)
        );
        let target = "  - {group: gateway.networking.k8s.io, kind: Gateway, name: edge}\n";
        let twice = policy("4093").replace(target, &target.repeat(2));
        assert!(
            err(&twice).contains("spec.targetRefs[1]: targetRefs must be unique"),
            "{}",
            err(&twice)
        );
        let many: String = (0..17)
            .map(|i| {
                format!("  - {{group: gateway.networking.k8s.io, kind: Gateway, name: g{i}}}\n")
            })
            .collect();
        let seventeen = policy("4093").replace(target, &many);
        assert!(
            err(&seventeen).contains("spec.targetRefs: more than 16 items"),
            "{}",
            err(&seventeen)
        );
        let sixteen = policy("4093").replace(
            target,
            &many[..many.len() - many.lines().last().unwrap().len() - 1],
        );
        assert!(load_str("t.yaml", &sixteen).is_ok());
    }

    #[test]
    fn scalar_document_is_an_error() {
        assert!(err("just text\n").starts_with("t.yaml:1: invalid type: string \"just text\""));
    }

    #[test]
    fn duplicate_objects_are_rejected() {
        let route = ROUTE.replace("WEIGHT", "1");
        let text = format!("{route}---\n{route}");
        assert_eq!(
            err(&text),
            "t.yaml:15: TCPRoute \"lb/r\": defined twice, first at line 1"
        );
        // Same name, different namespace or kind: distinct objects.
        let other_ns = route.replace("namespace: lb", "namespace: other");
        assert!(load_str("t.yaml", &format!("{route}---\n{other_ns}")).is_ok());
        let udp = route.replace("TCPRoute", "UDPRoute");
        assert!(load_str("t.yaml", &format!("{route}---\n{udp}")).is_ok());
    }

    #[test]
    fn namespace_defaults_to_default() {
        let loaded = load_str(
            "t.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n",
        )
        .unwrap();
        assert_eq!(loaded.services[0].metadata.namespace, "default");
        assert_eq!(loaded.services[0].spec.ports[0].protocol, "TCP");
        assert_eq!(loaded.services[0].spec.ports[0].numeric_target(), Some(80));
    }

    #[test]
    fn endpoint_slice_addresses_must_match_address_type() {
        let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n  labels:\n    kubernetes.io/service-name: svc\naddressType: IPv4\nendpoints:\n- addresses: [\"fe80::1\"]\n";
        assert_eq!(
            err(text),
            "t.yaml:1: EndpointSlice \"default/s\": endpoints[0].addresses[0]: invalid value \"fe80::1\", expected an IPv4 address"
        );
    }

    #[test]
    fn bad_creation_timestamp_is_rejected_at_its_line() {
        let text = ROUTE.replace("WEIGHT", "1").replace(
            "  namespace: lb\n",
            "  namespace: lb\n  creationTimestamp: last tuesday\n",
        );
        assert!(err(&text).starts_with("t.yaml:6: TCPRoute \"lb/r\": metadata.creationTimestamp: invalid value \"last tuesday\""), "{}", err(&text));
    }

    #[test]
    fn read_error_names_the_file_and_has_the_os_error_as_its_source() {
        let e = load_file("/nonexistent/switchyard.yaml").unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent/switchyard.yaml: cannot read");
        let source = std::error::Error::source(&e).expect("the I/O error");
        assert!(source.to_string().contains("os error 2"), "{source}");
        assert_eq!(e.line(), None);
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing_at_the_line_that_crosses_the_limit() {
        // 100k levels once took over a minute to refuse.
        let deep = format!("{}1{}\n", "{a: ".repeat(100_000), "}".repeat(100_000));
        let text = format!("{GATEWAY}---\n{deep}");
        let line = GATEWAY.lines().count() + 2;
        let e = load_str("t.yaml", &text).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "t.yaml:{line}: nested deeper than 100 levels (indented blocks and [ {{ brackets \
                 count alike); no Kubernetes object needs that many"
            )
        );
        let block: String = (0..=MAX_DEPTH)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(
            load_str("t.yaml", &block).unwrap_err().line(),
            Some(MAX_DEPTH + 1)
        );
    }

    #[test]
    fn a_fifo_or_a_device_as_the_config_is_refused_without_blocking() {
        let e = load_file("/dev/zero").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: a character device, not a regular file; a config must be a regular file"
        );
        assert_eq!(e.line(), None);
    }

    #[test]
    fn kinds_switchyard_ignores_never_fail_the_file_whatever_they_hold() {
        let odd = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
  annotations: {n: !!int \"abc\"}
spec:
  replicas: 1e40
  template: !custom {a: !!binary AAAA}
  x: !!int \"not a number\"
---
apiVersion: example.com/v1
kind: Whatever
metadata: [odd]
spec: !!float \"x\"
";
        let text = format!("{odd}---\n{GATEWAY}");
        let loaded = load_str("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<&str> = loaded.ignored.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(kinds, ["Deployment", "Whatever"]);
        assert_eq!(loaded.ignored[0].name.as_deref(), Some("d"));
        assert_eq!(loaded.gateways.len(), 1);
    }

    #[test]
    fn merge_keys_apply_in_switchyard_objects() {
        let text = "\
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata:
  name: r
  namespace: lb
spec:
  parentRefs:
  - &edge {name: edge, sectionName: a}
  rules:
  - backendRefs:
    - &svc {name: svc, port: 80, weight: 3}
    - <<: *svc
      name: other
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata:
  <<: {name: r2, namespace: lb}
spec:
  parentRefs:
  - <<: {name: edge, sectionName: a}
  rules:
  - backendRefs:
    - <<: {name: svc, port: 70000}
";
        let e = load_str("t.yaml", text).unwrap_err();
        // A merged document is read from a merged copy: the error names
        // the document's line and the path in it.
        assert_eq!(
            e.to_string(),
            "t.yaml:15: TCPRoute \"lb/r2\": spec.rules[0].backendRefs[0].port: invalid value 70000, expected 1..=65535"
        );
        let loaded = load_str("t.yaml", text.split("---").next().unwrap()).unwrap();
        let refs = &loaded.routes[0].spec.rules[0].backend_refs;
        assert_eq!(
            refs.iter()
                .map(|b| (b.name.as_str(), b.port, b.weight))
                .collect::<Vec<_>>(),
            [("svc", Some(80), 3), ("other", Some(80), 3)]
        );
        let fixed = text.replace("70000", "80");
        let loaded = load_str("t.yaml", &fixed).unwrap();
        assert_eq!(loaded.routes[1].metadata.key(), "lb/r2");
        assert_eq!(loaded.routes[1].spec.parent_refs[0].name, "edge");
    }

    #[test]
    fn quoted_values_are_cut_to_an_excerpt_with_their_length() {
        let long = "X".repeat(5_000_000);
        let text = GATEWAY.replace(
            "    protocol: TCP\n",
            &format!("    protocol: TCP\n    allowedRoutes: {{namespaces: {{from: {long}}}}}\n"),
        );
        let e = err(&text);
        assert_eq!(
            e,
            format!(
                "t.yaml:12: Gateway \"lb/edge\": spec.listeners[0].allowedRoutes.namespaces.from: unknown variant `{}…` (5000000 characters), expected one of `All`, `Same`, `Selector`",
                "X".repeat(64)
            )
        );
        let version = ROUTE.replace("/v1\n", &format!("/v1{long}\n"));
        assert!(
            err(&version).contains(&format!(
                "\"gateway.networking.k8s.io/v1{}…\" (5000028 characters)",
                "X".repeat(36)
            )),
            "{}",
            &err(&version)[..200]
        );
    }

    #[test]
    fn names_are_held_to_the_api_servers_rules_and_never_shown_raw() {
        let escape = GATEWAY.replace("name: edge", "name: \"edge\\e]0;owned\\a\"");
        assert_eq!(
            err(&escape),
            "t.yaml:4: Gateway \"lb/edge\\u{1b}]0;owned\\u{7}\": metadata.name: invalid value \"edge\\u{1b}]0;owned\\u{7}\": a name is lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (RFC 1123 subdomain)"
        );
        for bad in ["Edge", "edge_1", "-edge", "edge.", "a..b"] {
            let e = err(&GATEWAY.replace("name: edge", &format!("name: \"{bad}\"")));
            assert!(e.contains("metadata.name: invalid value"), "{e}");
        }
        assert!(load_str("t.yaml", &GATEWAY.replace("name: edge", "name: edge.v2-1")).is_ok());
        let namespace = GATEWAY.replace("namespace: lb", "namespace: lb.two");
        assert!(
            err(&namespace).contains(
                "metadata.namespace: invalid value \"lb.two\": a namespace is at most 63"
            ),
            "{}",
            err(&namespace)
        );
        let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: 1st\nspec:\n  ports:\n  - port: 80\n";
        assert!(err(service).starts_with("t.yaml:1: Service \"default/1st\": metadata.name: invalid value \"1st\": a Service name"), "{}", err(service));
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a.b\n";
        assert!(
            err(ns).contains("a Namespace name is at most 63"),
            "{}",
            err(ns)
        );
    }

    #[test]
    fn reference_namespaces_kinds_and_groups_follow_the_crd_patterns() {
        let route = ROUTE.replace("WEIGHT", "1");
        let with = |field: &str| {
            route.replace(
                "      port: 80\n",
                &format!("      port: 80\n      {field}\n"),
            )
        };
        let e = err(&with("namespace: \"a\\e[2J\""));
        assert_eq!(
            e,
            "t.yaml:13: TCPRoute \"lb/r\": spec.rules[0].backendRefs[0].namespace: invalid value \"a\\u{1b}[2J\": a namespace is at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit (RFC 1123 label)"
        );
        assert!(err(&with("kind: \"Serv ice\""))
            .contains("backendRefs[0].kind: invalid value \"Serv ice\": a kind is"));
        assert!(err(&with("group: Apps"))
            .contains("backendRefs[0].group: invalid value \"Apps\": a group is"));
        assert!(load_str("t.yaml", &with("group: \"\"")).is_ok());
        assert!(load_str("t.yaml", &with("namespace: other")).is_ok());
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let deep = "[".repeat(10_000);
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        for text in [
            "",
            "---",
            "\u{0}",
            "- a\n- b\n",
            "apiVersion: 5\nkind: []\n",
            "apiVersion: v1\nkind: Service\n",
            "apiVersion: v1\nkind: Service\nmetadata: 7\n",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: [a]\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1.5}]}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999999999999999999999}]}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1, targetPort: -3}]}\n",
            "apiVersion: v1\nkind: Service\nkind: Service\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, name: t}\n",
            "*unknown\n",
            "a: !!binary AAAA\n",
            &deep,
            laughs,
        ] {
            let _ = load_str("t.yaml", text);
        }
    }

    const AFFINITY: &str = "\
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata:
  name: sticky
  namespace: demo
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: UDPRoute, name: echo-udp}
  sessionAffinity:
    type: ClientIP
    clientIP:
      timeoutSeconds: SECS
";

    #[test]
    fn session_affinity_loads_with_its_timeout_and_defaults_to_10800() {
        let loaded = load_str("t.yaml", &AFFINITY.replace("SECS", "60")).unwrap();
        let a = loaded.traffic_policies[0]
            .spec
            .session_affinity
            .clone()
            .unwrap();
        assert_eq!(a.client_ip_timeout(), Some(60));
        let bare = AFFINITY.split("    clientIP:").next().unwrap();
        let loaded = load_str("t.yaml", bare).unwrap();
        let a = loaded.traffic_policies[0]
            .spec
            .session_affinity
            .clone()
            .unwrap();
        assert_eq!(a.client_ip_timeout(), Some(10_800));
    }

    #[test]
    fn session_affinity_timeout_outside_1_to_86400_is_rejected_at_its_line() {
        for (secs, why) in [
            ("0", "0 is below the minimum 1"),
            ("86401", "86401 is above the maximum 86400"),
        ] {
            let e = err(&AFFINITY.replace("SECS", secs));
            assert!(
                e.starts_with("t.yaml:12: TrafficPolicy \"demo/sticky\""),
                "{e}"
            );
            assert!(e.contains("timeoutSeconds"), "{e}");
            assert!(e.contains(why), "{e}");
        }
        assert!(load_str("t.yaml", &AFFINITY.replace("SECS", "86400")).is_ok());
    }

    #[test]
    fn service_session_affinity_config_is_parsed_and_bounded() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: demo}\n\
                   spec:\n  sessionAffinity: ClientIP\n  \
                   sessionAffinityConfig: {clientIP: {timeoutSeconds: SECS}}\n";
        let loaded = load_str("t.yaml", &svc.replace("SECS", "120")).unwrap();
        assert_eq!(loaded.services[0].spec.client_ip_affinity(), Some(120));
        let e = err(&svc.replace("SECS", "100000"));
        assert!(e.contains("100000 is above the maximum 86400"), "{e}");
    }
}
