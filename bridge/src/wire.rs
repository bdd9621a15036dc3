//! The contract's types, independent of the format: what an envelope holds, and the
//! conversions from and to the domain's types, written by hand.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use flext_domain::{CorrelationId, Error, ErrorCode, FieldViolation as DomainViolation, Position};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// The contract's major version: a reader refuses another major version.
pub const CONTRACT_MAJOR: u32 = 1;
/// The contract's minor version: later minors only add fields, which readers ignore.
pub const CONTRACT_MINOR: u32 = 0;
/// The largest envelope a decoder accepts by default (8 MiB; see
/// [`DecodeLimits`](crate::DecodeLimits) for another limit).
pub const MAX_ENVELOPE_BYTES: usize = crate::DecodeLimits::DEFAULT.max_bytes;
/// How deep values may nest.
pub const MAX_DEPTH: usize = 64;

/// One result handed to another language: a value or an error, with metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The contract's major version ([`CONTRACT_MAJOR`] when written here).
    pub contract_major: u32,
    /// The contract's minor version.
    pub contract_minor: u32,
    /// The value or the error.
    pub outcome: Outcome,
    /// String metadata: correlation id, positions (as decimal strings), ...
    pub metadata: BTreeMap<String, String>,
}

/// An envelope's value or error.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success.
    Ok(Payload),
    /// Failure.
    Error(Status),
}

/// A successful result's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Bytes in a declared encoding (a media type such as `application/json`).
    Bytes {
        /// The media type of `data`.
        encoding: String,
        /// The encoded value.
        data: Vec<u8>,
    },
    /// A nested typed value, encoded in the envelope's own format.
    Value(Value),
}

/// A nested value: JSON's values plus exact 64-bit integers and bytes.
///
/// Integers are [`Value::Int`] whenever they fit an `i64`; [`Value::UInt`] holds only
/// those above `i64::MAX`, so each integer has one form and round trips compare equal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A map with string keys.
    Map(BTreeMap<String, Value>),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or(Value::UInt(v), Value::Int)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl Value {
    /// From a JSON value (numbers become `Int`, `UInt` or `Float`).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Value::Int(i),
                (None, Some(u)) => Value::UInt(u),
                _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// To a JSON value, as the descriptors' JSON Schema spells it: bytes become a standard
    /// base64 string (RFC 4648, padded); a non-finite float, null.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::UInt(u) => serde_json::Value::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Bytes(b) => serde_json::Value::String(BASE64_STANDARD.encode(b)),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Any serializable value (through its JSON form).
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
        serde_json::to_value(value)
            .map(|v| Value::from_json(&v))
            .map_err(|e| {
                Error::invalid_argument(
                    "UNENCODABLE_VALUE",
                    format!("the value cannot be encoded: {e}"),
                )
            })
    }

    /// Into a deserializable type, read from the value itself (bytes stay bytes: a
    /// `Vec<u8>` or `serde_bytes` field takes them); a mismatch is an `InvalidArgument`
    /// error saying what did not fit.
    pub fn deserialize_into<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(self.clone()).map_err(|e| {
            Error::invalid_argument(
                "VALUE_MISMATCH",
                format!("the value does not fit the type: {e}"),
            )
        })
    }

    /// How deep the value nests (a scalar is 1).
    pub fn depth(&self) -> usize {
        match self {
            Value::List(l) => 1 + l.iter().map(Value::depth).max().unwrap_or(0),
            Value::Map(m) => 1 + m.values().map(Value::depth).max().unwrap_or(0),
            _ => 1,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value (nil, bool, integer, float, string, bytes, list or map)")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Capped: a hostile length prefix must not reserve memory it does not back.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1_024));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.insert(k, v);
        }
        Ok(Value::Map(out))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// An error on the wire, aligned with `google.rpc.Status` (numeric code, message,
/// details) plus reason, domain, field violations and correlation id. Never a stack trace,
/// a source chain or a Rust type name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    /// The `google.rpc.Code` number.
    pub code: i32,
    /// The human-readable message.
    pub message: String,
    /// Structured details (sensitive keys redacted by the domain's `Error`).
    pub details: BTreeMap<String, Value>,
    /// The machine-readable reason.
    pub reason: String,
    /// Who produced the error (a service or library name).
    pub domain: String,
    /// Field violations.
    pub field_violations: Vec<FieldViolation>,
    /// The correlation id, empty when none.
    pub correlation_id: String,
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldViolation {
    /// The field's path.
    pub field: String,
    /// The `google.rpc.Code` number.
    pub code: i32,
    /// The machine-readable reason.
    pub reason: String,
    /// The description.
    pub description: String,
}

impl Status {
    /// The wire form of `error`, produced by `domain`.
    pub fn from_error(error: &Error, domain: &str) -> Status {
        Status {
            code: error.code().as_i32(),
            message: error.message().to_owned(),
            details: error
                .details()
                .iter()
                .map(|(k, v)| (k.clone(), Value::from_json(v)))
                .collect(),
            reason: error.reason().to_owned(),
            domain: domain.to_owned(),
            field_violations: error
                .field_violations()
                .iter()
                .map(|v| FieldViolation {
                    field: v.field.clone(),
                    code: v.code.as_i32(),
                    reason: v.reason.to_string(),
                    description: v.description.clone(),
                })
                .collect(),
            correlation_id: error
                .correlation_id()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        }
    }

    /// Back to the domain's `Error`. An unknown code reads as `Unknown`; a correlation id
    /// that is not a UUID is kept as the detail `correlation_id`. Sensitive detail keys
    /// are redacted again on the way in.
    pub fn to_error(&self) -> Error {
        let code = ErrorCode::from_i32(self.code).unwrap_or(ErrorCode::Unknown);
        let mut e = Error::new(code, self.reason.clone(), self.message.clone());
        for (k, v) in &self.details {
            e = e.with_detail(k.clone(), v.to_json());
        }
        let violations = self.field_violations.iter().map(|v| {
            DomainViolation::new(
                v.field.clone(),
                ErrorCode::from_i32(v.code).unwrap_or(ErrorCode::Unknown),
                v.reason.clone(),
                v.description.clone(),
            )
        });
        e = e.with_field_violations(violations);
        if !self.correlation_id.is_empty() {
            match CorrelationId::parse(&self.correlation_id) {
                Ok(id) => e = e.with_correlation_id(id),
                Err(_) => e = e.with_detail("correlation_id", self.correlation_id.clone()),
            }
        }
        e
    }
}

impl Envelope {
    /// A success carrying `value`, written at the current contract version.
    pub fn ok(payload: Payload) -> Envelope {
        Envelope {
            contract_major: CONTRACT_MAJOR,
            contract_minor: CONTRACT_MINOR,
            outcome: Outcome::Ok(payload),
            metadata: BTreeMap::new(),
        }
    }

    /// A success carrying a nested value.
    pub fn ok_value(value: Value) -> Envelope {
        Envelope::ok(Payload::Value(value))
    }

    /// A success carrying bytes in `encoding`.
    pub fn ok_bytes(encoding: impl Into<String>, data: impl Into<Vec<u8>>) -> Envelope {
        Envelope::ok(Payload::Bytes {
            encoding: encoding.into(),
            data: data.into(),
        })
    }

    /// A failure; the error's correlation id also goes to the metadata.
    pub fn error(error: &Error, domain: &str) -> Envelope {
        let status = Status::from_error(error, domain);
        let mut e = Envelope {
            contract_major: CONTRACT_MAJOR,
            contract_minor: CONTRACT_MINOR,
            outcome: Outcome::Error(status),
            metadata: BTreeMap::new(),
        };
        if let Some(c) = error.correlation_id() {
            e.metadata.insert("correlation_id".into(), c.to_string());
        }
        e
    }

    /// The envelope of a handler's result: the value as a nested value, or the error.
    pub fn from_result<T: serde::Serialize>(result: &Result<T, Error>, domain: &str) -> Envelope {
        match result {
            Ok(v) => match Value::from_serialize(v) {
                Ok(v) => Envelope::ok_value(v),
                Err(e) => Envelope::error(&e, domain),
            },
            Err(e) => Envelope::error(e, domain),
        }
    }

    /// A stored event as a success carrying its payload as stored (bytes in `encoding`,
    /// the store codec's media type: `application/json` for the default JSON codec), with
    /// metadata `event_id`, `event_type`, `schema_version`, `stream_id`, `stream_version`,
    /// `position`, `recorded_at` (RFC 3339) and, when the event has them,
    /// `correlation_id` and `causation_id`: what a relay publishes to services in other
    /// languages.
    pub fn of_event(event: &flext_domain::RecordedEvent, encoding: &str) -> Envelope {
        let mut e = Envelope::ok_bytes(encoding, event.payload.to_vec())
            .with_metadata("event_id", event.event_id.to_string())
            .with_metadata("event_type", event.event_type.clone())
            .with_metadata("schema_version", event.schema_version.to_string())
            .with_metadata("stream_id", event.stream_id.as_str())
            .with_metadata("stream_version", event.stream_version.0.to_string())
            .with_metadata("recorded_at", event.recorded_at.to_rfc3339())
            .with_position(event.position);
        if let Some(c) = event.metadata.correlation_id {
            e = e.with_metadata("correlation_id", c.to_string());
        }
        if let Some(c) = event.metadata.causation_id {
            e = e.with_metadata("causation_id", c.to_string());
        }
        e
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds the global position a reader must wait for (read-your-writes), as the
    /// decimal string that every language reads exactly.
    #[must_use]
    pub fn with_position(self, position: Position) -> Self {
        self.with_metadata("position", position.get().to_string())
    }

    /// Whether this reader can read the envelope: the same major version. A newer major
    /// is a `FailedPrecondition` error with reason `UNSUPPORTED_CONTRACT` saying which
    /// versions this reader reads.
    pub fn check_contract(&self) -> Result<(), Error> {
        check_contract(self.contract_major, self.contract_minor)
    }

    /// Back to a `Result`: the nested value decoded into `T`, or the error.
    pub fn into_result<T: serde::de::DeserializeOwned>(self) -> Result<T, Error> {
        match self.outcome {
            Outcome::Ok(Payload::Value(v)) => v.deserialize_into(),
            Outcome::Ok(Payload::Bytes { encoding, data }) if encoding == "application/json" => {
                serde_json::from_slice(&data).map_err(|e| {
                    Error::invalid_argument(
                        "VALUE_MISMATCH",
                        format!("the JSON value does not fit the type: {e}"),
                    )
                })
            }
            Outcome::Ok(Payload::Bytes { encoding, .. }) => Err(Error::invalid_argument(
                "UNSUPPORTED_ENCODING",
                format!("a payload in {encoding:?} cannot be decoded here"),
            )),
            Outcome::Error(status) => Err(status.to_error()),
        }
    }
}

/// See [`Envelope::check_contract`].
pub(crate) fn check_contract(major: u32, minor: u32) -> Result<(), Error> {
    if major == CONTRACT_MAJOR {
        return Ok(());
    }
    Err(Error::failed_precondition(
        "UNSUPPORTED_CONTRACT",
        format!(
            "the envelope is contract version {major}.{minor}; this reader reads {CONTRACT_MAJOR}.x"
        ),
    )
    .with_detail("contract_major", major)
    .with_detail("supported_major", CONTRACT_MAJOR))
}

#[cfg(any(feature = "msgpack", feature = "protobuf"))]
/// The error of input that is not an envelope, naming the format and the problem.
pub(crate) fn malformed(format: &str, problem: impl fmt::Display) -> Error {
    Error::invalid_argument(
        "MALFORMED_ENVELOPE",
        format!("the {format} bytes are not a flext envelope: {problem}"),
    )
    .with_detail("format", format)
}

#[cfg(any(feature = "msgpack", feature = "protobuf"))]
/// Checks the nesting of a decoded envelope's values.
pub(crate) fn check_depth(format: &str, envelope: &Envelope) -> Result<(), Error> {
    let deepest = match &envelope.outcome {
        Outcome::Ok(Payload::Value(v)) => v.depth(),
        Outcome::Error(s) => s.details.values().map(Value::depth).max().unwrap_or(0) + 1,
        Outcome::Ok(Payload::Bytes { .. }) => 0,
    };
    if deepest > MAX_DEPTH {
        return Err(malformed(
            format,
            format_args!("values nest deeper than {MAX_DEPTH}"),
        ));
    }
    Ok(())
}
